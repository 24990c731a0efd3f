// Initial weights the trainer can start parts of the model from
// (TrainOptions: --sincos-positions, --mimetic-attention, --fourier-bins,
// and the region encoders' Fourier frequencies). Each is a plain function
// of its shape (and a generator), so tests check it directly.
#ifndef MOONDREAM_TOOLS_TRAIN_INIT_WEIGHTS_H_
#define MOONDREAM_TOOLS_TRAIN_INIT_WEIGHTS_H_

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace md::train {

// Standard deviation of the Fourier frequencies of the region encoders at
// initialisation: fan-in scaling would make them ~0.1 cycles over the
// image, too coarse to tell coordinates apart.
inline constexpr double kFourierInitStd = 4.0;

// The vision encoder's position embedding starts as 2-D sine-cosine
// features (x in the first half of the channels, y in the second, sin/cos
// pairs at frequencies kPositionBase^(-k/quarter) per patch), [1, grid²,
// dim]. Fan-in random init leaves a patch's position ~8x fainter than its
// content, and the region head did not learn where anything is: on the
// scenes, the x/y loss stayed at the marginal's for 1,000 steps.
inline constexpr double kPositionBase = 100.0;
at::Tensor SinCosPositions(int64_t grid, int64_t dim);

// Mimetic initialisation of one self-attention layer (Trockman & Kolter,
// "Mimetic Initialization of Self-Attention Layers", ICML 2023): per head,
// Wq_hᵀ·Wk_h is the best rank-(dim/heads) approximation of
// kMimeticQk·(Z + I) and Wproj_h·Wv_h that of kMimeticVo·(Z − I), with Z
// noise of variance 1/dim. Attention then starts close to "attend to
// tokens like me" (with sine-cosine positions: to my neighbours) and the
// value path close to a damped identity, which trained ViTs show and which
// a ViT trained from scratch on little data hardly finds alone. Returns
// {qkv weight [3·dim, dim] (rows q | k | v), proj weight [dim, dim]}.
inline constexpr double kMimeticQk = 0.7;
inline constexpr double kMimeticVo = 0.4;
struct MimeticWeights {
  at::Tensor qkv_weight;
  at::Tensor proj_weight;
};
MimeticWeights MimeticAttention(int64_t dim, int64_t heads, at::Generator& gen);

// [bins, dim]: row b holds cos and sin of 2π·c·b/bins for dim/2 cycle
// counts c geometric from 1/2 to bins/16 (TrainOptions::fourier_bins).
inline constexpr double kFourierBinsScale = 0.1;
at::Tensor FourierBins(int64_t bins, int64_t dim);

}  // namespace md::train

#endif  // MOONDREAM_TOOLS_TRAIN_INIT_WEIGHTS_H_
