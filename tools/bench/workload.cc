#include "tools/bench/workload.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include "model/io/tensor_io.h"

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

}  // namespace md::bench
