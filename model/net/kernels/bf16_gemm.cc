#include "model/net/kernels/bf16_gemm.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <vector>

#include "model/net/kernels/worker_pool.h"
#include "model/net/kernels/x86_simd.h"

namespace md {
namespace {

// Letters: M rows of x, N outputs (rows of w), K the reduced dim; a panel is
// kPackedPanelCols = 64 consecutive outputs, a pair two consecutive k.

// The most rows of x one microkernel call computes: 6 rows × 4 vectors of
// 16 fp32 accumulators = 24 zmm, + 4 for the panel's weights + 1 broadcast
// of x, within the 32 registers. vdpbf16ps has ~6 cycles of latency and two
// pipes, so 24 independent chains keep both busy.
constexpr int kMaxRows = 6;
// Bytes of one packed pair row: 64 outputs × 2 k × 2 bytes.
constexpr int64_t kPairRowElems = kPackedPanelCols * 2;
// Tasks handed to the pool per thread: a few, so that a helper that wakes
// late (or a core shared with another process) does not hold up the call.
constexpr int64_t kTasksPerThread = 4;
// Rows per pass over the weights. Each panel is reused for all rows of a
// pass, and a pass's rows of x are re-read for every panel: this many rows
// of x (<= 4 MiB at K = 4096) stay in cache, where all rows of a vision
// batch (~9500 × K) would be re-read from memory once per panel. A multiple
// of kMaxRows, so no pass but the last has a row tail.
constexpr int64_t kRowsPerPass = 80 * kMaxRows;

std::atomic<bool> g_force_aten{false};
std::atomic<int> g_threads{0};

bool EnvForcesAten() {
  static const bool forced = [] {
    const char* v = std::getenv("MD_BF16_LINEAR");
    return v != nullptr && std::string_view(v) == "aten";
  }();
  return forced;
}

// The arguments of one call, shared read-only by its tasks.
struct GemmArgs {
  const uint16_t* x_MK;
  const uint16_t* w_panels;  // [n_panels][k_pairs][64][2]
  const uint16_t* b_N;       // or null
  uint16_t* y_MN;
  int64_t M, N, K;
  int64_t n_panels, k_pairs;
  int64_t panels_per_task;
  LinearActivation act;
};

#if defined(__x86_64__)

// bf16 bits in the low 16 of each 32-bit lane → fp32.
MD_AVX512_BF16 inline __m512 WidenBf16(__m256i v_u16) {
  return _mm512_castsi512_ps(
      _mm512_slli_epi32(_mm512_cvtepu16_epi32(v_u16), 16));
}

// fp32 → bf16 bits in the low 16 of each lane, round-to-nearest-even and NaN
// to quiet NaN: c10::BFloat16's conversion (denormals kept, unlike
// vcvtneps2bf16, which flushes them).
MD_AVX512_BF16 inline __m512i RoundToBf16Lanes(__m512 v) {
  const __m512i bits = _mm512_castps_si512(v);
  const __m512i lsb =
      _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  const __m512i rounded = _mm512_srli_epi32(
      _mm512_add_epi32(_mm512_add_epi32(bits, _mm512_set1_epi32(0x7fff)), lsb),
      16);
  const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  return _mm512_mask_mov_epi32(rounded, nan, _mm512_set1_epi32(0x7fc0));
}

// e^t for fp32 lanes t <= 0, within ~2 ulp: t = n·ln2 + r with |r| <=
// ln2/2, e^r by its degree-7 Taylor polynomial (truncation < 1e-8
// relative), scaled by 2^n (gradually into denormals, then 0). t is clamped
// below at −150, where e^t is 0 in fp32 anyway, so the reduction stays
// exact; NaN passes through.
MD_AVX512_BF16 inline __m512 ExpNonPositive(__m512 t) {
  t = _mm512_max_ps(_mm512_set1_ps(-150.0f), t);
  const __m512 n = _mm512_roundscale_ps(
      _mm512_mul_ps(t, _mm512_set1_ps(1.44269504088896341f)),
      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  // ln2 in two parts (Cody-Waite): n·ln2_hi is exact for |n| < 2^15.
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), t);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.0f / 5040);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

// gelu_tanh(v) = ½·v·(1 + tanh(u)), u = √(2/π)·(v + 0.044715·v³), which is
// v·σ(2u). With a = e^(−|2u|) in (0, 1]: v / (1 + a) for u >= 0 and
// v·a / (1 + a) for u < 0 — no overflow, and no cancellation in the
// negative tail, where ATen's 1 + tanh(u) loses every digit. ±inf and NaN
// end where ATen's formula does (inf, NaN, NaN).
MD_AVX512_BF16 inline __m512 GeluTanh(__m512 v) {
  const __m512 v3 = _mm512_mul_ps(_mm512_mul_ps(v, v), v);
  const __m512 inner = _mm512_fmadd_ps(_mm512_set1_ps(0.044715f), v3, v);
  const __m512 two_u =
      _mm512_mul_ps(_mm512_set1_ps(2.0f * 0.7978845608028654f), inner);
  const __m512 a =
      ExpNonPositive(_mm512_or_ps(two_u, _mm512_set1_ps(-0.0f)));  // −|2u|
  const __mmask16 negative =
      _mm512_cmp_ps_mask(two_u, _mm512_setzero_ps(), _CMP_LT_OQ);
  const __m512 numerator = _mm512_mask_mul_ps(v, negative, v, a);
  return _mm512_div_ps(numerator, _mm512_add_ps(_mm512_set1_ps(1.0f), a));
}

// What one panel's epilogue needs: its bias as fp32 and which of its 64
// columns exist (the last panel of N % 64 != 0 is partly padding).
struct PanelColumns {
  __m512 bias[4];
  __mmask16 valid[4];
  bool has_bias;
};

MD_AVX512_BF16 inline PanelColumns ColumnsOf(const GemmArgs& a, int64_t n0) {
  PanelColumns c;
  c.has_bias = a.b_N != nullptr;
  const int64_t n_valid = std::min<int64_t>(kPackedPanelCols, a.N - n0);
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    const int64_t n_j = std::clamp<int64_t>(n_valid - 16 * j, 0, 16);
    c.valid[j] = static_cast<__mmask16>((1u << n_j) - 1);
    c.bias[j] = c.has_bias ? WidenBf16(_mm256_maskz_loadu_epi16(
                                 c.valid[j], a.b_N + n0 + 16 * j))
                           : _mm512_setzero_ps();
  }
  return c;
}

// Bias, activation, rounding and the store of one row's 64 outputs. The same
// code for every row, whatever block it was computed in.
MD_AVX512_BF16 inline void StoreRow(const __m512 acc[4], const PanelColumns& c,
                                    LinearActivation act, uint16_t* y_row) {
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    __m512 v = c.has_bias ? _mm512_add_ps(acc[j], c.bias[j]) : acc[j];
    __m512i bf16 = RoundToBf16Lanes(v);
    if (act == LinearActivation::kGeluTanh) {
      // As the unfused path: GELU reads the bf16 pre-activation.
      v = GeluTanh(_mm512_castsi512_ps(_mm512_slli_epi32(bf16, 16)));
      bf16 = RoundToBf16Lanes(v);
    }
    _mm256_mask_storeu_epi16(y_row + 16 * j, c.valid[j],
                             _mm512_cvtepi32_epi16(bf16));
  }
}

// The pair (x[2p], x[2p+1]) of a row in both bf16 halves of every lane.
MD_AVX512_BF16 inline __m512bh BroadcastPair(const uint16_t* x_pair) {
  uint32_t pair;
  std::memcpy(&pair, x_pair, sizeof(pair));
  return (__m512bh)_mm512_set1_epi32(static_cast<int>(pair));
}

// The share of the next panel one row block prefetches into L2 while it
// computes: cache lines [begin, end) of it, lines_per_pair of them per pair
// step. Spread over all row blocks of a panel, the next panel's memory reads
// overlap this panel's compute instead of following it.
struct PanelPrefetch {
  const char* next = nullptr;  // null: nothing to prefetch
  int64_t begin = 0, end = 0;
  int64_t lines_per_pair = 0;
};

MD_AVX512_BF16 inline void PrefetchStep(const PanelPrefetch& pf, int64_t p) {
  if (pf.next == nullptr) return;
  for (int64_t c = 0; c < pf.lines_per_pair; ++c) {
    const int64_t line = pf.begin + p * pf.lines_per_pair + c;
    if (line >= pf.end) return;
    _mm_prefetch(pf.next + 64 * line, _MM_HINT_T1);
  }
}

// acc[i][j] (16 outputs 16j.. of row i) += Σ_k x[i][k]·w[n][k] over the
// whole K, pair by pair in order: the per-row sequence is the same for
// every kRows. x rows have stride K; an odd K's last pair reads only x's
// last element (the packed weight has a zero beside it).
template <int kRows>
MD_AVX512_BF16 inline void AccumulatePanel(const uint16_t* x_RK, int64_t K,
                                           const uint16_t* w_panel,
                                           int64_t k_pairs,
                                           const PanelPrefetch& pf,
                                           __m512 acc[kRows][4]) {
  const int64_t full_pairs = K / 2;
  for (int64_t p = 0; p < full_pairs; ++p) {
    PrefetchStep(pf, p);
    const uint16_t* w_p = w_panel + p * kPairRowElems;
    __m512bh w_j[4];
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      w_j[j] = (__m512bh)_mm512_loadu_si512(w_p + 32 * j);
    }
#pragma GCC unroll 6
    for (int i = 0; i < kRows; ++i) {
      const __m512bh x_i = BroadcastPair(x_RK + i * K + 2 * p);
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
        acc[i][j] = _mm512_dpbf16_ps(acc[i][j], x_i, w_j[j]);
      }
    }
  }
  if (full_pairs < k_pairs) {
    const uint16_t* w_p = w_panel + full_pairs * kPairRowElems;
    __m512bh w_j[4];
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      w_j[j] = (__m512bh)_mm512_loadu_si512(w_p + 32 * j);
    }
#pragma GCC unroll 6
    for (int i = 0; i < kRows; ++i) {
      const __m512bh x_i =
          (__m512bh)_mm512_set1_epi32(x_RK[i * K + K - 1]);  // high half 0
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
        acc[i][j] = _mm512_dpbf16_ps(acc[i][j], x_i, w_j[j]);
      }
    }
  }
}

// Rows [m0, m0 + kRows) of the panel starting at output n0.
template <int kRows>
MD_AVX512_BF16 void RowBlock(const GemmArgs& a, const uint16_t* w_panel,
                             const PanelColumns& cols, const PanelPrefetch& pf,
                             int64_t m0, int64_t n0) {
  __m512 acc[kRows][4];
#pragma GCC unroll 6
  for (int i = 0; i < kRows; ++i) {
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) acc[i][j] = _mm512_setzero_ps();
  }
  AccumulatePanel<kRows>(a.x_MK + m0 * a.K, a.K, w_panel, a.k_pairs, pf, acc);
#pragma GCC unroll 6
  for (int i = 0; i < kRows; ++i) {
    StoreRow(acc[i], cols, a.act, a.y_MN + (m0 + i) * a.N + n0);
  }
}

// Row block `block` of `n_blocks`'s share of prefetching `next_panel`.
PanelPrefetch PrefetchShare(const uint16_t* next_panel, int64_t k_pairs,
                            int64_t block, int64_t n_blocks) {
  PanelPrefetch pf;
  if (next_panel == nullptr || k_pairs == 0) return pf;
  const int64_t n_lines = k_pairs * kPairRowElems * 2 / 64;
  const int64_t per_block = (n_lines + n_blocks - 1) / n_blocks;
  pf.next = reinterpret_cast<const char*>(next_panel);
  pf.begin = block * per_block;
  pf.end = std::min(pf.begin + per_block, n_lines);
  pf.lines_per_pair = (per_block + k_pairs - 1) / k_pairs;
  return pf;
}

// Every row of x against one panel. The panel is read from memory by the
// first row block and from cache by the rest; meanwhile the blocks prefetch
// next_panel (or null).
MD_AVX512_BF16 void Panel(const GemmArgs& a, int64_t panel,
                          const uint16_t* next_panel) {
  const int64_t n0 = panel * kPackedPanelCols;
  const uint16_t* w_panel = a.w_panels + panel * a.k_pairs * kPairRowElems;
  const PanelColumns cols = ColumnsOf(a, n0);
  const int64_t n_blocks = (a.M + kMaxRows - 1) / kMaxRows;
  int64_t m0 = 0;
  for (int64_t block = 0; m0 + kMaxRows <= a.M; m0 += kMaxRows, ++block) {
    RowBlock<kMaxRows>(a, w_panel, cols,
                       PrefetchShare(next_panel, a.k_pairs, block, n_blocks),
                       m0, n0);
  }
  const PanelPrefetch last =
      PrefetchShare(next_panel, a.k_pairs, n_blocks - 1, n_blocks);
  switch (a.M - m0) {
    case 1:
      RowBlock<1>(a, w_panel, cols, last, m0, n0);
      break;
    case 2:
      RowBlock<2>(a, w_panel, cols, last, m0, n0);
      break;
    case 3:
      RowBlock<3>(a, w_panel, cols, last, m0, n0);
      break;
    case 4:
      RowBlock<4>(a, w_panel, cols, last, m0, n0);
      break;
    case 5:
      RowBlock<5>(a, w_panel, cols, last, m0, n0);
      break;
    default:
      break;
  }
}

MD_AVX512_BF16 __attribute__((noinline)) void PanelTask(const void* context,
                                                        int64_t task) {
  const GemmArgs& a = *static_cast<const GemmArgs*>(context);
  const int64_t begin = task * a.panels_per_task;
  const int64_t end = std::min(begin + a.panels_per_task, a.n_panels);
  for (int64_t panel = begin; panel < end; ++panel) {
    // The task's next panel; the one after its last belongs to another task.
    const uint16_t* next =
        panel + 1 < end ? a.w_panels + (panel + 1) * a.k_pairs * kPairRowElems
                        : nullptr;
    Panel(a, panel, next);
  }
}

#endif  // defined(__x86_64__)

bool IsDenseCpuBf16(const at::Tensor& t) {
  return t.defined() && t.device().is_cpu() && t.layout() == at::kStrided &&
         t.scalar_type() == at::kBFloat16;
}

int ThreadsForCall() {
  const int n = g_threads.load(std::memory_order_relaxed);
  return n > 0 ? n : at::get_num_threads();
}

// Whether the call can be served: shapes, dtypes, no autograd graph wanted.
bool Applies(const at::Tensor& x, const at::Tensor& w_packed, int64_t n_out,
             const at::Tensor& b) {
  if (!PackedLinearBf16Enabled()) return false;
  if (!IsDenseCpuBf16(x) || x.dim() < 1 || !IsDenseCpuBf16(w_packed) ||
      w_packed.dim() != 4 || !w_packed.is_contiguous()) {
    return false;
  }
  const int64_t K = x.size(-1);
  if (n_out < 0 || w_packed.size(0) * kPackedPanelCols < n_out ||
      w_packed.size(0) * kPackedPanelCols >= n_out + kPackedPanelCols ||
      w_packed.size(1) != (K + 1) / 2 || w_packed.size(2) != kPackedPanelCols ||
      w_packed.size(3) != 2) {
    return false;
  }
  if (b.defined() && (!IsDenseCpuBf16(b) || b.dim() != 1 ||
                      b.size(0) != n_out || !b.is_contiguous())) {
    return false;
  }
  // No autograd graph is recorded here: leave training to at::linear.
  return !(at::GradMode::is_enabled() &&
           (x.requires_grad() || (b.defined() && b.requires_grad())));
}

}  // namespace

bool PackedLinearBf16Enabled() {
  return CpuHasAvx512Bf16() && !EnvForcesAten() &&
         !g_force_aten.load(std::memory_order_relaxed);
}

void ForceAtenLinear(bool force) { g_force_aten.store(force); }

void SetPackedLinearThreads(int n_threads) {
  g_threads.store(std::max(n_threads, 0));
}

at::Tensor PackLinearWeightBf16(const at::Tensor& w_NK) {
  if (!CpuHasAvx512Bf16() || !IsDenseCpuBf16(w_NK) || w_NK.dim() != 2) {
    return {};
  }
  const int64_t N = w_NK.size(0), K = w_NK.size(1);
  const int64_t n_panels = (N + kPackedPanelCols - 1) / kPackedPanelCols;
  const int64_t k_pairs = (K + 1) / 2;
  at::Tensor padded_NK =
      at::zeros({n_panels * kPackedPanelCols, 2 * k_pairs}, w_NK.options());
  padded_NK.narrow(0, 0, N).narrow(1, 0, K).copy_(w_NK);
  // [panel][col][pair][2] → [panel][pair][col][2].
  return padded_NK.view({n_panels, kPackedPanelCols, k_pairs, 2})
      .permute({0, 2, 1, 3})
      .contiguous();
}

at::Tensor PackedLinearBf16(const at::Tensor& x, const at::Tensor& w_packed,
                            int64_t n_out, const at::Tensor& b,
                            LinearActivation act) {
  if (!Applies(x, w_packed, n_out, b)) return {};
  const at::Tensor x_c = x.contiguous();
  std::vector<int64_t> y_sizes(x.sizes().begin(), x.sizes().end());
  y_sizes.back() = n_out;
  at::Tensor y = at::empty(y_sizes, x.options());
  const int64_t K = x.size(-1);
  int64_t M = 1;
  for (int64_t d = 0; d + 1 < x.dim(); ++d) M *= x.size(d);
  if (y.numel() == 0) return y;
  if (K == 0) {
    // An empty sum: only the bias and the activation remain.
    y.copy_(b.defined() ? b.expand_as(y) : at::zeros_like(y));
    return act == LinearActivation::kGeluTanh ? at::gelu(y, "tanh") : y;
  }
#if defined(__x86_64__)
  GemmArgs args;
  args.x_MK = static_cast<const uint16_t*>(x_c.data_ptr());
  args.w_panels = static_cast<const uint16_t*>(w_packed.data_ptr());
  args.b_N = b.defined() ? static_cast<const uint16_t*>(b.data_ptr()) : nullptr;
  args.y_MN = static_cast<uint16_t*>(y.data_ptr());
  args.M = M;
  args.N = n_out;
  args.K = K;
  args.n_panels = w_packed.size(0);
  args.k_pairs = w_packed.size(1);
  args.act = act;
  const int n_threads = std::max(1, ThreadsForCall());
  const int64_t target_tasks =
      std::min<int64_t>(args.n_panels, kTasksPerThread * n_threads);
  args.panels_per_task = (args.n_panels + target_tasks - 1) / target_tasks;
  const int64_t n_tasks =
      (args.n_panels + args.panels_per_task - 1) / args.panels_per_task;
  // Rows are independent, so passes change no bit of any row.
  for (int64_t m0 = 0; m0 < M; m0 += kRowsPerPass) {
    GemmArgs pass = args;
    pass.M = std::min(kRowsPerPass, M - m0);
    pass.x_MK = args.x_MK + m0 * K;
    pass.y_MN = args.y_MN + m0 * n_out;
    WorkerPool::Shared().Run(n_threads, n_tasks, &PanelTask, &pass);
  }
#endif
  return y;
}

at::Tensor LinearWithPacked(const at::Tensor& x, const at::Tensor& w_NK,
                            const at::Tensor& w_packed, const at::Tensor& b,
                            LinearActivation act) {
  // Named for op profiles (tools/bench/op_profile.h): the packed kernel is
  // not an ATen op, so it would otherwise show only as unaccounted time.
  RECORD_USER_SCOPE("md::linear");
  if (w_packed.defined()) {
    at::Tensor y = PackedLinearBf16(x, w_packed, w_NK.size(0), b, act);
    if (y.defined()) return y;
  }
  at::Tensor y = at::linear(x, w_NK, b);
  return act == LinearActivation::kGeluTanh ? at::gelu(y, "tanh") : y;
}

}  // namespace md
