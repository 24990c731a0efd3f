// The detect and point error kinds (tools/scenes/error_kinds.h) on
// hand-made answers: each wrong box and point lands in the one kind that
// describes it, and a right answer in none.
#include "tools/scenes/error_kinds.h"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "tools/scenes/metrics.h"

namespace md::scenes {
namespace {

// A 1000×500 scene: a 200 px circle at (100, 100), a 200 px square at
// (600, 200).
Scene CircleAndSquare() {
  Scene scene;
  scene.width = 1000;
  scene.height = 500;
  Shape circle;
  circle.kind = ShapeKind::kCircle;
  circle.box = {100, 100, 300, 300};
  Shape square;
  square.kind = ShapeKind::kSquare;
  square.box = {600, 200, 800, 400};
  scene.shapes = {circle, square};
  return scene;
}

Box Shifted(Box b, double dx) {
  b.x_min += dx;
  b.x_max += dx;
  return b;
}

TEST(ErrorKindsTest, RightAnswersAreNoError) {
  const Scene scene = CircleAndSquare();
  const DetectErrorKinds d =
      ClassifyDetectErrors(scene, {0, 1},
                           {NormalizedBox(scene, scene.shapes[1]),
                            NormalizedBox(scene, scene.shapes[0])});
  EXPECT_EQ(d.imprecise + d.duplicate + d.other_shape + d.on_nothing +
                d.missed_near + d.missed_far,
            0);
  // The circle's centre, and the square's corner (inside a square).
  const PointErrorKinds p =
      ClassifyPointErrors(scene, {0, 1}, {{0.2, 0.4}, {0.601, 0.401}});
  EXPECT_EQ(p.in_target_box + p.other_shape + p.background, 0);
}

// The circle's box 0.12 of the image (0.6 of its width) to the right: IoU
// 0.25, on the circle, which no box was paired with; and the circle missed
// with a box on it.
TEST(ErrorKindsTest, ABoxOnItsShapeBelowTheMatchIsImprecise) {
  const Scene scene = CircleAndSquare();
  const Box circle = NormalizedBox(scene, scene.shapes[0]);
  const DetectErrorKinds d =
      ClassifyDetectErrors(scene, {0}, {Shifted(circle, 0.12)});
  EXPECT_EQ(d.imprecise, 1);
  // Overlap 0.08 × 0.4 of two 0.2 × 0.4 boxes.
  EXPECT_NEAR(d.MeanImpreciseIou(), 0.032 / (0.16 - 0.032), 1e-12);
  EXPECT_EQ(d.missed_near, 1);
  EXPECT_EQ(d.duplicate + d.other_shape + d.on_nothing + d.missed_far, 0);
}

TEST(ErrorKindsTest, SecondBoxOnAFoundShapeIsADuplicate) {
  const Scene scene = CircleAndSquare();
  const Box circle = NormalizedBox(scene, scene.shapes[0]);
  const DetectErrorKinds d =
      ClassifyDetectErrors(scene, {0}, {circle, Shifted(circle, 0.12)});
  EXPECT_EQ(d.duplicate, 1);
  EXPECT_EQ(
      d.imprecise + d.other_shape + d.on_nothing + d.missed_near + d.missed_far,
      0);
}

// Asked for the circle, answered the square's box and a box on the
// background: one on another shape, one on nothing, the circle missed
// without a box on it.
TEST(ErrorKindsTest, BoxesOnAnotherShapeOrOnNothing) {
  const Scene scene = CircleAndSquare();
  const DetectErrorKinds d = ClassifyDetectErrors(
      scene, {0},
      {NormalizedBox(scene, scene.shapes[1]), Box{0.9, 0.0, 0.95, 0.1}});
  EXPECT_EQ(d.other_shape, 1);
  EXPECT_EQ(d.on_nothing, 1);
  EXPECT_EQ(d.missed_far, 1);
  EXPECT_EQ(d.imprecise + d.duplicate + d.missed_near, 0);
  EXPECT_EQ(d.MeanImpreciseIou(), 0);
}

// Asked for the circle: a point in its box's corner (outside the disc), one
// in the square, one on the background.
TEST(ErrorKindsTest, PointsOutsideByWhereTheyFall) {
  const Scene scene = CircleAndSquare();
  const PointErrorKinds p = ClassifyPointErrors(
      scene, {0}, {{0.105, 0.21}, {0.7, 0.6}, {0.5, 0.1}, {0.2, 0.4}});
  EXPECT_EQ(p.in_target_box, 1);
  EXPECT_EQ(p.other_shape, 1);
  EXPECT_EQ(p.background, 1);
}

TEST(ErrorKindsTest, AddsUpAndReports) {
  const Scene scene = CircleAndSquare();
  const Box circle = NormalizedBox(scene, scene.shapes[0]);
  EvalTally eval;
  eval.errors.detect =
      ClassifyDetectErrors(scene, {0}, {Shifted(circle, 0.12)});
  eval.errors.point = ClassifyPointErrors(scene, {0}, {{0.5, 0.1}});
  EvalTally sum;
  sum += eval;
  sum += eval;
  EXPECT_EQ(sum.errors.detect.imprecise, 2);
  EXPECT_NEAR(sum.errors.detect.MeanImpreciseIou(), 0.25, 1e-12);
  EXPECT_EQ(sum.errors.point.background, 2);
  const std::string line = FormatErrorKinds(sum.errors);
  EXPECT_NE(line.find("2 on their shape at IoU < 0.5 (mean 0.25)"),
            std::string::npos)
      << line;
  EXPECT_NE(line.find("2 on the background"), std::string::npos) << line;
  const nlohmann::ordered_json json =
      ReportJson(sum, ReportLines(sum))["error_kinds"];
  EXPECT_EQ(json["detect"]["imprecise"], 2);
  EXPECT_EQ(json["detect"]["missed_near"], 2);
  EXPECT_EQ(json["point"]["background"], 2);
}

}  // namespace
}  // namespace md::scenes
