// `moondream-bench engine`: the continuous-batching engine under load on
// random weights. In one run it measures aggregate decode throughput at
// 1..64 concurrent query streams against the same requests one at a time
// (that serial baseline repeated, its median and spread reported),
// time to first token with an image cache hit and miss, inter-token latency
// while new images keep arriving, and the scheduler's time per step outside
// model compute. --json writes a report with `speedup_32_vs_serial`.
#ifndef MOONDREAM_TOOLS_BENCH_ENGINE_BENCH_H_
#define MOONDREAM_TOOLS_BENCH_ENGINE_BENCH_H_

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace md::bench {

absl::Status RunEngineBench(const std::vector<std::string>& args);

}  // namespace md::bench

#endif  // MOONDREAM_TOOLS_BENCH_ENGINE_BENCH_H_
