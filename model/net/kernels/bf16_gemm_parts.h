// The pieces both microkernels of the packed bf16 linear share (the
// vdpbf16ps one in bf16_gemm.cc, the AMX one in bf16_gemm_amx.cc): the
// call's arguments, the epilogue every row goes through, and the vdpbf16ps
// accumulation of pairs. Internal: include from those two files only.
#ifndef MOONDREAM_MODEL_NET_KERNELS_BF16_GEMM_PARTS_H_
#define MOONDREAM_MODEL_NET_KERNELS_BF16_GEMM_PARTS_H_

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "model/net/kernels/bf16_gemm.h"
#include "model/net/kernels/x86_simd.h"

namespace md::gemm_parts {

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
// of kMaxRows and of kAmxRows, so no pass but the last has a row tail.
constexpr int64_t kRowsPerPass = 80 * kMaxRows;
// Rows of x per AMX block: a tile's 16 rows.
constexpr int64_t kAmxRows = 16;
static_assert(kRowsPerPass % kAmxRows == 0);

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
  // AMX only: the last M % 16 rows of x, zero padded to 16 rows of K (the
  // tiles load whole blocks), or null when M % 16 == 0.
  const uint16_t* x_tail_16K;
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

// acc[i][j] += x_i[i] · the panel's pair row w_p, 16 outputs 16j.. at a time.
template <int kRows>
MD_AVX512_BF16 inline void AccumulatePair(const __m512bh x_i[kRows],
                                          const uint16_t* w_p,
                                          __m512 acc[kRows][4]) {
  __m512bh w_j[4];
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    w_j[j] = (__m512bh)_mm512_loadu_si512(w_p + 32 * j);
  }
#pragma GCC unroll 6
  for (int i = 0; i < kRows; ++i) {
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      acc[i][j] = _mm512_dpbf16_ps(acc[i][j], x_i[i], w_j[j]);
    }
  }
}

// Calls panel_fn(panel, next) for the panels of pool task `task` in order;
// next is the task's following panel (null after its last: that one belongs
// to another task), which panel_fn prefetches while it computes.
template <typename PanelFn>
inline void ForEachPanelOfTask(const GemmArgs& a, int64_t task,
                               PanelFn panel_fn) {
  const int64_t begin = task * a.panels_per_task;
  const int64_t end = std::min(begin + a.panels_per_task, a.n_panels);
  for (int64_t panel = begin; panel < end; ++panel) {
    panel_fn(panel, panel + 1 < end
                        ? a.w_panels + (panel + 1) * a.k_pairs * kPairRowElems
                        : nullptr);
  }
}

// acc[i][j] (16 outputs 16j.. of row i) += Σ_k x[i][k]·w[n][k] over the
// pairs p_begin.. to the end of K, pair by pair in order: the per-row
// sequence is the same for every kRows. x rows have stride K; an odd K's last
// pair reads only x's last element (the packed weight has a zero beside it).
template <int kRows>
MD_AVX512_BF16 inline void AccumulatePanel(const uint16_t* x_RK, int64_t K,
                                           const uint16_t* w_panel,
                                           int64_t p_begin, int64_t k_pairs,
                                           const PanelPrefetch& pf,
                                           __m512 acc[kRows][4]) {
  const int64_t full_pairs = K / 2;
  __m512bh x_i[kRows];
  for (int64_t p = p_begin; p < full_pairs; ++p) {
    PrefetchStep(pf, p);
#pragma GCC unroll 6
    for (int i = 0; i < kRows; ++i)
      x_i[i] = BroadcastPair(x_RK + i * K + 2 * p);
    AccumulatePair<kRows>(x_i, w_panel + p * kPairRowElems, acc);
  }
  if (full_pairs < k_pairs) {
#pragma GCC unroll 6
    for (int i = 0; i < kRows; ++i) {
      x_i[i] = (__m512bh)_mm512_set1_epi32(x_RK[i * K + K - 1]);  // high half 0
    }
    AccumulatePair<kRows>(x_i, w_panel + full_pairs * kPairRowElems, acc);
  }
}

// Row block `block` of `n_blocks`'s share of prefetching `next_panel`.
inline PanelPrefetch PrefetchShare(const uint16_t* next_panel, int64_t k_pairs,
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

#endif  // defined(__x86_64__)

}  // namespace md::gemm_parts

#endif  // MOONDREAM_MODEL_NET_KERNELS_BF16_GEMM_PARTS_H_
