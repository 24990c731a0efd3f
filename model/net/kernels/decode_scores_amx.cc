#include "model/net/kernels/decode_scores_amx.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "model/net/kernels/x86_simd.h"

namespace md {

bool AmxScoresApply(int d) {
  return CpuHasAmxBf16() && d % kAmxChunk == 0 && d <= kAmxMaxHeadDim;
}

#if defined(__x86_64__)
namespace {

// Queries as the tiles' second operand: for chunk c, row p holds the pair
// (q[32c + 2p], q[32c + 2p + 1]) of every query in its column (zero for the
// missing ones).
void PackQueries(const uint16_t* const* q, int n_q, int d, uint32_t* packed) {
  const int n_chunks = d / kAmxChunk;
  std::fill(packed, packed + n_chunks * 16 * kAmxQueries, 0u);
  for (int m = 0; m < n_q; ++m) {
    for (int pair = 0; pair < d / 2; ++pair) {
      uint32_t bits;
      std::memcpy(&bits, q[m] + 2 * pair, sizeof(bits));
      packed[pair * kAmxQueries + m] = bits;  // chunk pair / 16, row pair % 16
    }
  }
}

}  // namespace

MD_AMX_BF16 void ScoresAmx(const uint16_t* const* q, int n_q,
                           const uint16_t* keys, int n, int d, float scale,
                           float* const* s_out, float* maxes,
                           uint16_t* tile_rows) {
  alignas(64) uint32_t q_packed[kAmxMaxHeadDim / 2 * kAmxQueries];
  alignas(64) float block[kAmxKeys * kAmxQueries];
  PackQueries(q, n_q, d, q_packed);
  static const AmxTileConfig config = FullTiles(3);
  _tile_loadconfig(&config);
  const int n_chunks = d / kAmxChunk;
  const int64_t row_bytes = int64_t{d} * 2;
  const __m512 vscale = _mm512_set1_ps(scale);
  const __m512i columns = _mm512_mullo_epi32(
      _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
      _mm512_set1_epi32(kAmxQueries));
  for (int k0 = 0; k0 < n; k0 += kAmxKeys) {
    const int m_keys = std::min(kAmxKeys, n - k0);
    const uint16_t* rows = keys + int64_t{k0} * d;
    if (m_keys < kAmxKeys) {
      std::fill(tile_rows, tile_rows + kAmxKeys * d, uint16_t{0});
      std::copy_n(rows, int64_t{m_keys} * d, tile_rows);
      rows = tile_rows;
    }
    _tile_zero(0);
    for (int c = 0; c < n_chunks; ++c) {
      _tile_loadd(1, rows + c * kAmxChunk, row_bytes);
      _tile_loadd(2, q_packed + c * 16 * kAmxQueries, kAmxQueries * 4);
      _tile_dpbf16ps(0, 1, 2);
    }
    _tile_stored(0, block, kAmxQueries * 4);
    const __mmask16 mask = static_cast<__mmask16>((1u << m_keys) - 1u);
    for (int m = 0; m < n_q; ++m) {
      // Column m: query m's scores of the block's keys.
      const __m512 sv = _mm512_mul_ps(
          _mm512_i32gather_ps(_mm512_add_epi32(columns, _mm512_set1_epi32(m)),
                              block, 4),
          vscale);
      _mm512_mask_storeu_ps(s_out[m] + k0, mask, sv);
      maxes[m] = std::max(maxes[m], _mm512_mask_reduce_max_ps(mask, sv));
    }
  }
  _tile_release();
}

#else
void ScoresAmx(const uint16_t* const*, int, const uint16_t*, int, int, float,
               float* const*, float*, uint16_t*) {}
#endif  // defined(__x86_64__)

}  // namespace md
