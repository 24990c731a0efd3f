// scenes-eval's scoring on hand-made answers (tools/scenes/metrics.h).
#include <gtest/gtest.h>

#include <array>
#include <vector>

#include "tools/scenes/metrics.h"

namespace md::scenes {
namespace {

Shape MakeShape(ShapeKind kind, int x, int y, int width, int height) {
  Shape s;
  s.kind = kind;
  s.box = {x, y, x + width, y + height};
  return s;
}

// 1000×500: a square at (100,100) 200 px, a triangle at (500,100) 200×173,
// a circle at (750,250) 200 px.
Scene ThreeShapes() {
  Scene scene;
  scene.width = 1000;
  scene.height = 500;
  scene.shapes = {MakeShape(ShapeKind::kSquare, 100, 100, 200, 200),
                  MakeShape(ShapeKind::kTriangle, 500, 100, 200, 173),
                  MakeShape(ShapeKind::kCircle, 750, 250, 200, 200)};
  return scene;
}

// A box given in pixels of ThreeShapes, as a detect answer gives it.
Box Fraction(double x0, double y0, double x1, double y1) {
  return {x0 / 1000, y0 / 500, x1 / 1000, y1 / 500};
}

Point FractionPoint(double x, double y) { return {x / 1000, y / 500}; }

const MetricLine& Line(const std::vector<MetricLine>& lines,
                       const std::string& name) {
  for (const MetricLine& line : lines) {
    if (line.name == name) return line;
  }
  ADD_FAILURE() << "no line " << name;
  return lines.front();
}

TEST(SceneMetricsTest, AnswersMatchExactlyButForSurroundingSpace) {
  EXPECT_TRUE(AnswerMatches(" 3", "3"));
  EXPECT_TRUE(AnswerMatches("a red circle\n", "a red circle"));
  EXPECT_FALSE(AnswerMatches("3.", "3"));
  EXPECT_FALSE(AnswerMatches("Red", "red"));
  EXPECT_FALSE(AnswerMatches("a red  circle", "a red circle"));
}

TEST(SceneMetricsTest, Iou) {
  EXPECT_DOUBLE_EQ(Iou({0, 0, 2, 2}, {0, 0, 2, 2}), 1.0);
  EXPECT_DOUBLE_EQ(Iou({0, 0, 2, 2}, {1, 0, 3, 2}), 2.0 / 6.0);
  EXPECT_DOUBLE_EQ(Iou({0, 0, 1, 1}, {2, 2, 3, 3}), 0.0);
  EXPECT_DOUBLE_EQ(Iou({0, 0, 0, 0}, {0, 0, 0, 0}), 0.0);
}

TEST(SceneMetricsTest, DetectionsWithAMissAndAFalsePositive) {
  const Scene scene = ThreeShapes();
  // Shapes 0 and 2 asked for: 0 found well, 2 missed (the box is off by
  // more than half), plus a box on nothing.
  const std::vector<Box> predicted = {
      Fraction(105, 95, 300, 305),    // shape 0, IoU ≈ 0.93
      Fraction(850, 350, 1000, 500),  // shape 2, IoU ≈ 0.19
      Fraction(0, 0, 50, 50),         // nothing
  };
  const DetectTally t = ScoreDetections(scene, {0, 2}, predicted);
  EXPECT_EQ(t.true_positives, 1);
  EXPECT_EQ(t.false_positives, 2);
  EXPECT_EQ(t.false_negatives, 1);
  EXPECT_DOUBLE_EQ(t.precision(), 1.0 / 3);
  EXPECT_DOUBLE_EQ(t.recall(), 0.5);
  EXPECT_DOUBLE_EQ(t.f1(), 0.4);
}

TEST(SceneMetricsTest, GreedyMatchingUsesEachBoxOnce) {
  const Scene scene = ThreeShapes();
  // Two boxes on shape 0: the better one matches, the other is a false
  // positive even though its IoU passes too.
  const DetectTally t = ScoreDetections(
      scene, {0}, {Fraction(110, 110, 300, 300), Fraction(100, 100, 300, 300)});
  EXPECT_EQ(t.true_positives, 1);
  EXPECT_EQ(t.false_positives, 1);
  EXPECT_EQ(t.false_negatives, 0);
  // A box matching a shape that was not asked for (square asked, box on the
  // circle) is wrong.
  const DetectTally wrong =
      ScoreDetections(scene, {0}, {Fraction(750, 250, 950, 450)});
  EXPECT_EQ(wrong.true_positives, 0);
  EXPECT_EQ(wrong.false_positives, 1);
  EXPECT_EQ(wrong.false_negatives, 1);
  // Nothing asked, nothing found: nothing counted.
  const DetectTally none = ScoreDetections(scene, {}, {});
  EXPECT_EQ(none.true_positives + none.false_positives + none.false_negatives,
            0);
  EXPECT_DOUBLE_EQ(none.f1(), 0);
}

TEST(SceneMetricsTest, PointsMustFallInTheShapeNotOnlyItsBox) {
  const Scene scene = ThreeShapes();
  // Triangle (shape 1): one point at its centroid, one in its box's
  // top-left corner (outside the triangle).
  const PointTally t = ScorePoints(
      scene, {1}, {FractionPoint(600, 215), FractionPoint(510, 110)});
  EXPECT_EQ(t.points, 2);
  EXPECT_EQ(t.inside, 1);
  EXPECT_EQ(t.targets, 1);
  EXPECT_EQ(t.reached, 1);
  // Circle (shape 2): its box's corner is outside the disc.
  const PointTally c = ScorePoints(scene, {2}, {FractionPoint(760, 260)});
  EXPECT_EQ(c.inside, 0);
  EXPECT_EQ(c.reached, 0);
  // Two targets, two points in one of them: half the shapes reached.
  const PointTally both = ScorePoints(
      scene, {0, 2}, {FractionPoint(150, 150), FractionPoint(250, 250)});
  EXPECT_EQ(both.inside, 2);
  EXPECT_EQ(both.reached, 1);
  EXPECT_EQ(both.targets, 2);
}

// Points by their place in the answer: the first two places alone, the
// third and later together; shapes beyond the points are missing.
TEST(SceneMetricsTest, PointPlacesSplitAnAnswerByItsOrder) {
  const Scene scene = ThreeShapes();
  const std::vector<int> square_and_circle = {0, 2};
  // First on the square, second on the background: the second went wrong.
  PointPlaceTally t =
      ScorePointPlaces(scene, square_and_circle,
                       {FractionPoint(150, 150), FractionPoint(450, 400)});
  EXPECT_EQ(t.points, (std::array<int, 3>{1, 1, 0}));
  EXPECT_EQ(t.inside, (std::array<int, 3>{1, 0, 0}));
  EXPECT_EQ(t.missing, 0);
  // One point for two shapes: one missing.
  const PointPlaceTally one =
      ScorePointPlaces(scene, square_and_circle, {FractionPoint(850, 350)});
  EXPECT_EQ(one.points, (std::array<int, 3>{1, 0, 0}));
  EXPECT_EQ(one.inside, (std::array<int, 3>{1, 0, 0}));
  EXPECT_EQ(one.missing, 1);
  // Four points: the third and fourth share the last place; the triangle
  // was not asked for.
  const PointPlaceTally four =
      ScorePointPlaces(scene, square_and_circle,
                       {FractionPoint(850, 350), FractionPoint(150, 150),
                        FractionPoint(600, 215), FractionPoint(850, 350)});
  EXPECT_EQ(four.points, (std::array<int, 3>{1, 1, 2}));
  EXPECT_EQ(four.inside, (std::array<int, 3>{1, 1, 1}));
  EXPECT_EQ(four.missing, 0);
  t += four;
  t += one;
  EXPECT_EQ(t.points, (std::array<int, 3>{3, 2, 2}));
  EXPECT_EQ(t.inside, (std::array<int, 3>{3, 1, 1}));
  EXPECT_EQ(t.missing, 1);
}

TEST(SceneMetricsTest, ReportMarksTargets) {
  EvalTally tally;
  tally.count = {10, 9};          // 90%: passes (>=)
  tally.colour = {10, 8};         // 80%: fails
  tally.caption_short = {4, 3};   // 75%: passes
  tally.caption_normal = {4, 2};  // 50%: fails
  tally.detect = {8, 1, 1};       // F1 0.889
  tally.point = {10, 9, 10, 7};   // 90% inside, recall 0.7
  const std::vector<MetricLine> lines = ReportLines(tally);
  EXPECT_TRUE(Line(lines, "count").pass);
  EXPECT_FALSE(Line(lines, "color").pass);
  EXPECT_FALSE(Line(lines, "shape").measured);  // nothing asked
  EXPECT_FALSE(Line(lines, "shape").pass);
  EXPECT_TRUE(Line(lines, "caption short").pass);
  EXPECT_FALSE(Line(lines, "caption normal").pass);
  EXPECT_NEAR(Line(lines, "detect F1").value, 8.0 / 9, 1e-9);
  EXPECT_TRUE(Line(lines, "detect F1").pass);
  EXPECT_FALSE(Line(lines, "detect precision").has_target);
  EXPECT_TRUE(Line(lines, "point inside").pass);
  EXPECT_FALSE(Line(lines, "point recall").pass);
  EXPECT_FALSE(AllTargetsMet(lines));
  EXPECT_TRUE(NamedTargetsMet(lines, {"count", "detect F1"}).ok());
  const absl::Status failing =
      NamedTargetsMet(lines, {"count", "color", "point recall"});
  EXPECT_EQ(failing.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(failing.message().find("color, point recall"), std::string::npos)
      << failing;
  EXPECT_EQ(NamedTargetsMet(lines, {"colour"}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(NamedTargetsMet(lines, {"detect precision"}).code(),
            absl::StatusCode::kInvalidArgument);  // shown, no target

  const std::string table = FormatReport(lines);
  EXPECT_NE(table.find("count"), std::string::npos);
  EXPECT_NE(table.find("90.0%"), std::string::npos);
  EXPECT_NE(table.find(">= 0.80"), std::string::npos);
  EXPECT_NE(table.find("FAIL"), std::string::npos);
  EXPECT_NE(table.find("targets NOT all met"), std::string::npos);

  // Values only, on one line; detect precision (no target) and shape
  // (nothing asked) left out.
  EXPECT_EQ(FormatValuesLine(lines),
            "count 90.0%, color 80.0%, caption short 75.0%, caption normal "
            "50.0%, detect F1 0.889, point inside 90.0%, point recall 0.700");

  const nlohmann::ordered_json json = ReportJson(tally, lines);
  EXPECT_EQ(json["all_pass"], false);
  EXPECT_EQ(json["metrics"]["count"]["pass"], true);
  EXPECT_DOUBLE_EQ(json["metrics"]["point inside"]["value"].get<double>(),
                   90.0);
  EXPECT_EQ(json["tallies"]["detect"]["false_negatives"], 1);
}

TEST(SceneMetricsTest, TalliesAdd) {
  EvalTally a, b;
  a.count = {2, 1};
  a.detect = {3, 1, 2};
  a.point = {4, 3, 4, 2};
  b.count = {1, 1};
  b.caption_normal = {2, 2};
  b.detect = {1, 0, 1};
  b.point = {1, 1, 2, 1};
  a += b;
  EXPECT_EQ(a.count.asked, 3);
  EXPECT_EQ(a.count.correct, 2);
  EXPECT_EQ(a.caption_normal.asked, 2);
  EXPECT_EQ(a.caption_normal.correct, 2);
  EXPECT_EQ(a.colour.asked, 0);
  EXPECT_EQ(a.detect.true_positives, 4);
  EXPECT_EQ(a.detect.false_negatives, 3);
  EXPECT_EQ(a.point.points, 5);
  EXPECT_EQ(a.point.reached, 3);
}

TEST(SceneMetricsTest, NormalizedBoxIsTheShapesBoxInImageFractions) {
  const Scene scene = ThreeShapes();
  const Box b = NormalizedBox(scene, scene.shapes[1]);
  EXPECT_DOUBLE_EQ(b.x_min, 0.5);
  EXPECT_DOUBLE_EQ(b.y_min, 0.2);
  EXPECT_DOUBLE_EQ(b.x_max, 0.7);
  EXPECT_DOUBLE_EQ(b.y_max, 273.0 / 500);
}

TEST(SceneMetricsTest, PerfectAnswersMeetEveryTarget) {
  EvalTally tally;
  tally.count = tally.colour = tally.shape = {5, 5};
  tally.caption_short = tally.caption_normal = {5, 5};
  tally.detect = {5, 0, 0};
  tally.point = {5, 5, 5, 5};
  const std::vector<MetricLine> lines = ReportLines(tally);
  EXPECT_TRUE(AllTargetsMet(lines));
  EXPECT_NE(FormatReport(lines).find("all targets met"), std::string::npos);
}

}  // namespace
}  // namespace md::scenes
