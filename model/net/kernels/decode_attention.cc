#include "model/net/kernels/decode_attention.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "model/net/kernels/decode_scores_amx.h"
#include "model/net/kernels/simd_math.h"
#include "model/net/kernels/worker_pool.h"
#include "model/net/kernels/x86_simd.h"

namespace md {
namespace {

#if defined(__x86_64__)

// Largest head dim; far above any model's, it bounds the int arithmetic.
constexpr int64_t kMaxHeadDim = 1 << 16;
// Keys scored together: one 16-lane vector of scores per block.
constexpr int kBlock = 16;
// Output dims accumulated in registers at once (8 vectors of 16 floats).
constexpr int kMaxTileGroups = 8;

MD_AVX512 inline __mmask16 FirstLanes(int m) {
  return m >= kBlock ? __mmask16{0xFFFF}
                     : static_cast<__mmask16>((1u << m) - 1u);
}

// Lane j of the result is the sum of the 16 lanes of v[j].
MD_AVX512 inline __m512 SumEach16(const __m512* v) {
  // Within each 128-bit lane: pairs of vectors → [a0+a2, b0+b2, a1+a3, b1+b3].
  __m512 s8[8];
#pragma GCC unroll 8
  for (int j = 0; j < 8; ++j) {
    const __m512 a = v[2 * j], b = v[2 * j + 1];
    s8[j] = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
  }
  // → each 128-bit lane holds its lane-sums of four consecutive vectors.
  __m512 s4[4];
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    const __m512 c = s8[2 * j], d = s8[2 * j + 1];
    s4[j] = _mm512_add_ps(_mm512_shuffle_ps(c, d, _MM_SHUFFLE(1, 0, 1, 0)),
                          _mm512_shuffle_ps(c, d, _MM_SHUFFLE(3, 2, 3, 2)));
  }
  // Across 128-bit lanes, twice.
  __m512 s2[2];
#pragma GCC unroll 2
  for (int j = 0; j < 2; ++j) {
    const __m512 e = s4[2 * j], f = s4[2 * j + 1];
    s2[j] = _mm512_add_ps(_mm512_shuffle_f32x4(e, f, _MM_SHUFFLE(2, 0, 2, 0)),
                          _mm512_shuffle_f32x4(e, f, _MM_SHUFFLE(3, 1, 3, 1)));
  }
  return _mm512_add_ps(
      _mm512_shuffle_f32x4(s2[0], s2[1], _MM_SHUFFLE(2, 0, 2, 0)),
      _mm512_shuffle_f32x4(s2[0], s2[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

// Pass 2: s[k] ← exp(s[k] − max) for k < n; returns the sum.
MD_AVX512 float ExpAndSum(float* s, int n, float max) {
  const __m512 vmax = _mm512_set1_ps(max);
  __m512 vsum = _mm512_setzero_ps();
  for (int k0 = 0; k0 < n; k0 += kBlock) {
    const __mmask16 mask = FirstLanes(n - k0);
    const __m512 x = _mm512_maskz_loadu_ps(mask, s + k0);
    const __m512 p = Exp(_mm512_sub_ps(x, vmax));
    _mm512_mask_storeu_ps(s + k0, mask, p);
    vsum = _mm512_mask_add_ps(vsum, mask, vsum, p);
  }
  return _mm512_reduce_add_ps(vsum);
}

// Stores scale · acc-sums for the m keys of the block at s; returns the
// running max updated with them.
MD_AVX512 inline __m512 StoreScores(const __m512* acc, int m, __m512 vscale,
                                    float* s, __m512 vmax) {
  const __m512 sv = _mm512_mul_ps(SumEach16(acc), vscale);
  const __mmask16 mask = FirstLanes(m);
  _mm512_mask_storeu_ps(s, mask, sv);
  return _mm512_mask_max_ps(vmax, mask, vmax, sv);
}

// Pass 1 (fp32): s[k] = scale · q·K[k] for k < n; returns max s. kD is the
// head dim when known at compile time, else 0 and d is used.
template <int kD>
MD_AVX512 float ScoresF32(const float* q, const float* keys, int n, int d_rt,
                          float scale, float* s) {
  const int d = kD > 0 ? kD : d_rt;
  const __m512 vscale = _mm512_set1_ps(scale);
  __m512 vmax = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int k0 = 0; k0 < n; k0 += kBlock) {
    __m512 acc[kBlock];
#pragma GCC unroll 16
    for (int j = 0; j < kBlock; ++j) {
      // Past the last key, repeat it; those lanes are not stored.
      const float* row =
          keys + static_cast<int64_t>(std::min(k0 + j, n - 1)) * d;
      acc[j] = _mm512_setzero_ps();
#pragma GCC unroll 8
      for (int c = 0; c < d; c += 16) {
        acc[j] = _mm512_fmadd_ps(_mm512_loadu_ps(q + c),
                                 _mm512_loadu_ps(row + c), acc[j]);
      }
    }
    vmax = StoreScores(acc, n - k0, vscale, s + k0, vmax);
  }
  return _mm512_reduce_max_ps(vmax);
}

// Pass 1 (bf16): as ScoresF32 with vdpbf16ps on (q, K) pairs. Products of
// two bf16 are exact in fp32, so this is an fp32 dot product.
template <int kD>
MD_AVX512_BF16 float ScoresBf16(const uint16_t* q, const uint16_t* keys, int n,
                                int d_rt, float scale, float* s) {
  const int d = kD > 0 ? kD : d_rt;
  const int d32 = d / 32 * 32;  // the rest (0 or 16 dims) is one half load
  const __m512 vscale = _mm512_set1_ps(scale);
  __m512 vmax = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int k0 = 0; k0 < n; k0 += kBlock) {
    __m512 acc[kBlock];
#pragma GCC unroll 16
    for (int j = 0; j < kBlock; ++j) {
      const uint16_t* row =
          keys + static_cast<int64_t>(std::min(k0 + j, n - 1)) * d;
      acc[j] = _mm512_setzero_ps();
#pragma GCC unroll 4
      for (int c = 0; c < d32; c += 32) {
        acc[j] = _mm512_dpbf16_ps(acc[j], (__m512bh)_mm512_loadu_si512(q + c),
                                  (__m512bh)_mm512_loadu_si512(row + c));
      }
      if (d32 < d) {
        acc[j] = _mm512_dpbf16_ps(
            acc[j], (__m512bh)_mm512_maskz_loadu_epi16(0xFFFF, q + d32),
            (__m512bh)_mm512_maskz_loadu_epi16(0xFFFF, row + d32));
      }
    }
    vmax = StoreScores(acc, n - k0, vscale, s + k0, vmax);
  }
  return _mm512_reduce_max_ps(vmax);
}

// Pass 3 for kG·16 dims starting at v/acc_out: acc += Σ_k p[k]·v[k], v's
// rows d apart. Called once over all rows, or piece by piece over rows that
// are shared: the same fused multiply-adds in the same order either way (an
// fp32 accumulator stored between pieces loses nothing).
template <int kG>
MD_AVX512 void AccumulateF32(const float* p, const float* v, int n, int d,
                             float* acc_out) {
  __m512 acc[kG];
#pragma GCC unroll 8
  for (int g = 0; g < kG; ++g) acc[g] = _mm512_loadu_ps(acc_out + 16 * g);
  for (int k = 0; k < n; ++k) {
    const __m512 w = _mm512_set1_ps(p[k]);
    const float* row = v + static_cast<int64_t>(k) * d;
#pragma GCC unroll 8
    for (int g = 0; g < kG; ++g) {
      acc[g] = _mm512_fmadd_ps(w, _mm512_loadu_ps(row + 16 * g), acc[g]);
    }
  }
#pragma GCC unroll 8
  for (int g = 0; g < kG; ++g) _mm512_storeu_ps(acc_out + 16 * g, acc[g]);
}

template <int kG>
MD_AVX512_BF16 void AccumulateBf16(const float* p, const uint16_t* v, int n,
                                   int d, float* acc_out) {
  __m512 acc[kG];
#pragma GCC unroll 8
  for (int g = 0; g < kG; ++g) acc[g] = _mm512_loadu_ps(acc_out + 16 * g);
  for (int k = 0; k < n; ++k) {
    const __m512 w = _mm512_set1_ps(p[k]);
    const uint16_t* row = v + static_cast<int64_t>(k) * d;
#pragma GCC unroll 8
    for (int g = 0; g < kG; ++g) {
      const __m512i x = _mm512_cvtepu16_epi32(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 16 * g)));
      acc[g] = _mm512_fmadd_ps(w, _mm512_castsi512_ps(_mm512_slli_epi32(x, 16)),
                               acc[g]);
    }
  }
#pragma GCC unroll 8
  for (int g = 0; g < kG; ++g) _mm512_storeu_ps(acc_out + 16 * g, acc[g]);
}

using AccumulateF32Fn = void (*)(const float*, const float*, int, int, float*);
using AccumulateBf16Fn = void (*)(const float*, const uint16_t*, int, int,
                                  float*);
constexpr AccumulateF32Fn kAccumulateF32[kMaxTileGroups] = {
    AccumulateF32<1>, AccumulateF32<2>, AccumulateF32<3>, AccumulateF32<4>,
    AccumulateF32<5>, AccumulateF32<6>, AccumulateF32<7>, AccumulateF32<8>};
constexpr AccumulateBf16Fn kAccumulateBf16[kMaxTileGroups] = {
    AccumulateBf16<1>, AccumulateBf16<2>, AccumulateBf16<3>, AccumulateBf16<4>,
    AccumulateBf16<5>, AccumulateBf16<6>, AccumulateBf16<7>, AccumulateBf16<8>};

// Pass 3 over shared rows for kM members at once: acc_m += Σ_k p_m[k]·v[k]
// for kG·16 dims, v fp32 with rows v_stride apart (bf16 values widened once
// for all members). Per member the same fused multiply-adds in the same
// order as Accumulate*, so a member's sums are those it gets alone; each
// row is loaded once for kM members instead of once (and widened) per
// member.
template <int kG, int kM>
MD_AVX512 void AccumulateMembers(const float* const* p, const float* v, int n,
                                 int v_stride, float* const* acc_out) {
  __m512 acc[kM][kG];
#pragma GCC unroll 4
  for (int m = 0; m < kM; ++m) {
#pragma GCC unroll 8
    for (int g = 0; g < kG; ++g)
      acc[m][g] = _mm512_loadu_ps(acc_out[m] + 16 * g);
  }
  for (int k = 0; k < n; ++k) {
    const float* row = v + static_cast<int64_t>(k) * v_stride;
    __m512 row_g[kG];
#pragma GCC unroll 8
    for (int g = 0; g < kG; ++g) row_g[g] = _mm512_loadu_ps(row + 16 * g);
#pragma GCC unroll 4
    for (int m = 0; m < kM; ++m) {
      const __m512 w = _mm512_set1_ps(p[m][k]);
#pragma GCC unroll 8
      for (int g = 0; g < kG; ++g) {
        acc[m][g] = _mm512_fmadd_ps(w, row_g[g], acc[m][g]);
      }
    }
  }
#pragma GCC unroll 4
  for (int m = 0; m < kM; ++m) {
#pragma GCC unroll 8
    for (int g = 0; g < kG; ++g)
      _mm512_storeu_ps(acc_out[m] + 16 * g, acc[m][g]);
  }
}

// AccumulateMembers for any number of members: kM at a time (as many as
// the registers hold), the rest one by one.
template <int kG>
MD_AVX512 void AccumulateAllMembers(int n_members, const float* const* p,
                                    const float* v, int n, int v_stride,
                                    float* const* acc_out) {
  constexpr int kM = kG <= 4 ? 4 : 2;
  int m = 0;
  for (; m + kM <= n_members; m += kM) {
    AccumulateMembers<kG, kM>(p + m, v, n, v_stride, acc_out + m);
  }
  for (; m < n_members; ++m) {
    AccumulateMembers<kG, 1>(p + m, v, n, v_stride, acc_out + m);
  }
}

using AccumulateAllMembersFn = void (*)(int, const float* const*, const float*,
                                        int, int, float* const*);
constexpr AccumulateAllMembersFn kAccumulateAllMembers[kMaxTileGroups] = {
    AccumulateAllMembers<1>, AccumulateAllMembers<2>, AccumulateAllMembers<3>,
    AccumulateAllMembers<4>, AccumulateAllMembers<5>, AccumulateAllMembers<6>,
    AccumulateAllMembers<7>, AccumulateAllMembers<8>};

// n rows × 16·n_groups dims of v (rows d apart) as fp32, rows 16·n_groups
// apart: the exact values (bf16 widens exactly).
MD_AVX512 void WidenRows(const float* v, int n, int d, int n_groups,
                         float* out) {
  for (int k = 0; k < n; ++k) {
    std::copy_n(v + static_cast<int64_t>(k) * d, 16 * n_groups,
                out + static_cast<int64_t>(k) * 16 * n_groups);
  }
}

MD_AVX512 void WidenRows(const uint16_t* v, int n, int d, int n_groups,
                         float* out) {
  for (int k = 0; k < n; ++k) {
    const uint16_t* row = v + static_cast<int64_t>(k) * d;
    float* out_row = out + static_cast<int64_t>(k) * 16 * n_groups;
    for (int g = 0; g < n_groups; ++g) {
      const __m512i x = _mm512_cvtepu16_epi32(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 16 * g)));
      _mm512_storeu_ps(out_row + 16 * g,
                       _mm512_castsi512_ps(_mm512_slli_epi32(x, 16)));
    }
  }
}

// Pass 3's end: out = acc / sum (bf16: rounded once).
MD_AVX512 void FinishF32(const float* acc, int d, float sum, float* out) {
  const __m512 vsum = _mm512_set1_ps(sum);
  for (int c = 0; c < d; c += 16) {
    _mm512_storeu_ps(out + c, _mm512_div_ps(_mm512_loadu_ps(acc + c), vsum));
  }
}

MD_AVX512_BF16 void FinishBf16(const float* acc, int d, float sum,
                               uint16_t* out) {
  const __m512 vsum = _mm512_set1_ps(sum);
  for (int c = 0; c < d; c += 16) {
    const __m256bh y =
        _mm512_cvtneps_pbh(_mm512_div_ps(_mm512_loadu_ps(acc + c), vsum));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + c), (__m256i)y);
  }
}

// Pass 1 with the head dim known at compile time where it is common.
MD_AVX512 float ScoresAnyF32(const float* q, const float* keys, int n, int d,
                             float scale, float* s) {
  if (d == 64) return ScoresF32<64>(q, keys, n, d, scale, s);
  if (d == 128) return ScoresF32<128>(q, keys, n, d, scale, s);
  return ScoresF32<0>(q, keys, n, d, scale, s);
}

MD_AVX512_BF16 float ScoresAnyBf16(const uint16_t* q, const uint16_t* keys,
                                   int n, int d, float scale, float* s) {
  if (d == 64) return ScoresBf16<64>(q, keys, n, d, scale, s);
  if (d == 128) return ScoresBf16<128>(q, keys, n, d, scale, s);
  return ScoresBf16<0>(q, keys, n, d, scale, s);
}

// Shared K/V rows scored (and summed) per pass over a group: 64 rows of a
// 64-dim head are 8 KiB in bf16, so they stay in L1 while every member of
// the group reads them.
constexpr int kSharedRows = 64;

// One head of one sequence in a group that shares its first prefix_len rows.
template <typename T>
struct Member {
  const T* q;
  const T* own_keys;  // the key at position prefix_len (in its slot)
  const T* own_values;
  int n;  // keys in all, >= prefix_len
  T* out;
};

// Pass 1 for every member of a group on AMX tiles (ScoresAmx): the shared
// rows for 16 members at a time, each member's own rows alone. Returns false,
// doing nothing, where the tiles do not apply (fp32, no AMX, head dim).
inline bool ScoreMembersOnTiles(absl::Span<const Member<float>>, const float*,
                                int, int, float, int, float*, float*) {
  return false;
}

inline bool ScoreMembersOnTiles(absl::Span<const Member<uint16_t>> members,
                                const uint16_t* shared_keys, int prefix_len,
                                int d, float scale, int stride, float* scores,
                                float* maxes) {
  if (!AmxScoresApply(d)) return false;
  const int g = static_cast<int>(members.size());
  std::vector<const uint16_t*> q(g);
  std::vector<float*> s(g);
  for (int m = 0; m < g; ++m) {
    q[m] = members[m].q;
    s[m] = scores + int64_t{m} * stride;
  }
  std::vector<uint16_t> tile_rows(static_cast<size_t>(kAmxKeys) * d);
  for (int m0 = 0; m0 < g && prefix_len > 0; m0 += kAmxQueries) {
    ScoresAmx(q.data() + m0, std::min(kAmxQueries, g - m0), shared_keys,
              prefix_len, d, scale, s.data() + m0, maxes + m0,
              tile_rows.data());
  }
  for (int m = 0; m < g; ++m) {
    if (members[m].n <= prefix_len) continue;
    float* own = s[m] + prefix_len;
    ScoresAmx(&q[m], 1, members[m].own_keys, members[m].n - prefix_len, d,
              scale, &own, maxes + m, tile_rows.data());
  }
  return true;
}

// Every member's attention over [shared rows 0..prefix_len) + [own rows
// prefix_len..n): the same per-sequence operations, in the same order, as
// Attend*, with the loops over rows outside the loops over members so that
// each shared row comes from memory once. scores has G·stride floats and acc
// G·d floats.
template <typename T, typename ScoresFn, typename AccumulateTable,
          typename FinishFn>
inline void AttendGroup(absl::Span<const Member<T>> members,
                        const T* shared_keys, const T* shared_values,
                        int prefix_len, int d, float scale, int stride,
                        float* scores, float* acc, ScoresFn score,
                        const AccumulateTable& accumulate, FinishFn finish) {
  const int g = static_cast<int>(members.size());
  std::vector<float> maxes(g, -std::numeric_limits<float>::infinity());
  std::vector<float> sums(g);
  if (!ScoreMembersOnTiles(members, shared_keys, prefix_len, d, scale, stride,
                           scores, maxes.data())) {
    for (int k0 = 0; k0 < prefix_len; k0 += kSharedRows) {
      const int n = std::min(kSharedRows, prefix_len - k0);
      for (int m = 0; m < g; ++m) {
        maxes[m] = std::max(
            maxes[m], score(members[m].q, shared_keys + int64_t{k0} * d, n, d,
                            scale, scores + int64_t{m} * stride + k0));
      }
    }
    for (int m = 0; m < g; ++m) {
      const Member<T>& x = members[m];
      if (x.n > prefix_len) {
        maxes[m] = std::max(maxes[m],
                            score(x.q, x.own_keys, x.n - prefix_len, d, scale,
                                  scores + int64_t{m} * stride + prefix_len));
      }
    }
  }
  for (int m = 0; m < g; ++m) {
    sums[m] = ExpAndSum(scores + int64_t{m} * stride, members[m].n, maxes[m]);
  }
  std::fill(acc, acc + int64_t{g} * d, 0.0f);
  std::vector<const float*> p_rows(g);
  std::vector<float*> acc_rows(g);
  std::vector<float> v_f32(static_cast<size_t>(kSharedRows) * 16 *
                           kMaxTileGroups);
  for (int g0 = 0; g0 < d / 16; g0 += kMaxTileGroups) {
    const int n_groups = std::min(kMaxTileGroups, d / 16 - g0);
    const auto add = accumulate[n_groups - 1];
    for (int k0 = 0; k0 < prefix_len; k0 += kSharedRows) {
      const int n = std::min(kSharedRows, prefix_len - k0);
      WidenRows(shared_values + int64_t{k0} * d + 16 * g0, n, d, n_groups,
                v_f32.data());
      for (int m = 0; m < g; ++m) {
        p_rows[m] = scores + int64_t{m} * stride + k0;
        acc_rows[m] = acc + int64_t{m} * d + 16 * g0;
      }
      kAccumulateAllMembers[n_groups - 1](g, p_rows.data(), v_f32.data(), n,
                                          16 * n_groups, acc_rows.data());
    }
    for (int m = 0; m < g; ++m) {
      const Member<T>& x = members[m];
      if (x.n <= prefix_len) continue;
      add(scores + int64_t{m} * stride + prefix_len, x.own_values + 16 * g0,
          x.n - prefix_len, d, acc + int64_t{m} * d + 16 * g0);
    }
  }
  for (int m = 0; m < g; ++m) {
    finish(acc + int64_t{m} * d, d, sums[m], members[m].out);
  }
}

// Whether the kernel applies: see DecodeAttention. `shared_len` is the
// shared prefix length (0: none), `prefixes` its tensors (B entries).
bool ValidInputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                 absl::Span<const int> slots, absl::Span<const int> n_keys,
                 const SharedPrefixes* prefixes) {
  if (!q.defined() || !k.defined() || !v.defined()) return false;
  const at::ScalarType dtype = q.scalar_type();
  if (dtype != at::kFloat && dtype != at::kBFloat16) return false;
  for (const at::Tensor* t : {&q, &k, &v}) {
    if (t->scalar_type() != dtype || !t->device().is_cpu() ||
        t->layout() != at::kStrided) {
      return false;
    }
  }
  if (q.dim() != 3 || k.dim() != 4 || k.sizes() != v.sizes()) return false;
  if (!k.is_contiguous() || !v.is_contiguous()) return false;
  const int64_t n_batch = q.size(0), n_heads = q.size(1), d = q.size(2);
  const int64_t n_slots = k.size(0);
  if (k.size(1) != n_heads || k.size(3) != d) return false;
  if (d <= 0 || d % 16 != 0 || d > kMaxHeadDim || q.stride(2) != 1) {
    return false;
  }
  if (static_cast<int64_t>(slots.size()) != n_batch ||
      static_cast<int64_t>(n_keys.size()) != n_batch) {
    return false;
  }
  const int shared_len = prefixes != nullptr ? prefixes->len : 0;
  if (prefixes != nullptr &&
      (shared_len <= 0 ||
       static_cast<int64_t>(prefixes->prefix_L2HQD.size()) != n_batch)) {
    return false;
  }
  for (int64_t i = 0; i < n_batch; ++i) {
    if (slots[i] < 0 || slots[i] >= n_slots) return false;
    if (n_keys[i] < std::max(1, shared_len) ||
        n_keys[i] > shared_len + k.size(2)) {
      return false;
    }
    if (prefixes == nullptr) continue;
    const at::Tensor& p = prefixes->prefix_L2HQD[i];
    if (!p.defined() || p.scalar_type() != dtype || !p.device().is_cpu() ||
        !p.is_contiguous() || p.dim() != 5 || prefixes->layer < 0 ||
        prefixes->layer >= p.size(0) || p.size(1) != 2 ||
        p.size(2) != n_heads || p.size(3) != shared_len || p.size(4) != d) {
      return false;
    }
  }
  return true;
}

// DecodeAttention over groups: sequences that share a prefix tensor, or,
// without shared prefixes, each sequence alone.
at::Tensor GroupedAttention(const at::Tensor& q_BHD, const at::Tensor& k_SHPD,
                            const at::Tensor& v_SHPD,
                            absl::Span<const int> slots,
                            absl::Span<const int> n_keys, double scale,
                            const SharedPrefixes* prefixes) {
  const bool bf16 = q_BHD.scalar_type() == at::kBFloat16;
  if (!(bf16 ? CpuHasAvx512Bf16() : CpuHasAvx512())) return {};
  const int64_t n_batch = q_BHD.size(0), n_heads = q_BHD.size(1);
  const int d = static_cast<int>(q_BHD.size(2));
  const int64_t n_positions = k_SHPD.size(2);
  const int prefix_len = prefixes != nullptr ? prefixes->len : 0;
  at::Tensor out_BHD = at::empty({n_batch, n_heads, d}, q_BHD.options());
  if (out_BHD.numel() == 0) return out_BHD;

  // Sequences by the prefix tensor they read, in batch order.
  std::vector<const char*> group_prefix;
  std::vector<std::vector<int64_t>> groups;
  for (int64_t i = 0; i < n_batch; ++i) {
    if (prefixes == nullptr) {
      group_prefix.push_back(nullptr);
      groups.push_back({i});
      continue;
    }
    const char* p =
        static_cast<const char*>(prefixes->prefix_L2HQD[i].data_ptr());
    auto it = std::find(group_prefix.begin(), group_prefix.end(), p);
    if (it == group_prefix.end()) {
      group_prefix.push_back(p);
      groups.emplace_back();
      it = group_prefix.end() - 1;
    }
    groups[it - group_prefix.begin()].push_back(i);
  }
  const int stride = *std::max_element(n_keys.begin(), n_keys.end());
  const float scale_f = static_cast<float>(scale);
  const int64_t elem = q_BHD.element_size();
  const int64_t q_stride_b = q_BHD.stride(0), q_stride_h = q_BHD.stride(1);
  const char* q_base = static_cast<const char*>(q_BHD.data_ptr());
  const char* k_base = static_cast<const char*>(k_SHPD.data_ptr());
  const char* v_base = static_cast<const char*>(v_SHPD.data_ptr());
  char* out_base = static_cast<char*>(out_BHD.data_ptr());
  auto slot_row0 = [&](const char* base, int slot, int64_t h) {
    return base +
           (static_cast<int64_t>(slot) * n_heads + h) * n_positions * d * elem;
  };
  // Row 0 of head h's keys (kv 0) or values (kv 1) in a [L, 2, H, Q, D]
  // prefix.
  const int layer = prefixes != nullptr ? prefixes->layer : 0;
  auto prefix_row0 = [&](const char* base, int kv, int64_t h) {
    return base +
           ((int64_t{layer} * 2 + kv) * n_heads + h) * prefix_len * d * elem;
  };

  const int64_t n_items = static_cast<int64_t>(groups.size()) * n_heads;
  ParallelFor(
      n_items, 1, at::get_num_threads(), [&](int64_t begin, int64_t end) {
        std::vector<float> scores, acc;
        for (int64_t item = begin; item < end; ++item) {
          const std::vector<int64_t>& group = groups[item / n_heads];
          const char* prefix = group_prefix[item / n_heads];
          const int64_t h = item % n_heads;
          scores.resize(group.size() * stride);
          acc.resize(group.size() * d);
          auto run = [&](auto* tag, auto score, const auto& accumulate,
                         auto finish) {
            using T = std::remove_pointer_t<decltype(tag)>;
            std::vector<Member<T>> members;
            for (int64_t i : group) {
              members.push_back(
                  {reinterpret_cast<const T*>(
                       q_base + (i * q_stride_b + h * q_stride_h) * elem),
                   reinterpret_cast<const T*>(slot_row0(k_base, slots[i], h)),
                   reinterpret_cast<const T*>(slot_row0(v_base, slots[i], h)),
                   n_keys[i],
                   reinterpret_cast<T*>(out_base +
                                        (i * n_heads + h) * d * elem)});
            }
            const T* shared_keys =
                prefix ? reinterpret_cast<const T*>(prefix_row0(prefix, 0, h))
                       : nullptr;
            const T* shared_values =
                prefix ? reinterpret_cast<const T*>(prefix_row0(prefix, 1, h))
                       : nullptr;
            AttendGroup<T>(members, shared_keys, shared_values, prefix_len, d,
                           scale_f, stride, scores.data(), acc.data(), score,
                           accumulate, finish);
          };
          if (bf16) {
            run(static_cast<uint16_t*>(nullptr), ScoresAnyBf16, kAccumulateBf16,
                FinishBf16);
          } else {
            run(static_cast<float*>(nullptr), ScoresAnyF32, kAccumulateF32,
                FinishF32);
          }
        }
      });
  return out_BHD;
}

#endif  // defined(__x86_64__)

}  // namespace

at::Tensor DecodeAttention(const at::Tensor& q_BHD, const at::Tensor& k_SHPD,
                           const at::Tensor& v_SHPD,
                           absl::Span<const int> slots,
                           absl::Span<const int> n_keys, double scale,
                           const SharedPrefixes* prefixes) {
  RECORD_USER_SCOPE("md::decode_attention");  // for op profiles
#if defined(__x86_64__)
  if (!ValidInputs(q_BHD, k_SHPD, v_SHPD, slots, n_keys, prefixes)) return {};
  return GroupedAttention(q_BHD, k_SHPD, v_SHPD, slots, n_keys, scale,
                          prefixes);
#else
  return {};
#endif
}

}  // namespace md
