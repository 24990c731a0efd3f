// `moondream-bench image-prefix`: the time to turn one image's uint8 crops
// into its 730-position prefix KV (md::EncodeImage: vision encoder,
// reconstruction and projection, then the prefill of BOS + image
// embeddings), the work the engine's image encoder thread does per image.
// Random weights of a preset's shapes; the numbers print as JSON, so
// tools/bench/vision_vs_reference.py can drive it (--stdin) and time the
// reference PyTorch implementation in alternation with it.
#ifndef MOONDREAM_TOOLS_BENCH_IMAGE_PREFIX_BENCH_H_
#define MOONDREAM_TOOLS_BENCH_IMAGE_PREFIX_BENCH_H_

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace md::bench {

// Parses the subcommand's flags from `args` (everything after
// "image-prefix"), runs it and prints JSON on stdout.
absl::Status RunImagePrefixBench(const std::vector<std::string>& args);

}  // namespace md::bench

#endif  // MOONDREAM_TOOLS_BENCH_IMAGE_PREFIX_BENCH_H_
