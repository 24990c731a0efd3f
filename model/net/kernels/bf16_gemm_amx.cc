#include "model/net/kernels/bf16_gemm_amx.h"

#include <algorithm>
#include <cstdint>

#include "model/net/kernels/bf16_gemm_parts.h"
#include "model/net/kernels/x86_simd.h"

namespace md::gemm_parts {
namespace {

#if defined(__x86_64__)

// k per tile product: a tile row of x holds 64 bytes, 32 bf16.
constexpr int64_t kChunkK = 32;
constexpr int64_t kChunkPairs = kChunkK / 2;
// Byte strides of the tile loads of weights: one packed pair row.
constexpr int64_t kPairRowBytes = kPairRowElems * 2;

// Tile registers (FullTiles(7)): 0–3 accumulate a block's 16 rows × 64
// outputs (16 outputs each), 4 holds the block's x chunk (16 rows × 32 k),
// 5 and 6 the panel's weights for 16 outputs × 32 k (VNNI pairs, as
// packed), alternating so that a load need not wait for the product reading
// the other.
constexpr int kTilesUsed = 7;

// Tiles 0–3 += x_block · w over K's whole chunks, in order. x_block: 16
// rows of stride K.
MD_AMX_BF16 inline void AccumulateChunks(const uint16_t* x_block, int64_t K,
                                         const uint16_t* w_panel,
                                         int64_t n_chunks,
                                         const PanelPrefetch& pf) {
  const int64_t x_stride_bytes = K * 2;
  for (int64_t c = 0; c < n_chunks; ++c) {
    for (int64_t p = c * kChunkPairs; p < (c + 1) * kChunkPairs; ++p) {
      PrefetchStep(pf, p);
    }
    const uint16_t* w_c = w_panel + c * kChunkPairs * kPairRowElems;
    _tile_loadd(4, x_block + c * kChunkK, x_stride_bytes);
    _tile_loadd(5, w_c, kPairRowBytes);
    _tile_dpbf16ps(0, 4, 5);
    _tile_loadd(6, w_c + 32, kPairRowBytes);
    _tile_dpbf16ps(1, 4, 6);
    _tile_loadd(5, w_c + 64, kPairRowBytes);
    _tile_dpbf16ps(2, 4, 5);
    _tile_loadd(6, w_c + 96, kPairRowBytes);
    _tile_dpbf16ps(3, 4, 6);
  }
}

// Rows [i0, i0 + kRows) of a block's fp32 accumulators acc_16x64 += the
// pairs from p_begin to the end of K, by vdpbf16ps (K % 32 != 0).
template <int kRows>
MD_AVX512_BF16 void FinishPairs(const uint16_t* x_block, int64_t K,
                                const uint16_t* w_panel, int64_t p_begin,
                                int64_t k_pairs, const PanelPrefetch& pf,
                                int i0, float* acc_16x64) {
  __m512 acc[kRows][4];
#pragma GCC unroll 6
  for (int i = 0; i < kRows; ++i) {
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      acc[i][j] = _mm512_load_ps(acc_16x64 + (i0 + i) * 64 + 16 * j);
    }
  }
  AccumulatePanel<kRows>(x_block + i0 * K, K, w_panel, p_begin, k_pairs, pf,
                         acc);
#pragma GCC unroll 6
  for (int i = 0; i < kRows; ++i) {
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      _mm512_store_ps(acc_16x64 + (i0 + i) * 64 + 16 * j, acc[i][j]);
    }
  }
}

// One block of 16 rows of x (the first `rows` of them real, written to
// output rows m0..) against the panel starting at output n0.
MD_AMX_BF16 void AmxBlock(const GemmArgs& a, const uint16_t* w_panel,
                          const PanelColumns& cols, const PanelPrefetch& pf,
                          const uint16_t* x_block, int64_t rows, int64_t m0,
                          int64_t n0) {
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  const int64_t n_chunks = a.K / kChunkK;
  AccumulateChunks(x_block, a.K, w_panel, n_chunks, pf);
  alignas(64) float acc_16x64[kAmxRows * 64];
  _tile_stored(0, acc_16x64, 64 * sizeof(float));
  _tile_stored(1, acc_16x64 + 16, 64 * sizeof(float));
  _tile_stored(2, acc_16x64 + 32, 64 * sizeof(float));
  _tile_stored(3, acc_16x64 + 48, 64 * sizeof(float));
  const int64_t p_rest = n_chunks * kChunkPairs;
  if (p_rest < a.k_pairs) {
    // All 16 rows, padding included: the same work for every block.
    FinishPairs<6>(x_block, a.K, w_panel, p_rest, a.k_pairs, pf, 0, acc_16x64);
    FinishPairs<6>(x_block, a.K, w_panel, p_rest, a.k_pairs, PanelPrefetch{}, 6,
                   acc_16x64);
    FinishPairs<4>(x_block, a.K, w_panel, p_rest, a.k_pairs, PanelPrefetch{},
                   12, acc_16x64);
  }
  for (int64_t i = 0; i < rows; ++i) {
    __m512 acc[4];
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      acc[j] = _mm512_load_ps(acc_16x64 + i * 64 + 16 * j);
    }
    StoreRow(acc, cols, a.act, a.y_MN + (m0 + i) * a.N + n0);
  }
}

// Every row of the pass against one panel, 16 at a time; the blocks share
// prefetching next_panel (or null) as in the vdpbf16ps kernel.
MD_AMX_BF16 void AmxPanel(const GemmArgs& a, int64_t panel,
                          const uint16_t* next_panel) {
  const int64_t n0 = panel * kPackedPanelCols;
  const uint16_t* w_panel = a.w_panels + panel * a.k_pairs * kPairRowElems;
  const PanelColumns cols = ColumnsOf(a, n0);
  const int64_t n_blocks = (a.M + kAmxRows - 1) / kAmxRows;
  for (int64_t block = 0; block < n_blocks; ++block) {
    const int64_t m0 = block * kAmxRows;
    const int64_t rows = std::min(kAmxRows, a.M - m0);
    const uint16_t* x_block =
        rows == kAmxRows ? a.x_MK + m0 * a.K : a.x_tail_16K;
    AmxBlock(a, w_panel, cols,
             PrefetchShare(next_panel, a.k_pairs, block, n_blocks), x_block,
             rows, m0, n0);
  }
}

#endif  // defined(__x86_64__)

}  // namespace

#if defined(__x86_64__)
MD_AMX_BF16
#endif
void AmxPanelTask(const void* context, int64_t task) {
#if defined(__x86_64__)
  const GemmArgs& a = *static_cast<const GemmArgs*>(context);
  static const AmxTileConfig config = FullTiles(kTilesUsed);
  _tile_loadconfig(&config);
  ForEachPanelOfTask(a, task, [&](int64_t panel, const uint16_t* next) {
    AmxPanel(a, panel, next);
  });
  _tile_release();
#else
  (void)context;
  (void)task;
#endif
}

}  // namespace md::gemm_parts
