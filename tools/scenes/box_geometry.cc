#include "tools/scenes/box_geometry.h"

#include <cmath>
#include <vector>

#include "absl/strings/str_format.h"
#include "tools/scenes/metrics.h"

namespace md::scenes {
namespace {

// A box's centre and extent along the image's long and short axes.
struct AxisBox {
  std::array<double, 2> centre, extent;
};

AxisBox AlongAxes(const Box& box, bool wide) {
  const double cx = (box.x_min + box.x_max) / 2,
               cy = (box.y_min + box.y_max) / 2;
  const double w = box.x_max - box.x_min, h = box.y_max - box.y_min;
  if (wide) return {{cx, cy}, {w, h}};
  return {{cy, cx}, {h, w}};
}

void AddPair(const Box& shape, const Box& answer, bool wide,
             BoxGeometryTally& tally) {
  const AxisBox s = AlongAxes(shape, wide), a = AlongAxes(answer, wide);
  for (int axis : {BoxGeometryTally::kLong, BoxGeometryTally::kShort}) {
    tally.centre_error[axis] +=
        std::abs(a.centre[axis] - s.centre[axis]) / s.extent[axis];
    tally.log_extent_ratio[axis] += std::log(a.extent[axis] / s.extent[axis]);
  }
  const double x =
      std::log((shape.x_max - shape.x_min) / (shape.y_max - shape.y_min));
  const double y =
      std::log((answer.x_max - answer.x_min) / (answer.y_max - answer.y_min));
  tally.sum_shape += x;
  tally.sum_answer += y;
  tally.sum_shape_sq += x * x;
  tally.sum_product += x * y;
  ++tally.pairs;
}

}  // namespace

double BoxGeometryTally::MeanCentreError(int axis) const {
  return pairs == 0 ? 0.0 : centre_error[axis] / pairs;
}

double BoxGeometryTally::ExtentRatio(int axis) const {
  return pairs == 0 ? 0.0 : std::exp(log_extent_ratio[axis] / pairs);
}

double BoxGeometryTally::AspectSlope() const {
  if (pairs == 0) return 0.0;
  const double n = pairs;
  const double spread = sum_shape_sq - sum_shape * sum_shape / n;
  const double together = sum_product - sum_shape * sum_answer / n;
  // Shapes of (nearly) one aspect give no slope to fit.
  return spread <= 1e-12 * n ? 0.0 : together / spread;
}

BoxGeometryTally& BoxGeometryTally::operator+=(const BoxGeometryTally& other) {
  pairs += other.pairs;
  for (int axis : {kLong, kShort}) {
    centre_error[axis] += other.centre_error[axis];
    log_extent_ratio[axis] += other.log_extent_ratio[axis];
  }
  sum_shape += other.sum_shape;
  sum_answer += other.sum_answer;
  sum_shape_sq += other.sum_shape_sq;
  sum_product += other.sum_product;
  return *this;
}

BoxGeometryTally MeasureBoxGeometry(const Scene& scene,
                                    absl::Span<const int> targets,
                                    absl::Span<const Box> answered) {
  const std::vector<Box> shapes = TargetBoxes(scene, targets);
  const bool wide = scene.width >= scene.height;
  BoxGeometryTally tally;
  // Any overlap pairs: a box with no area overlaps nothing, so every pair
  // has extents to compare.
  for (const BoxMatch& m : MatchBoxes(answered, shapes, /*min_iou=*/0)) {
    AddPair(shapes[m.target], answered[m.answer], wide, tally);
  }
  return tally;
}

std::string FormatBoxGeometry(const BoxGeometryTally& tally) {
  using T = BoxGeometryTally;
  if (tally.pairs == 0) return "box geometry: no answered box overlaps a shape";
  return absl::StrFormat(
      "box geometry, %d boxes paired: centre off by %.2f / %.2f of the "
      "shape's extent (long / short axis), extent x%.2f / x%.2f, aspect "
      "slope %.2f (1: follows the shape)",
      tally.pairs, tally.MeanCentreError(T::kLong),
      tally.MeanCentreError(T::kShort), tally.ExtentRatio(T::kLong),
      tally.ExtentRatio(T::kShort), tally.AspectSlope());
}

nlohmann::ordered_json BoxGeometryJson(const BoxGeometryTally& tally) {
  using T = BoxGeometryTally;
  return {{"pairs", tally.pairs},
          {"centre_error_long", tally.MeanCentreError(T::kLong)},
          {"centre_error_short", tally.MeanCentreError(T::kShort)},
          {"extent_ratio_long", tally.ExtentRatio(T::kLong)},
          {"extent_ratio_short", tally.ExtentRatio(T::kShort)},
          {"aspect_slope", tally.AspectSlope()}};
}

}  // namespace md::scenes
