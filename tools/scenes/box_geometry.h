// How detect answers' boxes miss their shapes, along the image's longer and
// shorter axes: the diagnostic behind a low detect F1. A model whose boxes
// come out as wide as tall in the image's fractions (where a circle in a
// 2:1 image is twice as tall as wide) shows an aspect slope near 0 and
// sizes off in opposite directions on the two axes; one that finds the
// shape but not its centre shows centre errors large against the shape's
// extent. Additive over answers, like the tallies in metrics.h.
#ifndef MOONDREAM_TOOLS_SCENES_BOX_GEOMETRY_H_
#define MOONDREAM_TOOLS_SCENES_BOX_GEOMETRY_H_

#include <array>
#include <nlohmann/json.hpp>
#include <string>

#include "absl/types/span.h"
#include "model/skills/skill_types.h"
#include "tools/scenes/scene.h"

namespace md::scenes {

struct BoxGeometryTally {
  // Axis 0 is the image's longer side (x when width >= height), 1 its
  // shorter.
  static constexpr int kLong = 0, kShort = 1;

  int pairs = 0;  // answered boxes paired with a shape
  // Sums over pairs: |answer centre - shape centre| / shape extent, and
  // log(answer extent / shape extent), per axis.
  std::array<double, 2> centre_error{};
  std::array<double, 2> log_extent_ratio{};
  // Sums for the least-squares slope of log(answer w/h) on log(shape w/h),
  // both in the image's fractions.
  double sum_shape = 0, sum_answer = 0, sum_shape_sq = 0, sum_product = 0;

  // Means over pairs (0 when there are none).
  double MeanCentreError(int axis) const;
  // exp of the mean log ratio: 1 when boxes are as long as the shapes.
  double ExtentRatio(int axis) const;
  // 1 when a box's aspect follows its shape's, 0 when it ignores it (0 when
  // the shapes' aspects do not vary).
  double AspectSlope() const;
  BoxGeometryTally& operator+=(const BoxGeometryTally& other);
};

// Pairs each answered box (fractions of the image, as detect answers) with
// the shape of `scene.shapes[targets]` it overlaps most, greedily, highest
// IoU first, each side used once; no IoU floor, but a box that overlaps no
// shape left is not paired (it says nothing about how boxes are shaped).
BoxGeometryTally MeasureBoxGeometry(const Scene& scene,
                                    absl::Span<const int> targets,
                                    absl::Span<const Box> answered);

// "box geometry, 1018 boxes paired: centre off by 0.36 / 0.14 of the
// shape's extent (long / short axis), extent x1.30 / x0.66, aspect slope
// 0.05 (1: follows the shape)", or a line saying no box was paired.
std::string FormatBoxGeometry(const BoxGeometryTally& tally);
nlohmann::ordered_json BoxGeometryJson(const BoxGeometryTally& tally);

}  // namespace md::scenes

#endif  // MOONDREAM_TOOLS_SCENES_BOX_GEOMETRY_H_
