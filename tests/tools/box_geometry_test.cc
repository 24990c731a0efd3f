// The detect boxes' geometry diagnostic (tools/scenes/box_geometry.h) on
// hand-made answers.
#include "tools/scenes/box_geometry.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "tools/scenes/metrics.h"

namespace md::scenes {
namespace {

using T = BoxGeometryTally;

// A width×height scene with 200 px squares at (x, y) for each origin.
Scene Squares(int width, int height, std::vector<std::pair<int, int>> at) {
  Scene scene;
  scene.width = width;
  scene.height = height;
  for (const auto& [x, y] : at) {
    Shape s;
    s.kind = ShapeKind::kSquare;
    s.box = {x, y, x + 200, y + 200};
    scene.shapes.push_back(s);
  }
  return scene;
}

// The same box, its sides scaled about its centre.
Box Scaled(const Box& b, double sx, double sy) {
  const double cx = (b.x_min + b.x_max) / 2, cy = (b.y_min + b.y_max) / 2;
  const double hw = (b.x_max - b.x_min) * sx / 2,
               hh = (b.y_max - b.y_min) * sy / 2;
  return {cx - hw, cy - hh, cx + hw, cy + hh};
}

// As wide as tall in the image's fractions, of the same area.
Box SquareInFractions(const Box& b) {
  const double w = b.x_max - b.x_min, h = b.y_max - b.y_min;
  const double side = std::sqrt(w * h);
  return Scaled(b, side / w, side / h);
}

TEST(BoxGeometryTest, ExactBoxesFollowTheShapes) {
  const Scene wide = Squares(1000, 500, {{100, 100}, {600, 200}});
  const Scene tall = Squares(500, 1000, {{100, 100}});
  T tally = MeasureBoxGeometry(wide, {0, 1},
                               {NormalizedBox(wide, wide.shapes[1]),
                                NormalizedBox(wide, wide.shapes[0])});
  tally += MeasureBoxGeometry(tall, {0}, {NormalizedBox(tall, tall.shapes[0])});
  EXPECT_EQ(tally.pairs, 3);
  for (int axis : {T::kLong, T::kShort}) {
    EXPECT_NEAR(tally.MeanCentreError(axis), 0, 1e-12);
    EXPECT_NEAR(tally.ExtentRatio(axis), 1, 1e-12);
  }
  // The squares are 1:2 in the wide image's fractions, 2:1 in the tall's.
  EXPECT_NEAR(tally.AspectSlope(), 1, 1e-12);
}

// Boxes as wide as tall in the image's fractions, whatever the image: too
// long along the image's longer side, too short along its shorter, and an
// aspect slope of 0.
TEST(BoxGeometryTest, SquareBoxesIgnoreTheImagesAspect) {
  const Scene wide = Squares(1000, 500, {{100, 100}});
  const Scene tall = Squares(500, 1000, {{100, 100}});
  T tally = MeasureBoxGeometry(
      wide, {0}, {SquareInFractions(NormalizedBox(wide, wide.shapes[0]))});
  tally += MeasureBoxGeometry(
      tall, {0}, {SquareInFractions(NormalizedBox(tall, tall.shapes[0]))});
  EXPECT_EQ(tally.pairs, 2);
  EXPECT_NEAR(tally.ExtentRatio(T::kLong), std::sqrt(2.0), 1e-9);
  EXPECT_NEAR(tally.ExtentRatio(T::kShort), 1 / std::sqrt(2.0), 1e-9);
  EXPECT_NEAR(tally.AspectSlope(), 0, 1e-9);
  EXPECT_NEAR(tally.MeanCentreError(T::kLong), 0, 1e-12);
}

// A box half its width to the right in a wide image: off by half the
// extent along the long axis; in a tall image the same shift is along the
// short axis.
TEST(BoxGeometryTest, CentreErrorIsMeasuredAlongTheImagesAxes) {
  const Scene wide = Squares(1000, 500, {{100, 100}});
  Box shifted = NormalizedBox(wide, wide.shapes[0]);
  shifted.x_min += 0.1;
  shifted.x_max += 0.1;
  T tally = MeasureBoxGeometry(wide, {0}, {shifted});
  EXPECT_NEAR(tally.MeanCentreError(T::kLong), 0.5, 1e-12);
  EXPECT_NEAR(tally.MeanCentreError(T::kShort), 0, 1e-12);

  const Scene tall = Squares(500, 1000, {{100, 100}});
  Box right = NormalizedBox(tall, tall.shapes[0]);
  right.x_min += 0.2;
  right.x_max += 0.2;
  tally = MeasureBoxGeometry(tall, {0}, {right});
  EXPECT_NEAR(tally.MeanCentreError(T::kLong), 0, 1e-12);
  EXPECT_NEAR(tally.MeanCentreError(T::kShort), 0.5, 1e-12);
}

// Each box pairs with the shape it overlaps most, once; a box that overlaps
// no shape left, or has no area, or targets that are not asked about, are
// not paired.
TEST(BoxGeometryTest, PairsByOverlapAndSkipsTheRest) {
  const Scene wide = Squares(1000, 500, {{100, 100}, {600, 200}});
  const Box first = NormalizedBox(wide, wide.shapes[0]);
  const Box nowhere{0.9, 0.0, 0.95, 0.05};
  const Box flat{first.x_min, first.y_min, first.x_max, first.y_min};
  // Two boxes on the first shape: the closer one pairs, the other finds
  // only the first shape, already taken.
  const T tally = MeasureBoxGeometry(
      wide, {0}, {Scaled(first, 1.5, 1.5), first, nowhere, flat});
  EXPECT_EQ(tally.pairs, 1);
  EXPECT_NEAR(tally.ExtentRatio(T::kLong), 1, 1e-12);
  EXPECT_EQ(MeasureBoxGeometry(wide, {1}, {first}).pairs, 0);
  EXPECT_EQ(MeasureBoxGeometry(wide, {}, {first}).pairs, 0);
  EXPECT_EQ(MeasureBoxGeometry(wide, {0, 1}, {}).pairs, 0);
}

TEST(BoxGeometryTest, ReportsTextAndJson) {
  const T none;
  EXPECT_EQ(none.AspectSlope(), 0);
  EXPECT_EQ(none.ExtentRatio(T::kLong), 0);
  EXPECT_NE(FormatBoxGeometry(none).find("no answered box"), std::string::npos);

  const Scene wide = Squares(1000, 500, {{100, 100}});
  const Box shape = NormalizedBox(wide, wide.shapes[0]);
  // One aspect only: no slope to fit, reported as 0.
  EvalTally eval;
  eval.box_geometry = MeasureBoxGeometry(wide, {0}, {Scaled(shape, 1.5, 0.5)});
  EXPECT_EQ(eval.box_geometry.AspectSlope(), 0);
  const std::string line = FormatBoxGeometry(eval.box_geometry);
  EXPECT_NE(line.find("1 boxes paired"), std::string::npos) << line;
  EXPECT_NE(line.find("extent x1.50 / x0.50"), std::string::npos) << line;

  EvalTally sum;
  sum += eval;
  sum += eval;
  const nlohmann::ordered_json json =
      ReportJson(sum, ReportLines(sum))["box_geometry"];
  EXPECT_EQ(json["pairs"], 2);
  EXPECT_NEAR(json["extent_ratio_long"].get<double>(), 1.5, 1e-12);
  EXPECT_NEAR(json["extent_ratio_short"].get<double>(), 0.5, 1e-12);
  EXPECT_NEAR(json["centre_error_long"].get<double>(), 0, 1e-12);
  EXPECT_TRUE(json.contains("aspect_slope"));
}

}  // namespace
}  // namespace md::scenes
