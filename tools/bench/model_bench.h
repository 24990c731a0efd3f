// `moondream-bench model`: speed of the model's building blocks (vision
// encode, prefill, batched decode) on random weights, no engine involved.
#ifndef MOONDREAM_TOOLS_BENCH_MODEL_BENCH_H_
#define MOONDREAM_TOOLS_BENCH_MODEL_BENCH_H_

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace md::bench {

// Parses the subcommand's flags from `args` (everything after "model"), runs
// the benchmark and prints its table; with --json also writes the numbers.
absl::Status RunModelBench(const std::vector<std::string>& args);

}  // namespace md::bench

#endif  // MOONDREAM_TOOLS_BENCH_MODEL_BENCH_H_
