#include "tools/bench/compute_ceiling.h"

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <vector>

#include "model/net/kernels/worker_pool.h"
#include "model/net/kernels/x86_simd.h"
#include "tools/bench/stats.h"

namespace md::bench {
namespace {

// Independent accumulator chains: enough to cover vdpbf16ps's latency on
// both of its pipes, few enough to stay in registers.
constexpr int kChains = 24;
constexpr int64_t kFlopsPerInstruction = 16 * 2 * 2;  // lanes × pair × fma
constexpr int64_t kIterations = 4'000'000;

struct PeakJob {
  std::vector<float>* sinks;  // one per task: keeps the work observable
};

#if defined(__x86_64__)
MD_AVX512_BF16 float DotChains(int64_t iterations) {
  __m512 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(1e-9f * i);
  __m512bh a = (__m512bh)_mm512_set1_epi32(0x3f803f80);  // (1.0, 1.0)
  const __m512bh b = (__m512bh)_mm512_set1_epi32(0x3c003c00);
  for (int64_t it = 0; it < iterations; ++it) {
#pragma GCC unroll 24
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
    // Opaque to the compiler, so the loop is not folded.
    __asm__ volatile("" : "+v"(a));
  }
  float sum = 0;
  for (int i = 0; i < kChains; ++i) sum += _mm512_reduce_add_ps(acc[i]);
  return sum;
}

void PeakTask(const void* context, int64_t task) {
  const PeakJob& job = *static_cast<const PeakJob*>(context);
  (*job.sinks)[task] = DotChains(kIterations);
}

// tdpbf16ps: 16 rows × 16 outputs × 32 k per instruction, into four
// independent accumulator tiles (two x tiles × two weight tiles, as a
// kernel's block reuses each load).
constexpr int64_t kAmxFlopsPerInstruction = 16 * 16 * 32 * 2;
constexpr int64_t kAmxIterations = 1'000'000;
constexpr int kAmxProductsPerIteration = 4;

MD_AMX_BF16 float TileProducts(int64_t iterations) {
  static const AmxTileConfig config = FullTiles(8);
  _tile_loadconfig(&config);
  alignas(64) uint16_t ones[16 * 32];
  std::fill(std::begin(ones), std::end(ones), uint16_t{0x3f80});  // 1.0
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  _tile_loadd(4, ones, 64);
  _tile_loadd(5, ones, 64);
  _tile_loadd(6, ones, 64);
  _tile_loadd(7, ones, 64);
  for (int64_t it = 0; it < iterations; ++it) {
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  alignas(64) float out[16 * 16];
  _tile_stored(0, out, 64);
  _tile_release();
  return out[0];
}

void AmxPeakTask(const void* context, int64_t task) {
  const PeakJob& job = *static_cast<const PeakJob*>(context);
  (*job.sinks)[task] = TileProducts(kAmxIterations);
}
#endif

// Median GFLOP/s of `task` on n_threads (rep 0 warms up the clocks).
std::optional<double> MeasurePeak(WorkerPool::TaskFn task,
                                  double flops_per_thread, int n_threads,
                                  int n_reps) {
  std::vector<float> sinks(n_threads);
  const PeakJob job{&sinks};
  std::vector<double> gflops;
  for (int rep = 0; rep <= n_reps; ++rep) {
    Stopwatch watch;
    WorkerPool::Shared().Run(n_threads, n_threads, task, &job);
    const double ms = watch.ElapsedMs();
    if (rep > 0 && ms > 0) {
      gflops.push_back(flops_per_thread * n_threads / (ms * 1e6));
    }
  }
  if (gflops.empty()) return std::nullopt;
  return Median(gflops);
}

}  // namespace

std::optional<double> MeasureBf16PeakGflops(int n_threads, int n_reps,
                                            PackedLinearIsa isa) {
#if defined(__x86_64__)
  if (n_threads < 1) return std::nullopt;
  switch (isa) {
    case PackedLinearIsa::kAmxBf16:
      if (!CpuHasAmxBf16()) return std::nullopt;
      return MeasurePeak(&AmxPeakTask,
                         static_cast<double>(kAmxIterations) *
                             kAmxProductsPerIteration * kAmxFlopsPerInstruction,
                         n_threads, n_reps);
    case PackedLinearIsa::kAvx512Bf16:
      if (!CpuHasAvx512Bf16()) return std::nullopt;
      return MeasurePeak(
          &PeakTask,
          static_cast<double>(kIterations) * kChains * kFlopsPerInstruction,
          n_threads, n_reps);
    case PackedLinearIsa::kNone:
      break;
  }
  return std::nullopt;
#else
  (void)n_threads;
  (void)n_reps;
  (void)isa;
  return std::nullopt;
#endif
}

double RequestFlops(const Weights& weights, const TextConfig& text,
                    int prefix_len, int prompt_tokens, int n_tokens) {
  double block_params = 0;
  for (const TextBlockWeights& block : weights.text.blocks) {
    for (const LinearWeights* l :
         {&block.attn.qkv, &block.attn.proj, &block.mlp.fc1, &block.mlp.fc2}) {
      block_params += static_cast<double>(l->weight.numel());
    }
  }
  const double head_params =
      static_cast<double>(weights.text.lm_head.weight.numel());
  // q·K and p·V over `context` keys: 2 × 2 × dim flops per key per layer.
  auto attention = [&](double context) {
    return 4.0 * text.dim * text.n_layers * context;
  };
  double flops = 0;
  for (int t = 0; t < prompt_tokens; ++t) {
    flops += 2 * block_params + attention(prefix_len + t + 1);
  }
  for (int t = 0; t < n_tokens; ++t) {
    flops += 2 * (block_params + head_params) +
             attention(prefix_len + prompt_tokens + t + 1);
  }
  return flops;
}

nlohmann::json ComputeCeiling::ToJson() const {
  return {{"bf16_peak_gflops", peak_gflops},
          {"peak_instruction", instruction},
          {"gflop_per_token", gflop_per_token},
          {"tokens_per_s", tokens_per_s()},
          {"serial_tokens_per_s", serial_tokens_per_s},
          {"speedup_vs_serial", speedup()}};
}

}  // namespace md::bench
