#include "model/skills/outliers.h"

#include <algorithm>
#include <cmath>

namespace md {
namespace {

double Median(std::vector<double> values) {
  const size_t n = values.size();
  std::sort(values.begin(), values.end());
  return n % 2 == 1 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

}  // namespace

std::vector<PointXY> RemoveOutlierPoints(const std::vector<PointXY>& points,
                                         int k_nearest, double threshold) {
  const int n = static_cast<int>(points.size());
  if (n == 0) return {};
  const int k = std::min(k_nearest, n - 1);

  std::vector<double> mean_nearest(n, 0.0);
  for (int i = 0; i < n; ++i) {
    std::vector<double> row(n);
    for (int j = 0; j < n; ++j) {
      const double dx = points[i].x - points[j].x;
      const double dy = points[i].y - points[j].y;
      row[j] = std::sqrt(dx * dx + dy * dy);  // as the reference, not hypot
    }
    row[i] = 0.0;
    std::partial_sort(row.begin(), row.begin() + k, row.end());
    double sum = 0;
    for (int j = 0; j < k; ++j) sum += row[j];
    // numpy's mean of an empty slice is NaN, and NaN <= x is false.
    mean_nearest[i] = k > 0 ? sum / k : std::nan("");
  }

  const double limit = threshold * Median(mean_nearest);
  std::vector<PointXY> kept;
  for (int i = 0; i < n; ++i) {
    if (mean_nearest[i] <= limit) kept.push_back(points[i]);
  }
  return kept;
}

}  // namespace md
