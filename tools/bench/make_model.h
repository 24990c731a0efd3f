// `moondream-bench make-model`: writes a model directory with RANDOM weights
// in the real shapes of a released configuration, which the server and the
// CLI load with --model=DIR. Load tests then run the real model's shapes and
// speed without downloading weights; the directory carries the
// RANDOM-WEIGHTS marker, so the tools warn that its answers are meaningless.
#ifndef MOONDREAM_TOOLS_BENCH_MAKE_MODEL_H_
#define MOONDREAM_TOOLS_BENCH_MAKE_MODEL_H_

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace md::bench {

// Parses the subcommand's flags from `args` (everything after "make-model")
// and writes the directory.
absl::Status RunMakeModel(const std::vector<std::string>& args);

}  // namespace md::bench

#endif  // MOONDREAM_TOOLS_BENCH_MAKE_MODEL_H_
