// Inputs the benchmarks share: the random weights' seed, a query prompt's
// token ids and random image crops (the weights are random too, so only the
// shapes matter).
#ifndef MOONDREAM_TOOLS_BENCH_WORKLOAD_H_
#define MOONDREAM_TOOLS_BENCH_WORKLOAD_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "model/image/tiling.h"
#include "model/net/moondream.h"

namespace md::bench {

// The seed of the random weights every subcommand builds, so `make-model`
// writes by default the very weights `model` and `engine` time.
inline constexpr uint64_t kWeightSeed = 20250109;

// A query prompt's worth of tokens: "\n\nQuestion:" + 12 question tokens +
// "\n\nAnswer:" (20 in all; the ids only need to be valid).
inline constexpr int kPromptIds[] = {198,  198, 24361, 25,   1867,  318, 262,
                                     1048, 287, 428,   2939, 1804,  290, 810,
                                     30,   220, 198,   198,  33706, 25};
inline constexpr int kPromptTokens = sizeof(kPromptIds) / sizeof(kPromptIds[0]);

// The crops md::PrepareImage makes of a width × height image of uniform
// random pixels from `seed`: what the encoder gets for a real image of that
// size (a 1×1 tiling's local crop is then its global crop).
absl::StatusOr<ImageCrops> RandomImageCrops(const VisionConfig& config,
                                            int width, int height,
                                            uint64_t seed);

// Uniform random uint8 crops for `tiling` (global crop + tiles), from `seed`.
absl::StatusOr<ImageCrops> RandomCrops(const VisionConfig& config,
                                       Tiling tiling, uint64_t seed);

}  // namespace md::bench

#endif  // MOONDREAM_TOOLS_BENCH_WORKLOAD_H_
