#include "model/skills/outliers.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/model/golden.h"

namespace md {
namespace {

using Json = nlohmann::json;

std::vector<PointXY> ToPoints(const Json& points) {
  std::vector<PointXY> out;
  for (const Json& p : points) {
    out.push_back({p.at(0).get<double>(), p.at(1).get<double>()});
  }
  return out;
}

void ExpectPointsEqual(const std::vector<PointXY>& actual,
                       const std::vector<PointXY>& expected) {
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < actual.size(); ++i) {
    SCOPED_TRACE(absl::StrCat("point ", i));
    EXPECT_DOUBLE_EQ(actual[i].x, expected[i].x);
    EXPECT_DOUBLE_EQ(actual[i].y, expected[i].y);
  }
}

TEST(RemoveOutlierPointsTest, Golden) {
  const Json& sets = md::testing::Cases()["remove_outlier_points"];
  ASSERT_TRUE(sets.is_array());
  ASSERT_FALSE(sets.empty());
  for (size_t i = 0; i < sets.size(); ++i) {
    const Json& set = sets[i];
    SCOPED_TRACE(absl::StrCat("remove_outlier_points[", i, "]: ", set.dump()));
    const std::vector<PointXY> points = ToPoints(set["points"]);
    const std::vector<PointXY> expected = ToPoints(set["result"]);
    ExpectPointsEqual(RemoveOutlierPoints(points, set["k_nearest"].get<int>(),
                                          set["threshold"].get<double>()),
                      expected);
  }
}

TEST(RemoveOutlierPointsTest, DefaultsAreTwoNearestAndTwiceTheMedian) {
  const Json& set = md::testing::Cases()["remove_outlier_points"][0];
  ASSERT_EQ(set["k_nearest"].get<int>(), 2);
  ASSERT_EQ(set["threshold"].get<double>(), 2.0);
  ExpectPointsEqual(RemoveOutlierPoints(ToPoints(set["points"])),
                    ToPoints(set["result"]));
}

TEST(RemoveOutlierPointsTest, HandCase) {
  // Four points on a unit square plus one far away. With k = 2 the point's
  // own zero distance counts, so the mean over the 2 nearest is half the
  // distance to its nearest neighbour: 0.5 for the square's corners, 5 for
  // the far point (nearest corner (1,1) is at distance 10). Median 0.5,
  // limit 1.0: the far point goes, the others stay in input order.
  const std::vector<PointXY> points = {{0, 0}, {1, 0}, {7, 9}, {0, 1}, {1, 1}};
  ExpectPointsEqual(RemoveOutlierPoints(points, 2, 2.0),
                    {{0, 0}, {1, 0}, {0, 1}, {1, 1}});
  // A threshold wide enough keeps everything (5 <= 10 × 0.5).
  ExpectPointsEqual(RemoveOutlierPoints(points, 2, 10.0), points);
  // Just under: 5 > 9.99 × 0.5.
  ExpectPointsEqual(RemoveOutlierPoints(points, 2, 9.99),
                    {{0, 0}, {1, 0}, {0, 1}, {1, 1}});
}

TEST(RemoveOutlierPointsTest, DuplicatesMakeTheMedianZero) {
  // Three identical points have mean nearest distance 0, so the median is 0
  // and only points at distance 0 survive: even (0.31, 0.3), mean 0.005,
  // is dropped, as numpy's reference does.
  const std::vector<PointXY> points = {
      {0.3, 0.3}, {0.3, 0.3}, {0.31, 0.3}, {0.9, 0.1}, {0.3, 0.3}};
  ExpectPointsEqual(RemoveOutlierPoints(points, 2, 2.0),
                    {{0.3, 0.3}, {0.3, 0.3}, {0.3, 0.3}});
}

TEST(RemoveOutlierPointsTest, KOfOneKeepsEverything) {
  // k = 1: the only "nearest" is the point itself, all means are 0, and
  // 0 <= threshold × 0 keeps every point.
  const std::vector<PointXY> points = {{0, 0}, {0.5, 0.5}, {1, 0}};
  ExpectPointsEqual(RemoveOutlierPoints(points, 1, 2.0), points);
}

TEST(RemoveOutlierPointsTest, SinglePointIsDropped) {
  // n = 1 → k = 0: numpy's mean of an empty slice is NaN, and NaN <= NaN is
  // false, so the reference returns nothing.
  EXPECT_TRUE(RemoveOutlierPoints({{0.4, 0.6}}, 2, 2.0).empty());
}

TEST(RemoveOutlierPointsTest, EmptyInput) {
  EXPECT_TRUE(RemoveOutlierPoints({}, 2, 2.0).empty());
}

}  // namespace
}  // namespace md
