// From image file to image embedding with our own decoding and crops: the
// embedding must match the reference's within the golden tolerance.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "model/image/image_decode.h"
#include "model/net/kernels/bf16_gemm.h"
#include "model/net/moondream.h"
#include "model/net/preprocess.h"
#include "model/net/vision.h"
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

// Model::EncodeDistinctCrops encodes each distinct crop once and gives its
// copies the same features. In bf16 every op of the encoder treats crops
// independently (our packed linear is batch invariant), so that is the same
// bits as encoding every copy. fp32's BLAS may block a batch of 4 crops
// differently from one of 2: there the two agree to float rounding.
TEST(PipelineTest, DuplicateCropsShareTheirFeatures) {
  SetComputeThreads(2);
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    SCOPED_TRACE(dtype);
    auto model = Model::Load(GoldenDir(), Moondream2Config(),
                             ModelOptions{.dtype = dtype});
    ASSERT_TRUE(model.ok()) << model.status();
    const auto& image = Cases()["images"][0];
    const at::Tensor case_crops = CaseTensor(image["tensors"]["crops"]);
    ASSERT_GE(case_crops.size(0), 2);
    // Global, tile, global again, tile again.
    const at::Tensor crops =
        at::cat({case_crops.narrow(0, 0, 2), case_crops.narrow(0, 0, 2)});
    at::NoGradGuard no_grad;
    const VisionConfig& vc = (*model)->config().vision;
    const at::Tensor every_copy = EncodeCrops(
        NormalizeCrops(crops, dtype, at::kCPU), (*model)->weights().vision, vc);
    const at::Tensor deduplicated = (*model)->EncodeDistinctCrops(crops);
    EXPECT_TRUE(at::equal(deduplicated[0], deduplicated[2]));
    EXPECT_TRUE(at::equal(deduplicated[1], deduplicated[3]));
    std::printf("max |diff| %g\n", MaxAbsDiff(deduplicated, every_copy));
    if (dtype == at::kBFloat16 && PackedLinearBf16Enabled()) {
      EXPECT_TRUE(at::equal(deduplicated, every_copy));
    } else {
      EXPECT_LE(MaxAbsDiff(deduplicated, every_copy), 1e-4);
    }
  }
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
