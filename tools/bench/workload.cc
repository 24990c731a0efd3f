#include "tools/bench/workload.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include "base/status_macros.h"
#include "model/io/tensor_io.h"
#include "model/net/preprocess.h"

namespace md::bench {

absl::StatusOr<ImageCrops> RandomCrops(const VisionConfig& config,
                                       Tiling tiling, uint64_t seed) {
  const int side = config.crop_size;
  const int64_t n_crops = 1 + tiling.n_tiles();
  return CatchTorch("making random crops", [&] {
    at::Generator generator = at::detail::createCPUGenerator(seed);
    return ImageCrops{at::randint(0, 256, {n_crops, side, side, 3}, generator,
                                  at::TensorOptions().dtype(at::kByte)),
                      tiling};
  });
}

absl::StatusOr<ImageCrops> RandomImageCrops(const VisionConfig& config,
                                            int width, int height,
                                            uint64_t seed) {
  ASSIGN_OR_RETURN(at::Tensor pixels_HWC, CatchTorch("making an image", [&] {
                     at::Generator generator =
                         at::detail::createCPUGenerator(seed);
                     return at::randint(0, 256, {height, width, 3}, generator,
                                        at::TensorOptions().dtype(at::kByte));
                   }));
  RgbImage image;
  image.width = width;
  image.height = height;
  const uint8_t* p = pixels_HWC.data_ptr<uint8_t>();
  image.pixels_HWC.assign(p, p + pixels_HWC.numel());
  return PrepareImage(image, config);
}

}  // namespace md::bench
