// From image file to image embedding with our own decoding and crops: the
// embedding must match the reference's within the golden tolerance.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>

#include "model/image/image_decode.h"
#include "model/net/moondream.h"
#include "model/net/preprocess.h"
#include "tests/model/golden.h"

namespace md {
namespace {

using ::md::testing::Cases;
using ::md::testing::CaseTensor;
using ::md::testing::GoldenDir;
using ::md::testing::MaxAbsDiff;
using ::md::testing::Tolerance;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

TEST(PipelineTest, EmbeddingFromOwnCropsMatchesReference) {
  SetComputeThreads(2);
  auto model = Model::Load(GoldenDir(), Moondream2Config(), ModelOptions{});
  ASSERT_TRUE(model.ok()) << model.status();
  int n_images = 0;
  for (const auto& image : Cases()["images"]) {
    const std::string name = image["name"];
    SCOPED_TRACE(name);
    std::string bytes =
        ReadFile(GoldenDir() + "/" + image["file"].get<std::string>());
    ASSERT_FALSE(bytes.empty());
    auto rgb = DecodeImage(bytes);
    ASSERT_TRUE(rgb.ok()) << rgb.status();
    auto crops = PrepareImage(*rgb, (*model)->config().vision);
    ASSERT_TRUE(crops.ok()) << crops.status();
    EXPECT_EQ(crops->tiling.rows, image["tiling"][0].get<int>());
    EXPECT_EQ(crops->tiling.cols, image["tiling"][1].get<int>());
    EXPECT_TRUE(
        at::equal(crops->crops_u8, CaseTensor(image["tensors"]["crops"])));
    auto features = (*model)->EncodeImageDetailed(*crops);
    ASSERT_TRUE(features.ok()) << features.status();
    EXPECT_LE(MaxAbsDiff(features->embedding_PC,
                         CaseTensor(image["tensors"]["img_emb"])),
              Tolerance("img_emb"));
    ++n_images;
  }
  EXPECT_GT(n_images, 0);
}

TEST(PipelineTest, FlipHorizontalMirrorsRows) {
  RgbImage image{
      .width = 3, .height = 1, .pixels_HWC = {1, 2, 3, 4, 5, 6, 7, 8, 9}};
  RgbImage flipped = FlipHorizontal(image);
  EXPECT_EQ(flipped.pixels_HWC,
            (std::vector<uint8_t>{7, 8, 9, 4, 5, 6, 1, 2, 3}));
  EXPECT_EQ(FlipHorizontal(flipped).pixels_HWC, image.pixels_HWC);
}

}  // namespace
}  // namespace md
