#include "model/net/kernels/bf16_linear.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <vector>

#include "model/net/kernels/x86_simd.h"

namespace md {

#if defined(__x86_64__)
namespace {

// Letters: M rows of x, N rows of w (output features), K the reduced dim.
// Kernels are compiled for AVX512-BF16 only; the rest of the file stays
// baseline x86-64 and calls them after HasAvx512Bf16().

// bf16 values per zmm register; vdpbf16ps sums them pairwise into 16 fp32s.
constexpr int64_t kLanes = 32;
// Weight rows computed together (a block): each weight vector loaded serves
// kRowsM rows of x, and four accumulation chains hide vdpbf16ps latency.
constexpr int kRowsN = 4;
// x rows computed together per pass over a block of weight rows: 4×4
// accumulators + 4 weight + 4 x registers fit in the 32 zmm registers.
constexpr int kRowsM = 4;
// Each task streams at least this much of w, so starting it pays off.
constexpr int64_t kMinBytesPerTask = 256 * 1024;

// Sums each of a[0..3] across its 16 lanes: {Σa[0], Σa[1], Σa[2], Σa[3]}.
MD_AVX512_BF16 inline __m128 ReduceAdd4(const __m512 a[4]) {
  // 128-bit blocks {a0.0+a0.2, a0.1+a0.3, a1.0+a1.2, a1.1+a1.3}, same for 23.
  const __m512 a01 = _mm512_add_ps(_mm512_shuffle_f32x4(a[0], a[1], 0x44),
                                   _mm512_shuffle_f32x4(a[0], a[1], 0xee));
  const __m512 a23 = _mm512_add_ps(_mm512_shuffle_f32x4(a[2], a[3], 0x44),
                                   _mm512_shuffle_f32x4(a[2], a[3], 0xee));
  // Block j now holds four partial sums of a[j]; add them within the block.
  __m512 sums = _mm512_add_ps(_mm512_shuffle_f32x4(a01, a23, 0x88),
                              _mm512_shuffle_f32x4(a01, a23, 0xdd));
  sums = _mm512_add_ps(sums, _mm512_permute_ps(sums, 0x4e));
  sums = _mm512_add_ps(sums, _mm512_permute_ps(sums, 0xb1));
  sums = _mm512_permutexvar_ps(
      _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), sums);
  return _mm512_maskz_extractf32x4_ps(0xf, sums, 0);
}

// bf16 bits (in the low 16 of each 32-bit lane) to fp32.
MD_AVX512_BF16 inline __m128 Bf16ToFloat(__m128i lanes_u16) {
  return _mm_castsi128_ps(_mm_slli_epi32(_mm_cvtepu16_epi32(lanes_u16), 16));
}

// fp32 to bf16 bits, round-to-nearest-even, NaN to quiet NaN: the same as
// c10::BFloat16's conversion, denormals included.
MD_AVX512_BF16 inline __m128i FloatToBf16(__m128 v) {
  const __m128i bits = _mm_castps_si128(v);
  const __m128i lsb =
      _mm_and_si128(_mm_srli_epi32(bits, 16), _mm_set1_epi32(1));
  __m128i rounded = _mm_srli_epi32(
      _mm_add_epi32(_mm_add_epi32(bits, _mm_set1_epi32(0x7fff)), lsb), 16);
  const __mmask8 nan = _mm_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  rounded = _mm_mask_mov_epi32(rounded, nan, _mm_set1_epi32(0x7fc0));
  return _mm_packus_epi32(rounded, rounded);
}

MD_AVX512_BF16 inline __m512bh LoadBf16(const uint16_t* p) {
  return (__m512bh)_mm512_loadu_si512(p);
}

MD_AVX512_BF16 inline __m512bh LoadBf16(__mmask32 mask, const uint16_t* p) {
  return (__m512bh)_mm512_maskz_loadu_epi16(mask, p);
}

// y[0..kM, 0..kN) = x[0..kM, :] · w[0..kN, :]ᵀ + b[0..kN) for kM <= 4 rows of
// x (row stride K) and kN <= 4 rows of w (row stride K); y has row stride
// ldy. b may be null. One fp32 accumulator vector per output, summed across
// lanes at the end, so each weight vector is loaded once for all kM rows.
// At step k it also prefetches, into L2, the cache line at prefetch[j] + k
// for each j < kN.
template <int kM, int kN>
MD_AVX512_BF16 inline void DotBlock(const uint16_t* x, const uint16_t* w,
                                    const uint16_t* b, int64_t K, uint16_t* y,
                                    int64_t ldy,
                                    const uint16_t* const prefetch[kN]) {
  __m512 acc[kM][kN];
#pragma GCC unroll 4
  for (int i = 0; i < kM; ++i) {
#pragma GCC unroll 4
    for (int j = 0; j < kN; ++j) acc[i][j] = _mm512_setzero_ps();
  }
  int64_t k = 0;
  for (; k + kLanes <= K; k += kLanes) {
    __m512bh w_k[kN];
#pragma GCC unroll 4
    for (int j = 0; j < kN; ++j) {
      w_k[j] = LoadBf16(w + j * K + k);
      _mm_prefetch(reinterpret_cast<const char*>(prefetch[j] + k), _MM_HINT_T1);
    }
#pragma GCC unroll 4
    for (int i = 0; i < kM; ++i) {
      const __m512bh x_k = LoadBf16(x + i * K + k);
#pragma GCC unroll 4
      for (int j = 0; j < kN; ++j) {
        acc[i][j] = _mm512_dpbf16_ps(acc[i][j], x_k, w_k[j]);
      }
    }
  }
  if (k < K) {
    // Masked-off lanes load as zero in both operands and add nothing.
    const __mmask32 tail = _cvtu32_mask32((1u << (K - k)) - 1);
    __m512bh w_k[kN];
#pragma GCC unroll 4
    for (int j = 0; j < kN; ++j) w_k[j] = LoadBf16(tail, w + j * K + k);
#pragma GCC unroll 4
    for (int i = 0; i < kM; ++i) {
      const __m512bh x_k = LoadBf16(tail, x + i * K + k);
#pragma GCC unroll 4
      for (int j = 0; j < kN; ++j) {
        acc[i][j] = _mm512_dpbf16_ps(acc[i][j], x_k, w_k[j]);
      }
    }
  }
  const __mmask8 n_mask = static_cast<__mmask8>((1u << kN) - 1);
  const __m128 bias = b == nullptr
                          ? _mm_setzero_ps()
                          : Bf16ToFloat(_mm_maskz_loadu_epi16(n_mask, b));
#pragma GCC unroll 4
  for (int i = 0; i < kM; ++i) {
    __m512 row[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(),
                     _mm512_setzero_ps(), _mm512_setzero_ps()};
#pragma GCC unroll 4
    for (int j = 0; j < kN; ++j) row[j] = acc[i][j];
    const __m128 sums = _mm_add_ps(ReduceAdd4(row), bias);
    _mm_mask_storeu_epi16(y + i * ldy, n_mask, FloatToBf16(sums));
  }
}

// All M rows of x against w rows [n0, n0+kN), in passes of up to kRowsM
// rows of x. The first pass reads the weight rows from memory, later ones
// from cache; meanwhile every pass prefetches its share of next_w (the next
// kN weight rows, or null) so that memory stays busy through all passes.
template <int kN>
MD_AVX512_BF16 inline void DotAllRows(const uint16_t* x, const uint16_t* w,
                                      const uint16_t* b, int64_t M, int64_t N,
                                      int64_t K, int64_t n0,
                                      const uint16_t* next_w, uint16_t* y) {
  const uint16_t* w_n = w + n0 * K;
  const uint16_t* b_n = b == nullptr ? nullptr : b + n0;
  const int64_t n_passes = (M + kRowsM - 1) / kRowsM;
  for (int64_t pass = 0; pass < n_passes; ++pass) {
    // Pass p prefetches the next rows j with j % n_passes == p, listed
    // round-robin to fill kN slots (repeats cost a load slot, no traffic).
    // Without next rows it points at this block, already in cache.
    const uint16_t* prefetch[kN];
    const uint16_t* pf_base = next_w == nullptr ? w_n : next_w;
    int n_mine = 0;
    for (int j = 0; j < kN; ++j) {
      if (j % n_passes == pass) prefetch[n_mine++] = pf_base + j * K;
    }
    if (n_mine == 0) prefetch[n_mine++] = w_n;
    for (int j = n_mine; j < kN; ++j) prefetch[j] = prefetch[j - n_mine];

    const int64_t m0 = pass * kRowsM;
    const uint16_t* x_m = x + m0 * K;
    uint16_t* y_mn = y + m0 * N + n0;
    switch (std::min<int64_t>(kRowsM, M - m0)) {
      case 1:
        DotBlock<1, kN>(x_m, w_n, b_n, K, y_mn, N, prefetch);
        break;
      case 2:
        DotBlock<2, kN>(x_m, w_n, b_n, K, y_mn, N, prefetch);
        break;
      case 3:
        DotBlock<3, kN>(x_m, w_n, b_n, K, y_mn, N, prefetch);
        break;
      default:
        DotBlock<4, kN>(x_m, w_n, b_n, K, y_mn, N, prefetch);
        break;
    }
  }
}

// y[:, n_begin..n_end) for x [M, K], w [N, K], b [N] or null, y [M, N].
MD_AVX512_BF16 __attribute__((noinline)) void LinearColumns(
    const uint16_t* x, const uint16_t* w, const uint16_t* b, int64_t M,
    int64_t N, int64_t K, int64_t n_begin, int64_t n_end, uint16_t* y) {
  int64_t n = n_begin;
  for (; n + kRowsN <= n_end; n += kRowsN) {
    const int64_t n_next = n + kRowsN;
    const uint16_t* next_w =
        n_next + kRowsN <= n_end ? w + n_next * K : nullptr;
    DotAllRows<kRowsN>(x, w, b, M, N, K, n, next_w, y);
  }
  for (; n < n_end; ++n) DotAllRows<1>(x, w, b, M, N, K, n, nullptr, y);
}

}  // namespace
#endif  // defined(__x86_64__)

bool HasAvx512Bf16() { return CpuHasAvx512Bf16(); }

namespace {

bool IsDenseCpuBf16(const at::Tensor& t) {
  return t.defined() && t.device().is_cpu() && t.layout() == at::kStrided &&
         t.scalar_type() == at::kBFloat16 && t.is_contiguous();
}

}  // namespace

at::Tensor SmallBatchLinearBf16(const at::Tensor& x, const at::Tensor& w,
                                const at::Tensor& b) {
  if (!HasAvx512Bf16()) return {};
  if (!IsDenseCpuBf16(x) || x.dim() < 1 || !IsDenseCpuBf16(w) || w.dim() != 2) {
    return {};
  }
  const int64_t N = w.size(0);
  const int64_t K = w.size(1);
  if (x.size(-1) != K) return {};
  if (b.defined() && (!IsDenseCpuBf16(b) || b.dim() != 1 || b.size(0) != N)) {
    return {};
  }
  // No autograd graph is recorded here: leave training to at::linear.
  if (at::GradMode::is_enabled() && (x.requires_grad() || w.requires_grad() ||
                                     (b.defined() && b.requires_grad()))) {
    return {};
  }
  std::vector<int64_t> y_sizes(x.sizes().begin(), x.sizes().end());
  int64_t M = 1;
  for (size_t i = 0; i + 1 < y_sizes.size(); ++i) M *= y_sizes[i];
  if (M > kSmallBatchMaxRows) return {};
  y_sizes.back() = N;
  at::Tensor y = at::empty(y_sizes, x.options());
  if (M == 0 || N == 0) return y;

#if defined(__x86_64__)
  const auto* x_MK = static_cast<const uint16_t*>(x.data_ptr());
  const auto* w_NK = static_cast<const uint16_t*>(w.data_ptr());
  const auto* b_N =
      b.defined() ? static_cast<const uint16_t*>(b.data_ptr()) : nullptr;
  auto* y_MN = static_cast<uint16_t*>(y.data_ptr());
  // Work is handed out in chunks of whole blocks of kRowsN weight rows (the
  // last may be short), each chunk streaming at least kMinBytesPerTask of w.
  // Threads take chunks from a shared counter rather than a fixed share, so
  // a worker that wakes late (OMP_WAIT_POLICY=PASSIVE) just takes fewer.
  const int64_t n_blocks = (N + kRowsN - 1) / kRowsN;
  const int64_t block_bytes = kRowsN * std::max<int64_t>(K, 1) * 2;
  const int64_t chunk_blocks =
      (kMinBytesPerTask + block_bytes - 1) / block_bytes;
  const int64_t n_chunks = (n_blocks + chunk_blocks - 1) / chunk_blocks;
  std::atomic<int64_t> next_chunk{0};
  at::parallel_for(0, n_chunks, 1, [&](int64_t, int64_t) {
    for (int64_t i_chunk = next_chunk.fetch_add(1); i_chunk < n_chunks;
         i_chunk = next_chunk.fetch_add(1)) {
      const int64_t n_begin = i_chunk * chunk_blocks * kRowsN;
      const int64_t n_end = std::min(n_begin + chunk_blocks * kRowsN, N);
      LinearColumns(x_MK, w_NK, b_N, M, N, K, n_begin, n_end, y_MN);
    }
  });
#endif
  return y;
}

}  // namespace md
