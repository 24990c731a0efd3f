// The small building blocks both transformers share.
#ifndef MOONDREAM_MODEL_NET_LAYERS_H_
#define MOONDREAM_MODEL_NET_LAYERS_H_

#include <ATen/ATen.h>

#include "model/io/weights.h"
#include "model/net/kernels/bf16_gemm.h"
#include "model/net/kernels/layer_norm_bf16.h"

namespace md {

// bf16 with packed weights goes to our packed kernel (every batch size, each
// row bit-identical whatever the batch); everything else to at::linear.
inline at::Tensor Linear(const at::Tensor& x, const LinearWeights& w,
                         LinearActivation act = LinearActivation::kNone) {
  return LinearWithPacked(x, w.weight, w.packed, w.bias, act);
}

// bf16 on CPU: our row kernel (fp32 inside, batch invariant); else ATen.
inline at::Tensor LayerNorm(const at::Tensor& x, const LayerNormWeights& w) {
  constexpr double kEps = 1e-5;
  at::Tensor y = LayerNormBf16Rows(x, w.weight, w.bias, kEps);
  if (y.defined()) return y;
  return at::layer_norm(x, {w.weight.size(0)}, w.weight, w.bias, kEps);
}

// fc1 → GELU (tanh approximation) → fc2. The packed kernel applies GELU to
// fc1's outputs before storing them (one pass over the hidden activations
// less); fp32 runs at::linear then at::gelu exactly as before.
inline at::Tensor Mlp(const at::Tensor& x, const MlpWeights& w) {
  return Linear(Linear(x, w.fc1, LinearActivation::kGeluTanh), w.fc2);
}

}  // namespace md

#endif  // MOONDREAM_MODEL_NET_LAYERS_H_
