// Attention's batched products (scores = q·kᵀ, out = probs·v) for bf16 on
// CPUs without native bf16, where ATen's own bf16 product is not accurate
// enough.
#ifndef MOONDREAM_MODEL_NET_KERNELS_BATCHED_MATMUL_H_
#define MOONDREAM_MODEL_NET_KERNELS_BATCHED_MATMUL_H_

#include <ATen/core/Tensor.h>

namespace md {

// at::matmul(a, b), except bf16 on a CPU without AVX512-BF16: there LibTorch
// 1.13 has no oneDNN bf16 product and its fallback gemm adds every term
// straight into the bf16 output, so a sum over ~730 keys (probs·v over the
// image prefix) loses several percent, and the golden model's bf16 logits
// their direction. There the product runs in fp32 and is rounded to bf16
// once, as oneDNN's is. Everything else (fp32, CUDA, AVX512-BF16 CPUs) is
// at::matmul unchanged.
at::Tensor BatchedMatmul(const at::Tensor& a, const at::Tensor& b);

}  // namespace md

#endif  // MOONDREAM_MODEL_NET_KERNELS_BATCHED_MATMUL_H_
