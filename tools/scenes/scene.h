// Synthetic scenes for training and evaluating a tiny Moondream (issue 14):
// 1 to 4 flat shapes (circle, square, triangle) in 4 colours on a plain
// background, with their truth. The specification is fixed (the trainer,
// `moondream-bench scenes-eval` and the tests rely on it):
//
// - canvas W×H, each side in [256, 768]; background white (255,255,255) or
//   light grey (230,230,230);
// - 1 to 4 shapes, each fully inside the canvas, bounding boxes apart by a
//   gap of 2% of min(W, H) (at least 4 px); both sides of each bounding box
//   in [15%, 35%] of min(W, H);
// - circle, axis-aligned square, or equilateral triangle pointing up (its
//   height is the width × √3/2, rounded to whole pixels);
// - filled in red (220,40,40), green (40,180,60), blue (40,80,220) or
//   yellow (240,200,30), drawn anti-aliased with OpenCV.
//
// One addition to keep the captions' left-to-right order well defined: the
// centres of two shapes are at least 3% of W apart horizontally.
//
// Coordinates are in pixels with edges at integers: pixel (i, j) covers
// [i, i+1) × [j, j+1), so a box [x_min, x_max) × [y_min, y_max) holds
// (x_max − x_min) × (y_max − y_min) pixels, and dividing by W and H gives
// the [0, 1] fractions the model's skills use.
#ifndef MOONDREAM_TOOLS_SCENES_SCENE_H_
#define MOONDREAM_TOOLS_SCENES_SCENE_H_

#include <array>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace md::scenes {

inline constexpr int kMinCanvasSide = 256;
inline constexpr int kMaxCanvasSide = 768;
inline constexpr int kMinShapes = 1;
inline constexpr int kMaxShapes = 4;
// A bounding box's sides, as fractions of min(W, H).
inline constexpr double kMinShapeFraction = 0.15;
inline constexpr double kMaxShapeFraction = 0.35;

enum class ShapeKind { kCircle, kSquare, kTriangle };
inline constexpr std::array<ShapeKind, 3> kAllKinds = {
    ShapeKind::kCircle, ShapeKind::kSquare, ShapeKind::kTriangle};

enum class Colour { kRed, kGreen, kBlue, kYellow };
inline constexpr std::array<Colour, 4> kAllColours = {
    Colour::kRed, Colour::kGreen, Colour::kBlue, Colour::kYellow};

enum class Background { kWhite, kLightGrey };

struct Rgb {
  uint8_t r = 0, g = 0, b = 0;
  bool operator==(const Rgb&) const = default;
};

// "circle", "square", "triangle"; "red", "green", "blue", "yellow"; "white",
// "light grey": the words the questions and answers use.
absl::string_view KindName(ShapeKind kind);
absl::string_view ColourName(Colour colour);
absl::string_view BackgroundName(Background background);
Rgb ColourRgb(Colour colour);
Rgb BackgroundRgb(Background background);

// A bounding box in pixels, [x_min, x_max) × [y_min, y_max).
struct PixelBox {
  int x_min = 0, y_min = 0, x_max = 0, y_max = 0;
  int width() const { return x_max - x_min; }
  int height() const { return y_max - y_min; }
};

struct Shape {
  ShapeKind kind = ShapeKind::kCircle;
  Colour colour = Colour::kRed;
  PixelBox box;

  // The centre of mass, in pixels: the box's centre, except for the
  // triangle, whose centroid is 2/3 of the way down. It is the point a
  // `point` answer should aim at (deepest inside the shape).
  double centre_x() const;
  double centre_y() const;
};

struct Scene {
  uint64_t seed = 0;
  int width = 0;
  int height = 0;
  Background background = Background::kWhite;
  std::vector<Shape> shapes;
};

// The scene a seed gives, the same on every platform and standard library.
Scene GenerateScene(uint64_t seed);

// How many times longer the longer side is than the shorter (>= 1).
double SceneAspect(const Scene& scene);

// The scene drawn in OpenCV's order: CV_8UC3, BGR.
cv::Mat RenderScene(const Scene& scene);

// Whether the point (x, y), in pixels, lies inside the shape as drawn: the
// disc, the square or the triangle itself, not merely its bounding box.
bool ShapeContains(const Shape& shape, double x, double y);

// The shapes' indices ordered left to right by the x of their centre (ties,
// which the generator avoids, by y, top first).
std::vector<int> LeftToRight(const Scene& scene);

// The truth of one scene as written next to its image `file`: seed, width,
// height, background (name and rgb) and each shape's kind, color, rgb, box
// (normalized [0, 1]), box_px, centre (normalized) and centre_px.
nlohmann::ordered_json SceneTruthJson(const Scene& scene,
                                      const std::string& file);

}  // namespace md::scenes

#endif  // MOONDREAM_TOOLS_SCENES_SCENE_H_
