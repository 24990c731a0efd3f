// `moondream-bench model --parts=linear`: the packed bf16 linear against
// at::linear on the model's own layer shapes at several row counts, and the
// machine's streaming read bandwidth, which sets the floor of a batch-1
// decode step (every weight is read once per step).
#ifndef MOONDREAM_TOOLS_BENCH_MODEL_BENCH_LINEAR_H_
#define MOONDREAM_TOOLS_BENCH_MODEL_BENCH_LINEAR_H_

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/config/config.h"
#include "model/io/weights.h"
#include "tools/bench/stats.h"

namespace md::bench {

// One row count M of one shape: per-call times of both implementations,
// sampled alternately in the same loop.
struct LinearPoint {
  int64_t M = 0;
  Timing packed;
  Timing aten;
};

struct LinearShape {
  std::string name;  // e.g. "fc1"
  int64_t K = 0;     // inputs
  int64_t N = 0;     // outputs
  std::vector<LinearPoint> points;

  double Gflops(int64_t M, double ms) const {
    return ms > 0 ? 2.0 * M * K * N / (ms * 1e6) : 0;
  }
};

struct ReadBandwidth {
  int64_t bytes = 0;
  Timing pass;  // one read of all bytes

  double gb_per_s() const {
    const double ms = pass.median_ms();
    return ms > 0 ? bytes / (ms * 1e6) : 0;
  }
};

// Times the text decoder's linear shapes (qkv, proj, fc1, fc2) at each M.
// Each shape's weights are replicated until they exceed the last-level cache
// several times over and the calls cycle through the copies, so that small
// M reads weights from memory as a decode step does.
absl::StatusOr<std::vector<LinearShape>> BenchLinears(
    const TextConfig& text, const std::vector<int64_t>& row_counts, int n_reps);

// Median time of reading `bytes` once with the compute threads (the packed
// linear's worker pool), after one warm-up pass.
absl::StatusOr<ReadBandwidth> MeasureReadBandwidth(int64_t bytes, int n_reps);

// Bytes of the parameters a decode step reads: the text blocks, the final
// norm and the LM head (the rows of wte it embeds are negligible).
int64_t DecodeWeightBytes(const Weights& weights);

void PrintLinears(const std::vector<LinearShape>& shapes);
nlohmann::json LinearsJson(const std::vector<LinearShape>& shapes);

}  // namespace md::bench

#endif  // MOONDREAM_TOOLS_BENCH_MODEL_BENCH_LINEAR_H_
