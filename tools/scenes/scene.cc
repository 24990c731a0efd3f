#include "tools/scenes/scene.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <opencv2/imgproc.hpp>

#include "tools/scenes/random.h"

namespace md::scenes {
namespace {

// cos 30°: an equilateral triangle's height per unit of side.
constexpr double kTriangleHeightRatio = 0.86602540378443864676;
// Anti-aliased edges spill about a pixel past the geometry; shapes keep this
// far from the canvas border so all of each one is drawn.
constexpr int kBorderPx = 2;
// Gaps between bounding boxes, and between centres along x (see scene.h).
constexpr double kGapFraction = 0.02;
constexpr int kMinGapPx = 4;
constexpr double kCentreGapFraction = 0.03;
// Placement is by rejection; a layout that fails this often starts over.
constexpr int kPlacementTries = 200;
constexpr int kLayoutTries = 50;
// OpenCV draws with fixed-point coordinates: 4 fractional bits (1/16 px).
constexpr int kShiftBits = 4;
constexpr double kShiftScale = 1 << kShiftBits;

// The limits one scene's shapes must meet.
struct LayoutRules {
  int width = 0, height = 0;
  int min_side = 0, max_side = 0;  // of a bounding box
  int gap = 0;                     // between bounding boxes
  double centre_gap = 0;           // between centres along x
};

LayoutRules RulesFor(int width, int height) {
  const int m = std::min(width, height);
  LayoutRules rules;
  rules.width = width;
  rules.height = height;
  rules.min_side = static_cast<int>(std::ceil(kMinShapeFraction * m));
  rules.max_side = static_cast<int>(std::floor(kMaxShapeFraction * m));
  rules.gap =
      std::max(kMinGapPx, static_cast<int>(std::ceil(kGapFraction * m)));
  rules.centre_gap = kCentreGapFraction * width;
  return rules;
}

int TriangleHeight(int width) {
  return static_cast<int>(std::lround(width * kTriangleHeightRatio));
}

// The narrowest triangle whose (shorter) height still meets the minimum.
int MinTriangleWidth(const LayoutRules& rules) {
  int width = rules.min_side;
  while (TriangleHeight(width) < rules.min_side) ++width;
  return width;
}

bool BoxesClear(const PixelBox& a, const PixelBox& b, int gap) {
  return a.x_max + gap <= b.x_min || b.x_max + gap <= a.x_min ||
         a.y_max + gap <= b.y_min || b.y_max + gap <= a.y_min;
}

bool FitsAmong(const Shape& shape, const std::vector<Shape>& placed,
               const LayoutRules& rules) {
  for (const Shape& other : placed) {
    if (!BoxesClear(shape.box, other.box, rules.gap)) return false;
    if (std::abs(shape.centre_x() - other.centre_x()) < rules.centre_gap) {
      return false;
    }
  }
  return true;
}

// A shape of `kind` with a random size and position inside the canvas.
Shape RandomlyPlaced(ShapeKind kind, const LayoutRules& rules, ScenePrng& rng) {
  const int min_width =
      kind == ShapeKind::kTriangle ? MinTriangleWidth(rules) : rules.min_side;
  const int width = static_cast<int>(rng.UniformInt(min_width, rules.max_side));
  const int height =
      kind == ShapeKind::kTriangle ? TriangleHeight(width) : width;
  Shape shape;
  shape.kind = kind;
  shape.box.x_min = static_cast<int>(
      rng.UniformInt(kBorderPx, rules.width - kBorderPx - width));
  shape.box.y_min = static_cast<int>(
      rng.UniformInt(kBorderPx, rules.height - kBorderPx - height));
  shape.box.x_max = shape.box.x_min + width;
  shape.box.y_max = shape.box.y_min + height;
  return shape;
}

// `n` shapes of random kinds that keep apart, or fewer when the canvas had
// no room left for one of them.
std::vector<Shape> TryLayout(int n, const LayoutRules& rules, ScenePrng& rng) {
  std::vector<Shape> placed;
  for (int i = 0; i < n; ++i) {
    const ShapeKind kind = kAllKinds[rng.UniformInt(0, kAllKinds.size() - 1)];
    bool fitted = false;
    for (int t = 0; t < kPlacementTries && !fitted; ++t) {
      Shape shape = RandomlyPlaced(kind, rules, rng);
      if (FitsAmong(shape, placed, rules)) {
        placed.push_back(shape);
        fitted = true;
      }
    }
    if (!fitted) break;
  }
  return placed;
}

// Tries whole layouts of `n` shapes; a crowded draw (four large shapes on a
// small canvas) starts over rather than giving up, so counts stay uniform.
// One shape always fits, so the count only drops after many failures.
std::vector<Shape> Layout(int n, const LayoutRules& rules, ScenePrng& rng) {
  for (;; --n) {
    for (int t = 0; t < kLayoutTries; ++t) {
      std::vector<Shape> shapes = TryLayout(n, rules, rng);
      if (static_cast<int>(shapes.size()) == n) return shapes;
    }
  }
}

cv::Scalar Bgr(Rgb rgb) { return cv::Scalar(rgb.b, rgb.g, rgb.r); }

// Our pixel-edge coordinates (scene.h) in OpenCV's, where integers are pixel
// centres, in OpenCV's fixed point.
cv::Point ToCv(double x, double y) {
  return cv::Point(static_cast<int>(std::lround((x - 0.5) * kShiftScale)),
                   static_cast<int>(std::lround((y - 0.5) * kShiftScale)));
}

void DrawShape(const Shape& shape, cv::Mat& image) {
  const PixelBox& b = shape.box;
  const cv::Scalar colour = Bgr(ColourRgb(shape.colour));
  switch (shape.kind) {
    case ShapeKind::kCircle: {
      const double radius = b.width() / 2.0;
      cv::circle(image, ToCv(b.x_min + radius, b.y_min + radius),
                 static_cast<int>(std::lround(radius * kShiftScale)), colour,
                 cv::FILLED, cv::LINE_AA, kShiftBits);
      return;
    }
    case ShapeKind::kSquare: {
      const cv::Point corners[] = {
          ToCv(b.x_min, b.y_min), ToCv(b.x_max, b.y_min),
          ToCv(b.x_max, b.y_max), ToCv(b.x_min, b.y_max)};
      cv::fillConvexPoly(image, corners, 4, colour, cv::LINE_AA, kShiftBits);
      return;
    }
    case ShapeKind::kTriangle: {
      const cv::Point corners[] = {ToCv(b.x_min, b.y_max),
                                   ToCv(b.x_max, b.y_max),
                                   ToCv((b.x_min + b.x_max) / 2.0, b.y_min)};
      cv::fillConvexPoly(image, corners, 3, colour, cv::LINE_AA, kShiftBits);
      return;
    }
  }
}

// Which side of the line a→b the point p is on (> 0: left, in image
// coordinates where y grows downwards that is clockwise).
double Cross(double ax, double ay, double bx, double by, double px, double py) {
  return (bx - ax) * (py - ay) - (by - ay) * (px - ax);
}

bool TriangleContains(const PixelBox& b, double x, double y) {
  const double top_x = (b.x_min + b.x_max) / 2.0;
  const double d1 = Cross(b.x_min, b.y_max, b.x_max, b.y_max, x, y);
  const double d2 = Cross(b.x_max, b.y_max, top_x, b.y_min, x, y);
  const double d3 = Cross(top_x, b.y_min, b.x_min, b.y_max, x, y);
  const bool any_negative = d1 < 0 || d2 < 0 || d3 < 0;
  const bool any_positive = d1 > 0 || d2 > 0 || d3 > 0;
  return !(any_negative && any_positive);
}

nlohmann::ordered_json RgbJson(Rgb rgb) { return {rgb.r, rgb.g, rgb.b}; }

template <typename T>
nlohmann::ordered_json BoxJson(T x_min, T y_min, T x_max, T y_max) {
  return {
      {"x_min", x_min}, {"y_min", y_min}, {"x_max", x_max}, {"y_max", y_max}};
}

nlohmann::ordered_json ShapeJson(const Shape& shape, int width, int height) {
  const PixelBox& b = shape.box;
  return {
      {"kind", std::string(KindName(shape.kind))},
      {"color", std::string(ColourName(shape.colour))},
      {"rgb", RgbJson(ColourRgb(shape.colour))},
      {"box", BoxJson(static_cast<double>(b.x_min) / width,
                      static_cast<double>(b.y_min) / height,
                      static_cast<double>(b.x_max) / width,
                      static_cast<double>(b.y_max) / height)},
      {"box_px", BoxJson(b.x_min, b.y_min, b.x_max, b.y_max)},
      {"centre",
       {{"x", shape.centre_x() / width}, {"y", shape.centre_y() / height}}},
      {"centre_px", {{"x", shape.centre_x()}, {"y", shape.centre_y()}}},
  };
}

}  // namespace

absl::string_view KindName(ShapeKind kind) {
  switch (kind) {
    case ShapeKind::kCircle:
      return "circle";
    case ShapeKind::kSquare:
      return "square";
    case ShapeKind::kTriangle:
      return "triangle";
  }
  return "?";
}

absl::string_view ColourName(Colour colour) {
  switch (colour) {
    case Colour::kRed:
      return "red";
    case Colour::kGreen:
      return "green";
    case Colour::kBlue:
      return "blue";
    case Colour::kYellow:
      return "yellow";
  }
  return "?";
}

absl::string_view BackgroundName(Background background) {
  return background == Background::kWhite ? "white" : "light grey";
}

Rgb ColourRgb(Colour colour) {
  switch (colour) {
    case Colour::kRed:
      return {220, 40, 40};
    case Colour::kGreen:
      return {40, 180, 60};
    case Colour::kBlue:
      return {40, 80, 220};
    case Colour::kYellow:
      return {240, 200, 30};
  }
  return {};
}

Rgb BackgroundRgb(Background background) {
  return background == Background::kWhite ? Rgb{255, 255, 255}
                                          : Rgb{230, 230, 230};
}

double Shape::centre_x() const { return (box.x_min + box.x_max) / 2.0; }

double Shape::centre_y() const {
  return kind == ShapeKind::kTriangle ? box.y_min + box.height() * 2.0 / 3.0
                                      : (box.y_min + box.y_max) / 2.0;
}

Scene GenerateScene(uint64_t seed) {
  ScenePrng rng(seed);
  Scene scene;
  scene.seed = seed;
  scene.width =
      static_cast<int>(rng.UniformInt(kMinCanvasSide, kMaxCanvasSide));
  scene.height =
      static_cast<int>(rng.UniformInt(kMinCanvasSide, kMaxCanvasSide));
  scene.background = rng.Coin() ? Background::kLightGrey : Background::kWhite;
  const int n = static_cast<int>(rng.UniformInt(kMinShapes, kMaxShapes));
  scene.shapes = Layout(n, RulesFor(scene.width, scene.height), rng);
  for (Shape& shape : scene.shapes) {
    shape.colour = kAllColours[rng.UniformInt(0, kAllColours.size() - 1)];
  }
  return scene;
}

cv::Mat RenderScene(const Scene& scene) {
  cv::Mat image(scene.height, scene.width, CV_8UC3,
                Bgr(BackgroundRgb(scene.background)));
  for (const Shape& shape : scene.shapes) DrawShape(shape, image);
  return image;
}

bool ShapeContains(const Shape& shape, double x, double y) {
  const PixelBox& b = shape.box;
  switch (shape.kind) {
    case ShapeKind::kCircle: {
      const double r = b.width() / 2.0;
      const double dx = x - (b.x_min + r), dy = y - (b.y_min + r);
      return dx * dx + dy * dy <= r * r;
    }
    case ShapeKind::kSquare:
      return x >= b.x_min && x <= b.x_max && y >= b.y_min && y <= b.y_max;
    case ShapeKind::kTriangle:
      return TriangleContains(b, x, y);
  }
  return false;
}

double SceneAspect(const Scene& scene) {
  return static_cast<double>(std::max(scene.width, scene.height)) /
         std::min(scene.width, scene.height);
}

std::vector<int> LeftToRight(const Scene& scene) {
  std::vector<int> order(scene.shapes.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    const Shape& sa = scene.shapes[a];
    const Shape& sb = scene.shapes[b];
    if (sa.centre_x() != sb.centre_x()) return sa.centre_x() < sb.centre_x();
    return sa.centre_y() < sb.centre_y();
  });
  return order;
}

nlohmann::ordered_json SceneTruthJson(const Scene& scene,
                                      const std::string& file) {
  nlohmann::ordered_json shapes = nlohmann::ordered_json::array();
  for (const Shape& shape : scene.shapes) {
    shapes.push_back(ShapeJson(shape, scene.width, scene.height));
  }
  return {
      {"file", file},
      {"seed", scene.seed},
      {"width", scene.width},
      {"height", scene.height},
      {"background",
       {{"name", std::string(BackgroundName(scene.background))},
        {"rgb", RgbJson(BackgroundRgb(scene.background))}}},
      {"shapes", std::move(shapes)},
  };
}

}  // namespace md::scenes
