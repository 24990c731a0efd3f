#include "tools/bench/model_bench_linear.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "absl/strings/str_format.h"
#include "model/io/tensor_io.h"
#include "model/net/kernels/bf16_gemm.h"
#include "model/net/kernels/worker_pool.h"

#if defined(__x86_64__)
#include <emmintrin.h>
#endif

namespace md::bench {
namespace {

// Weight copies cycled through total at least this much: several times any
// last-level cache, so a small-M call streams its weights from memory.
constexpr int64_t kMinCycledBytes = int64_t{256} << 20;

// A shape's weights, their packed copies and one x per row count.
struct LinearCase {
  std::vector<at::Tensor> w_NK, packed, b_N;
};

LinearCase MakeCase(int64_t K, int64_t N) {
  LinearCase c;
  const int64_t bytes = 2 * K * N;
  const int64_t n_copies = std::max<int64_t>(
      1, (kMinCycledBytes + bytes - 1) / std::max<int64_t>(bytes, 1));
  for (int64_t i = 0; i < n_copies; ++i) {
    c.w_NK.push_back(
        (at::randn({N, K}) / std::sqrt(double(K))).to(at::kBFloat16));
    c.packed.push_back(PackLinearWeightBf16(c.w_NK.back()));
    c.b_N.push_back((at::randn({N}) * 0.1).to(at::kBFloat16));
  }
  return c;
}

// Mean ms per call of `call(i)` over one pass through the copies.
template <typename Call>
double MsPerCall(int64_t n_copies, Call call) {
  Stopwatch watch;
  for (int64_t i = 0; i < n_copies; ++i) call(i);
  return watch.ElapsedMs() / n_copies;
}

LinearPoint BenchPoint(const LinearCase& c, int64_t M, int64_t K, int n_reps) {
  LinearPoint point;
  point.M = M;
  const at::Tensor x_MK = at::randn({M, K}).to(at::kBFloat16);
  const int64_t n = static_cast<int64_t>(c.w_NK.size());
  const int64_t N = c.w_NK[0].size(0);
  auto packed = [&](int64_t i) {
    return PackedLinearBf16(x_MK, c.packed[i], N, c.b_N[i]);
  };
  auto aten = [&](int64_t i) { return at::linear(x_MK, c.w_NK[i], c.b_N[i]); };
  for (int rep = 0; rep <= n_reps; ++rep) {  // rep 0 warms up
    const double packed_ms = MsPerCall(n, packed);
    const double aten_ms = MsPerCall(n, aten);
    if (rep == 0) continue;
    point.packed.samples_ms.push_back(packed_ms);
    point.aten.samples_ms.push_back(aten_ms);
  }
  return point;
}

// Sums 8-byte words of [begin, end) with four independent SSE2 chains, so
// the loads, not the adds, bound it.
uint64_t SumWords(const uint64_t* begin, const uint64_t* end) {
#if defined(__x86_64__)
  __m128i acc[4] = {_mm_setzero_si128(), _mm_setzero_si128(),
                    _mm_setzero_si128(), _mm_setzero_si128()};
  const uint64_t* p = begin;
  for (; p + 8 <= end; p += 8) {
    for (int j = 0; j < 4; ++j) {
      acc[j] = _mm_add_epi64(
          acc[j], _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2 * j)));
    }
  }
  uint64_t lanes[8];
  std::memcpy(lanes, acc, sizeof(lanes));
  uint64_t sum = 0;
  for (uint64_t lane : lanes) sum += lane;
#else
  uint64_t sum = 0;
  const uint64_t* p = begin;
#endif
  for (; p < end; ++p) sum += *p;
  return sum;
}

struct ReadJob {
  const uint64_t* words;
  int64_t n_words;
  int64_t n_tasks;
  std::vector<uint64_t>* sums;
};

void ReadTask(const void* context, int64_t task) {
  const ReadJob& job = *static_cast<const ReadJob*>(context);
  const int64_t per_task = (job.n_words + job.n_tasks - 1) / job.n_tasks;
  const int64_t begin = std::min(task * per_task, job.n_words);
  const int64_t end = std::min(begin + per_task, job.n_words);
  (*job.sums)[task] = SumWords(job.words + begin, job.words + end);
}

}  // namespace

absl::StatusOr<std::vector<LinearShape>> BenchLinears(
    const TextConfig& text, const std::vector<int64_t>& row_counts,
    int n_reps) {
  if (!PackedLinearBf16Enabled()) {
    return absl::FailedPreconditionError(
        "the packed bf16 linear does not run here (no AVX512-BF16, or "
        "MD_BF16_LINEAR=aten)");
  }
  const int64_t d = text.dim;
  std::vector<LinearShape> shapes = {{"qkv", d, 3 * d, {}},
                                     {"attn proj", d, d, {}},
                                     {"mlp fc1", d, 4 * d, {}},
                                     {"mlp fc2", 4 * d, d, {}}};
  return CatchTorch("timing linears", [&] {
    at::NoGradGuard no_grad;
    at::manual_seed(1);
    for (LinearShape& shape : shapes) {
      const LinearCase c = MakeCase(shape.K, shape.N);
      for (int64_t M : row_counts) {
        shape.points.push_back(BenchPoint(c, M, shape.K, n_reps));
      }
    }
    return shapes;
  });
}

absl::StatusOr<ReadBandwidth> MeasureReadBandwidth(int64_t bytes, int n_reps) {
  ReadBandwidth result;
  const int64_t n_words = std::max<int64_t>(bytes / 8, 1);
  result.bytes = n_words * 8;
  std::vector<uint64_t> words(n_words, 1);  // touched: pages are mapped
  const int n_threads = at::get_num_threads();
  std::vector<uint64_t> sums(4 * n_threads);
  const ReadJob job{words.data(), n_words, static_cast<int64_t>(sums.size()),
                    &sums};
  uint64_t total = 0;
  for (int rep = 0; rep <= n_reps; ++rep) {  // rep 0 warms up
    Stopwatch watch;
    WorkerPool::Shared().Run(n_threads, job.n_tasks, &ReadTask, &job);
    const double ms = watch.ElapsedMs();
    for (uint64_t s : sums) total += s;
    if (rep > 0) result.pass.samples_ms.push_back(ms);
  }
  if (total != static_cast<uint64_t>(n_words) * (n_reps + 1)) {
    return absl::InternalError("bandwidth read summed the wrong value");
  }
  return result;
}

int64_t DecodeWeightBytes(const Weights& weights) {
  const TextWeights& t = weights.text;
  int64_t bytes = 0;
  auto add = [&](const at::Tensor& tensor) {
    if (tensor.defined()) bytes += tensor.nbytes();
  };
  auto add_linear = [&](const LinearWeights& l) {
    add(l.weight);
    add(l.bias);
  };
  for (const TextBlockWeights& block : t.blocks) {
    add(block.ln.weight);
    add(block.ln.bias);
    add_linear(block.attn.qkv);
    add_linear(block.attn.proj);
    add_linear(block.mlp.fc1);
    add_linear(block.mlp.fc2);
  }
  add(t.post_ln.weight);
  add(t.post_ln.bias);
  add_linear(t.lm_head);
  return bytes;
}

void PrintLinears(const std::vector<LinearShape>& shapes) {
  std::printf(
      "  bf16 linear, GFLOP/s (median per call; weights cycled from memory): "
      "packed kernel (%s) vs at::linear\n",
      PackedLinearIsaName(PackedLinearBf16Isa()));
  for (const LinearShape& shape : shapes) {
    std::printf("    %-10s K=%-5lld N=%-5lld", shape.name.c_str(),
                static_cast<long long>(shape.K),
                static_cast<long long>(shape.N));
    for (const LinearPoint& p : shape.points) {
      std::printf("  M=%-3lld %6.1f vs %6.1f (%.2fx)",
                  static_cast<long long>(p.M),
                  shape.Gflops(p.M, p.packed.median_ms()),
                  shape.Gflops(p.M, p.aten.median_ms()),
                  p.aten.median_ms() / p.packed.median_ms());
    }
    std::printf("\n");
  }
  std::fflush(stdout);
}

nlohmann::json LinearsJson(const std::vector<LinearShape>& shapes) {
  nlohmann::json out = nlohmann::json::array();
  for (const LinearShape& shape : shapes) {
    nlohmann::json points = nlohmann::json::array();
    for (const LinearPoint& p : shape.points) {
      const double packed_ms = p.packed.median_ms();
      const double aten_ms = p.aten.median_ms();
      points.push_back(
          {{"M", p.M},
           {"packed_ms", packed_ms},
           {"aten_ms", aten_ms},
           {"packed_gflops", shape.Gflops(p.M, packed_ms)},
           {"aten_gflops", shape.Gflops(p.M, aten_ms)},
           {"packed_speedup", packed_ms > 0 ? aten_ms / packed_ms : 0},
           {"packed_samples_ms", p.packed.samples_ms},
           {"aten_samples_ms", p.aten.samples_ms}});
    }
    out.push_back({{"layer", shape.name},
                   {"K", shape.K},
                   {"N", shape.N},
                   {"points", points}});
  }
  return out;
}

}  // namespace md::bench
