// The scene generator against its specification (tools/scenes/scene.h) and
// the questions asked of a scene (tools/scenes/questions.h).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "tools/scenes/questions.h"
#include "tools/scenes/random.h"
#include "tools/scenes/scene.h"

namespace md::scenes {
namespace {

constexpr int kSeeds = 500;

Rgb PixelAt(const cv::Mat& bgr, int x, int y) {
  const cv::Vec3b px = bgr.at<cv::Vec3b>(y, x);
  return {px[2], px[1], px[0]};
}

bool BoxesApart(const PixelBox& a, const PixelBox& b) {
  return a.x_max < b.x_min || b.x_max < a.x_min || a.y_max < b.y_min ||
         b.y_max < a.y_min;
}

Shape MakeShape(ShapeKind kind, Colour colour, int x, int y, int side) {
  Shape s;
  s.kind = kind;
  s.colour = colour;
  s.box = {x, y, x + side, y + side};
  return s;
}

// A 600×400 scene with the given shapes (positions are the test's choice,
// not the generator's).
Scene HandMade(std::vector<Shape> shapes) {
  Scene scene;
  scene.width = 600;
  scene.height = 400;
  scene.shapes = std::move(shapes);
  return scene;
}

TEST(ScenePrngTest, IntegersCoverTheRangeAndStayInIt) {
  ScenePrng rng(7);
  std::set<int64_t> seen;
  for (int i = 0; i < 1000; ++i) {
    const int64_t v = rng.UniformInt(-2, 3);
    ASSERT_GE(v, -2);
    ASSERT_LE(v, 3);
    seen.insert(v);
  }
  EXPECT_EQ(seen.size(), 6u);
  for (int i = 0; i < 1000; ++i) {
    const double r = rng.UniformReal();
    ASSERT_GE(r, 0.0);
    ASSERT_LT(r, 1.0);
  }
}

TEST(ScenePrngTest, ScenesOfASetDifferFromNeighbouringSets) {
  EXPECT_NE(SceneSeed(1, 2), SceneSeed(2, 1));
  EXPECT_NE(SceneSeed(0, 0), SceneSeed(0, 1));
  EXPECT_EQ(SceneSeed(5, 9), SceneSeed(5, 9));
}

TEST(SceneTest, ASeedAlwaysGivesTheSameSceneAndImage) {
  for (uint64_t seed : {0ull, 1ull, 12345ull}) {
    const Scene a = GenerateScene(seed), b = GenerateScene(seed);
    EXPECT_EQ(SceneTruthJson(a, "x.png"), SceneTruthJson(b, "x.png"));
    const cv::Mat ia = RenderScene(a), ib = RenderScene(b);
    ASSERT_EQ(ia.size(), ib.size());
    EXPECT_EQ(cv::norm(ia, ib, cv::NORM_INF), 0);
  }
  EXPECT_NE(SceneTruthJson(GenerateScene(1), ""),
            SceneTruthJson(GenerateScene(2), ""));
}

// Pinned, so a change of the generator (or of how a platform runs it) that
// would silently change every data set fails here.
TEST(SceneTest, SeedOneIsPinned) {
  const Scene scene = GenerateScene(1);
  const nlohmann::ordered_json truth = SceneTruthJson(scene, "");
  SCOPED_TRACE(truth.dump());
  EXPECT_EQ(CaptionOf(scene),
            "a yellow triangle, a blue triangle and a green circle");
  EXPECT_EQ(scene.width, 324);
  EXPECT_EQ(scene.height, 487);
  EXPECT_EQ(scene.background, Background::kWhite);
  EXPECT_EQ(truth["shapes"][0]["box_px"],
            nlohmann::ordered_json::parse(
                R"({"x_min": 238, "y_min": 349, "x_max": 316, "y_max": 427})"));
}

void ExpectMeetsSpec(const Scene& scene) {
  SCOPED_TRACE(SceneTruthJson(scene, "").dump());
  ASSERT_GE(scene.width, kMinCanvasSide);
  ASSERT_LE(scene.width, kMaxCanvasSide);
  ASSERT_GE(scene.height, kMinCanvasSide);
  ASSERT_LE(scene.height, kMaxCanvasSide);
  ASSERT_GE(scene.shapes.size(), static_cast<size_t>(kMinShapes));
  ASSERT_LE(scene.shapes.size(), static_cast<size_t>(kMaxShapes));
  const double m = std::min(scene.width, scene.height);
  const cv::Mat image = RenderScene(scene);
  ASSERT_EQ(image.cols, scene.width);
  ASSERT_EQ(image.rows, scene.height);
  EXPECT_EQ(PixelAt(image, 0, 0), BackgroundRgb(scene.background));
  for (size_t i = 0; i < scene.shapes.size(); ++i) {
    const Shape& s = scene.shapes[i];
    EXPECT_GE(s.box.x_min, 0);
    EXPECT_GE(s.box.y_min, 0);
    EXPECT_LE(s.box.x_max, scene.width);
    EXPECT_LE(s.box.y_max, scene.height);
    for (int side : {s.box.width(), s.box.height()}) {
      EXPECT_GE(side, kMinShapeFraction * m);
      EXPECT_LE(side, kMaxShapeFraction * m);
    }
    if (s.kind == ShapeKind::kTriangle) {
      EXPECT_NEAR(s.box.height(), s.box.width() * std::sqrt(3.0) / 2, 0.5);
    } else {
      EXPECT_EQ(s.box.width(), s.box.height());
    }
    EXPECT_TRUE(ShapeContains(s, s.centre_x(), s.centre_y()));
    EXPECT_EQ(PixelAt(image, static_cast<int>(s.centre_x()),
                      static_cast<int>(s.centre_y())),
              ColourRgb(s.colour));
    for (size_t j = i + 1; j < scene.shapes.size(); ++j) {
      EXPECT_TRUE(BoxesApart(s.box, scene.shapes[j].box)) << i << " " << j;
    }
  }
}

TEST(SceneTest, EveryGeneratedSceneMeetsTheSpecification) {
  for (int seed = 0; seed < kSeeds; ++seed) {
    ExpectMeetsSpec(GenerateScene(SceneSeed(3, seed)));
    if (HasFatalFailure()) return;
  }
}

TEST(SceneTest, ManySeedsShowEveryKindColourCountAndBackground) {
  std::set<ShapeKind> kinds;
  std::set<Colour> colours;
  std::set<size_t> counts;
  std::set<Background> backgrounds;
  int small_sides = 0, large_sides = 0;
  for (int seed = 0; seed < kSeeds; ++seed) {
    const Scene scene = GenerateScene(SceneSeed(11, seed));
    counts.insert(scene.shapes.size());
    backgrounds.insert(scene.background);
    for (const Shape& s : scene.shapes) {
      kinds.insert(s.kind);
      colours.insert(s.colour);
    }
    small_sides += std::max(scene.width, scene.height) < 400;
    large_sides += std::min(scene.width, scene.height) > 650;
  }
  EXPECT_EQ(kinds.size(), kAllKinds.size());
  EXPECT_EQ(colours.size(), kAllColours.size());
  EXPECT_EQ(counts, (std::set<size_t>{1, 2, 3, 4}));
  EXPECT_EQ(backgrounds.size(), 2u);
  EXPECT_GT(small_sides, 0);
  EXPECT_GT(large_sides, 0);
}

TEST(SceneTest, ShapeContainsFollowsTheDrawnOutline) {
  const Shape circle = MakeShape(ShapeKind::kCircle, Colour::kRed, 0, 0, 100);
  EXPECT_TRUE(ShapeContains(circle, 50, 50));
  EXPECT_TRUE(ShapeContains(circle, 50, 1));
  EXPECT_FALSE(ShapeContains(circle, 5, 5));  // in the box's corner only
  Shape triangle = MakeShape(ShapeKind::kTriangle, Colour::kRed, 0, 0, 100);
  triangle.box.y_max = 87;
  EXPECT_TRUE(ShapeContains(triangle, 50, 60));
  EXPECT_TRUE(ShapeContains(triangle, 5, 86));
  EXPECT_FALSE(ShapeContains(triangle, 10, 10));  // top-left corner of box
  EXPECT_FALSE(ShapeContains(triangle, 90, 20));
  const Shape square = MakeShape(ShapeKind::kSquare, Colour::kRed, 0, 0, 100);
  EXPECT_TRUE(ShapeContains(square, 1, 99));
  EXPECT_FALSE(ShapeContains(square, 101, 50));
}

TEST(SceneTest, TruthJsonHasPixelAndNormalizedBoxes) {
  const Scene scene =
      HandMade({MakeShape(ShapeKind::kSquare, Colour::kBlue, 60, 40, 120)});
  const nlohmann::ordered_json truth = SceneTruthJson(scene, "scene_0.png");
  EXPECT_EQ(truth["file"], "scene_0.png");
  EXPECT_EQ(truth["width"], 600);
  EXPECT_EQ(truth["background"]["rgb"],
            nlohmann::ordered_json({255, 255, 255}));
  const nlohmann::ordered_json& s = truth["shapes"][0];
  EXPECT_EQ(s["kind"], "square");
  EXPECT_EQ(s["color"], "blue");
  EXPECT_EQ(s["rgb"], nlohmann::ordered_json({40, 80, 220}));
  EXPECT_EQ(s["box_px"]["x_max"], 180);
  EXPECT_DOUBLE_EQ(s["box"]["x_min"].get<double>(), 0.1);
  EXPECT_DOUBLE_EQ(s["box"]["y_max"].get<double>(), 0.4);
  EXPECT_DOUBLE_EQ(s["centre_px"]["x"].get<double>(), 120);
  EXPECT_DOUBLE_EQ(s["centre"]["y"].get<double>(), 0.25);
}

TEST(QuestionsTest, CaptionsListShapesLeftToRight) {
  const Shape red_circle =
      MakeShape(ShapeKind::kCircle, Colour::kRed, 10, 10, 80);
  const Shape blue_square =
      MakeShape(ShapeKind::kSquare, Colour::kBlue, 150, 200, 80);
  const Shape green_triangle =
      MakeShape(ShapeKind::kTriangle, Colour::kGreen, 300, 10, 80);
  const Shape yellow_circle =
      MakeShape(ShapeKind::kCircle, Colour::kYellow, 450, 150, 80);
  EXPECT_EQ(CaptionOf(HandMade({red_circle})), "a red circle");
  EXPECT_EQ(CaptionOf(HandMade({blue_square, red_circle})),
            "a red circle and a blue square");
  EXPECT_EQ(CaptionOf(HandMade({green_triangle, red_circle, blue_square})),
            "a red circle, a blue square and a green triangle");
  EXPECT_EQ(CaptionOf(HandMade(
                {yellow_circle, green_triangle, blue_square, red_circle})),
            "a red circle, a blue square, a green triangle and a yellow "
            "circle");
}

TEST(QuestionsTest, EveryTaskOfAScene) {
  // Two circles (no colour question about circles), one red and one blue
  // (both shape questions), one square.
  const Scene scene =
      HandMade({MakeShape(ShapeKind::kCircle, Colour::kBlue, 300, 10, 80),
                MakeShape(ShapeKind::kSquare, Colour::kGreen, 10, 10, 80),
                MakeShape(ShapeKind::kCircle, Colour::kRed, 150, 200, 80)});
  const std::vector<SceneTask> tasks = SceneTasks(scene);
  std::vector<std::string> lines;
  for (const SceneTask& t : tasks) {
    std::string line = std::string(TaskKindName(t.kind)) + "|" + t.input + "|" +
                       t.answer + "|";
    for (int i : t.targets) line += std::to_string(i);
    lines.push_back(line);
  }
  const std::vector<std::string> expected = {
      "count|How many shapes are there?|3|012",
      "color|What color is the square?|green|1",
      "shape|What shape is red?|circle|2",
      "shape|What shape is green?|square|1",
      "shape|What shape is blue?|circle|0",
      "caption short||a green square, a red circle and a blue circle|012",
      "caption normal||a green square, a red circle and a blue circle|012",
      "detect|circle||02",
      "detect|square||1",
      "detect|triangle||",
      "detect|red circle||2",
      "detect|blue circle||0",
      "detect|green square||1",
      "point|circle||02",
      "point|square||1",
      "point|triangle||",
      "point|red circle||2",
      "point|blue circle||0",
      "point|green square||1",
  };
  EXPECT_EQ(lines, expected);
}

TEST(QuestionsTest, UniquenessQuestionsOnlyWhenUnique) {
  for (int seed = 0; seed < kSeeds; ++seed) {
    const Scene scene = GenerateScene(SceneSeed(5, seed));
    for (const SceneTask& t : SceneTasks(scene)) {
      if (t.kind != TaskKind::kColour && t.kind != TaskKind::kShape) continue;
      int about = 0;
      for (const Shape& s : scene.shapes) {
        about += t.input.find(" " + std::string(KindName(s.kind)) + "?") !=
                     std::string::npos ||
                 t.input.find(" " + std::string(ColourName(s.colour)) + "?") !=
                     std::string::npos;
      }
      EXPECT_EQ(about, 1) << t.input;
    }
  }
}

}  // namespace
}  // namespace md::scenes
