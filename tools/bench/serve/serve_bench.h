// moondream-bench serve: load-tests a running server over the network, the
// way `vllm bench serve` tests vLLM, with vLLM's flag names and metric
// definitions (tools/bench/serve/metrics.h).
#ifndef MOONDREAM_TOOLS_BENCH_SERVE_SERVE_BENCH_H_
#define MOONDREAM_TOOLS_BENCH_SERVE_SERVE_BENCH_H_

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace md::bench {

absl::Status RunServeBench(const std::vector<std::string>& args);

}  // namespace md::bench

#endif  // MOONDREAM_TOOLS_BENCH_SERVE_SERVE_BENCH_H_
