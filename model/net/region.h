// The region head: coordinates and sizes in and out of the text model
// (docs/DESIGN.md §2.5). B rows; coordinates are in [0, 1].
#ifndef MOONDREAM_MODEL_NET_REGION_H_
#define MOONDREAM_MODEL_NET_REGION_H_

#include <ATen/core/Tensor.h>

#include "model/io/weights.h"

namespace md {

// [cos 2π·x·F, sin 2π·x·F] for x [B, k] and frequencies F [k, n] → [B, 2n].
at::Tensor FourierFeatures(const at::Tensor& x_BK, const at::Tensor& freqs_KF);

// Coordinates [B] → embeddings [B, C].
at::Tensor EncodeCoordinate(const at::Tensor& coord_B, const RegionWeights& w);
// Hidden (pre post-LN) [B, C] → coordinate logits [B, 1024].
at::Tensor DecodeCoordinate(const at::Tensor& hidden_BC,
                            const RegionWeights& w);
// Sizes [B, 2] (w, h) → embeddings [B, C].
at::Tensor EncodeSize(const at::Tensor& size_B2, const RegionWeights& w);
// Hidden [B, C] → size logits [B, 2, 1024] (row 0 width, row 1 height).
at::Tensor DecodeSize(const at::Tensor& hidden_BC, const RegionWeights& w);

}  // namespace md

#endif  // MOONDREAM_MODEL_NET_REGION_H_
