#include "model/image/tiling.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "model/config/config.h"
#include "tests/model/golden.h"

namespace md {
namespace {

using Json = nlohmann::json;

MoondreamConfig GoldenConfig() {
  absl::StatusOr<MoondreamConfig> config = LoadConfigFile(
      md::testing::GoldenDir() + "/config.json", Moondream2Config());
  EXPECT_TRUE(config.ok()) << config.status();
  return config.ok() ? *config : Moondream2Config();
}

Tiling ExpectedTiling(const Json& tiling) {
  EXPECT_TRUE(tiling.is_array() && tiling.size() == 2) << tiling.dump();
  return {tiling.at(0).get<int>(), tiling.at(1).get<int>()};
}

void ExpectTiling(const Tiling& actual, const Tiling& expected) {
  EXPECT_EQ(actual.rows, expected.rows);
  EXPECT_EQ(actual.cols, expected.cols);
  EXPECT_TRUE(actual == expected);
}

TEST(TilingTest, GoldenSelectTiling) {
  const Json& cases = md::testing::Cases()["select_tiling"];
  ASSERT_TRUE(cases.is_array());
  ASSERT_FALSE(cases.empty());
  int checked = 0;
  for (const Json& c : cases) {
    const int height = c["height"].get<int>();
    const int width = c["width"].get<int>();
    const int crop_size = c["crop_size"].get<int>();
    const int max_crops = c["max_crops"].get<int>();
    SCOPED_TRACE(absl::StrCat("select_tiling(", height, ", ", width, ", ",
                              crop_size, ", ", max_crops, ")"));
    ExpectTiling(SelectTiling(height, width, crop_size, max_crops),
                 ExpectedTiling(c["tiling"]));
    ++checked;
  }
  EXPECT_EQ(checked, static_cast<int>(cases.size()));
}

TEST(TilingTest, GoldenImageSizeTiling) {
  const MoondreamConfig config = GoldenConfig();
  const Json& cases = md::testing::Cases()["image_size_tiling"];
  ASSERT_TRUE(cases.is_array());
  ASSERT_FALSE(cases.empty());
  for (const Json& c : cases) {
    const int height = c["height"].get<int>();
    const int width = c["width"].get<int>();
    SCOPED_TRACE(absl::StrCat("image ", height, "x", width, " (h x w)"));
    ExpectTiling(ImageTiling(height, width, config.vision),
                 ExpectedTiling(c["tiling"]));
  }
}

TEST(TilingTest, GoldenImages) {
  const MoondreamConfig config = GoldenConfig();
  const Json& images = md::testing::Cases()["images"];
  ASSERT_TRUE(images.is_array());
  ASSERT_FALSE(images.empty());
  for (const Json& image : images) {
    const int height = image["height"].get<int>();
    const int width = image["width"].get<int>();
    SCOPED_TRACE(absl::StrCat("image ", image["name"].get<std::string>(), " ",
                              width, "x", height, " (w x h)"));
    const Tiling tiling = ImageTiling(height, width, config.vision);
    ExpectTiling(tiling, ExpectedTiling(image["tiling"]));
    EXPECT_EQ(tiling.n_tiles() + 1, image["n_crops"].get<int>());
  }
}

TEST(TilingTest, MarginAndWindow) {
  const MoondreamConfig config = Moondream2Config();
  EXPECT_EQ(CropMarginPixels(config.vision), 56);
  EXPECT_EQ(CropWindowPixels(config.vision), 266);
}

TEST(TilingTest, HandCases) {
  // Too small on either side: one tile.
  ExpectTiling(SelectTiling(266, 5000, 266, 12), {1, 1});
  // 600x800 → aspect tiling floor(sqrt(9)) x floor(sqrt(16)).
  ExpectTiling(SelectTiling(600, 800, 266, 12), {3, 4});
  // Minimum cover 2x38 > 12 crops: scaled down by sqrt(12/76).
  ExpectTiling(SelectTiling(300, 10000, 266, 12), {1, 15});
  // The wide golden image: 288x2888 → 1x8.
  ExpectTiling(SelectTiling(400 - 112, 3000 - 112, 266, 12), {1, 8});
  const Tiling t{3, 4};
  EXPECT_EQ(t.n_tiles(), 12);
}

}  // namespace
}  // namespace md
