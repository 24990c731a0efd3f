// Vision encoder, crop reconstruction and projection (docs/DESIGN.md §2.2–2.3).
//
// Shapes: B crops, P = 729 patches per crop, E = enc_dim, C = text dim.
#ifndef MOONDREAM_MODEL_NET_VISION_H_
#define MOONDREAM_MODEL_NET_VISION_H_

#include <ATen/core/Tensor.h>

#include "model/config/config.h"
#include "model/image/tiling.h"
#include "model/io/weights.h"

namespace md {

// uint8 crops [B, 378, 378, 3] (as preprocessing makes them) → normalised
// [B, 3, 378, 378] in `dtype`: x/255 − 0.5, / 0.5, computed in float32.
at::Tensor NormalizeCrops(const at::Tensor& crops_BHWC_u8, at::ScalarType dtype,
                          at::Device device);

// Normalised crops [B, 3, 378, 378] → features [B, P, E] after post LN.
at::Tensor EncodeCrops(const at::Tensor& crops_BCHW, const VisionWeights& w,
                       const VisionConfig& config);

// uint8 crops [B, 378, 378, 3] → features [B, P, E], each distinct crop
// encoded once and its features shared by its copies (a 1×1 tiling's tile
// is its global crop, pixel for pixel). Every op of the encoder treats crops
// independently, so in bf16 (our batch-invariant kernels) a crop's features
// are the same bits as encoding every copy; fp32 BLAS may block a smaller
// batch differently, within float rounding. Differentiable (the copies'
// gradients add up).
at::Tensor EncodeDistinctCrops(const at::Tensor& crops_BHWC_u8,
                               const VisionWeights& w,
                               const VisionConfig& config, at::ScalarType dtype,
                               at::Device device);

// Local crop features [n_tiles, 27, 27, E] stitched with the overlap margin →
// [27 + 19·(rows−1), 27 + 19·(cols−1), E].
at::Tensor ReconstructFromCrops(const at::Tensor& local_NHWE, Tiling tiling,
                                int overlap_margin);

// Adaptive average pool of the reconstruction to [27, 27, E].
at::Tensor PoolReconstructed(const at::Tensor& reconstructed_HWE,
                             const VisionConfig& config);

// concat(global [P, E], pooled [27, 27, E] as [P, E]) → proj MLP → [P, C].
at::Tensor ProjectImage(const at::Tensor& global_PE,
                        const at::Tensor& pooled_GGE, const VisionWeights& w,
                        const VisionConfig& config);

}  // namespace md

#endif  // MOONDREAM_MODEL_NET_VISION_H_
