// Decode attention's scores on AMX tiles (bf16): for up to 16 queries at
// once, one tile product per 32 dims gives 16 keys × 16 queries, each score
// q·K[k] accumulated over the head dim in the same chunks whatever the
// key's block or the query's column. So a sequence's scores are the same
// alone or beside others, as with vdpbf16ps, at a small fraction of its
// cost. Internal to decode_attention.cc.
#ifndef MOONDREAM_MODEL_NET_KERNELS_DECODE_SCORES_AMX_H_
#define MOONDREAM_MODEL_NET_KERNELS_DECODE_SCORES_AMX_H_

#include <cstdint>

namespace md {

inline constexpr int kAmxKeys = 16;     // keys per tile product
inline constexpr int kAmxQueries = 16;  // queries per tile product
inline constexpr int kAmxChunk = 32;    // head dims per tile product
inline constexpr int kAmxMaxHeadDim = 256;

// Whether ScoresAmx runs here for head dim d: AMX present, d a multiple of
// 32 up to 256.
bool AmxScoresApply(int d);

// s_out[m][k] = scale · q[m]·keys[k] for k < n (keys rows d apart) and the
// n_q <= 16 queries, and maxes[m] raised to the largest of them. tile_rows:
// 16·d bf16 of scratch for a last block of fewer than 16 keys (tiles load
// 16 whole rows). Only where AmxScoresApply(d).
void ScoresAmx(const uint16_t* const* q, int n_q, const uint16_t* keys, int n,
               int d, float scale, float* const* s_out, float* maxes,
               uint16_t* tile_rows);

}  // namespace md

#endif  // MOONDREAM_MODEL_NET_KERNELS_DECODE_SCORES_AMX_H_
