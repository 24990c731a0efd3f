#include "model/net/preprocess.h"

#include <ATen/ATen.h>

#include <cstring>

#include "base/status_macros.h"
#include "model/io/tensor_io.h"

namespace md {

absl::StatusOr<ImageCrops> CropsToTensor(const OverlapCrops& crops) {
  return CatchTorch("copying crops", [&] {
    at::Tensor t =
        at::empty({crops.n_crops(), crops.crop_size, crops.crop_size, 3},
                  at::TensorOptions().dtype(at::kByte));
    std::memcpy(t.data_ptr(), crops.crops_NSSC.data(), crops.crops_NSSC.size());
    return ImageCrops{t, crops.tiling};
  });
}

absl::StatusOr<ImageCrops> PrepareImage(const RgbImage& image,
                                        const VisionConfig& config) {
  ASSIGN_OR_RETURN(OverlapCrops crops, OverlapCropImage(image, config));
  return CropsToTensor(crops);
}

RgbImage FlipHorizontal(const RgbImage& image) {
  RgbImage out = image;
  const size_t row = static_cast<size_t>(image.width) * 3;
  for (int y = 0; y < image.height; ++y) {
    const uint8_t* src = image.pixels_HWC.data() + y * row;
    uint8_t* dst = out.pixels_HWC.data() + y * row;
    for (int x = 0; x < image.width; ++x) {
      std::memcpy(dst + (image.width - 1 - x) * 3, src + x * 3, 3);
    }
  }
  return out;
}

}  // namespace md
