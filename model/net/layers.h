// The small building blocks both transformers share.
#ifndef MOONDREAM_MODEL_NET_LAYERS_H_
#define MOONDREAM_MODEL_NET_LAYERS_H_

#include <ATen/ATen.h>

#include "model/io/weights.h"
#include "model/net/kernels/bf16_linear.h"

namespace md {

// A few rows of bf16 (decode steps) go to our weight-streaming kernel,
// which reads the weights about twice as fast as oneDNN's GEMM does here.
inline at::Tensor Linear(const at::Tensor& x, const LinearWeights& w) {
  if (x.scalar_type() == at::kBFloat16) {
    at::Tensor y = SmallBatchLinearBf16(x, w.weight, w.bias);
    if (y.defined()) return y;
  }
  return at::linear(x, w.weight, w.bias);
}

inline at::Tensor LayerNorm(const at::Tensor& x, const LayerNormWeights& w) {
  return at::layer_norm(x, {w.weight.size(0)}, w.weight, w.bias, 1e-5);
}

// fc1 → GELU (tanh approximation) → fc2.
inline at::Tensor Mlp(const at::Tensor& x, const MlpWeights& w) {
  return Linear(at::gelu(Linear(x, w.fc1), "tanh"), w.fc2);
}

}  // namespace md

#endif  // MOONDREAM_MODEL_NET_LAYERS_H_
