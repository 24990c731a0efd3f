// The most tokens per second this machine's arithmetic allows, so that the
// engine's throughput reads as a fraction of the hardware and not only as a
// ratio to one-at-a-time decoding.
//
// A batch of B streams turns a decode step from reading the weights (batch
// 1: the read-bandwidth floor) into computing with them, so batching gains
// at most (tokens/s at the compute peak) / (serial tokens/s). The peak is
// measured here, in the same run: the instruction the packed linear is made
// of (tdpbf16ps on AMX tiles where it runs them, else vdpbf16ps) on every
// compute thread, from registers only. The work
// per token counts every multiply-add of the text model a request needs:
// its prompt's prefill and its decode steps, each with its attention over
// the context, and the LM head once per generated token.
#ifndef MOONDREAM_TOOLS_BENCH_COMPUTE_CEILING_H_
#define MOONDREAM_TOOLS_BENCH_COMPUTE_CEILING_H_

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>

#include "model/config/config.h"
#include "model/io/weights.h"
#include "model/net/kernels/bf16_gemm.h"

namespace md::bench {

// GFLOP/s of isa's bf16 product instruction (2 flops per multiply-add)
// summed over n_threads pool threads, median of n_reps runs of ~0.1–0.2 s
// each; nullopt where this CPU lacks it (or for kNone).
std::optional<double> MeasureBf16PeakGflops(int n_threads, int n_reps,
                                            PackedLinearIsa isa);

// Flops of one request: prompt_tokens of prefill after a prefix of
// prefix_len positions, then n_tokens decode steps.
double RequestFlops(const Weights& weights, const TextConfig& text,
                    int prefix_len, int prompt_tokens, int n_tokens);

struct ComputeCeiling {
  double peak_gflops = 0;
  const char* instruction = "";  // "vdpbf16ps" or "tdpbf16ps"
  double gflop_per_token = 0;    // the request's flops / its generated tokens
  double serial_tokens_per_s = 0;

  double tokens_per_s() const {
    return gflop_per_token > 0 ? peak_gflops / gflop_per_token : 0;
  }
  double speedup() const {
    return serial_tokens_per_s > 0 ? tokens_per_s() / serial_tokens_per_s : 0;
  }
  nlohmann::json ToJson() const;
};

}  // namespace md::bench

#endif  // MOONDREAM_TOOLS_BENCH_COMPUTE_CEILING_H_
