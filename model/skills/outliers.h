// The reference's outlier filter for gaze probes (utils.remove_outlier_points).
#ifndef MOONDREAM_MODEL_SKILLS_OUTLIERS_H_
#define MOONDREAM_MODEL_SKILLS_OUTLIERS_H_

#include <vector>

namespace md {

struct PointXY {
  double x = 0;
  double y = 0;
  bool operator==(const PointXY&) const = default;
};

// Keeps, in input order, the points whose mean distance to their k nearest
// points is at most threshold × the median of that mean. As in the
// reference, a point's own zero distance counts among its k nearest.
std::vector<PointXY> RemoveOutlierPoints(const std::vector<PointXY>& points,
                                         int k_nearest = 2,
                                         double threshold = 2.0);

}  // namespace md

#endif  // MOONDREAM_MODEL_SKILLS_OUTLIERS_H_
