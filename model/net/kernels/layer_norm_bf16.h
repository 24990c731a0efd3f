// LayerNorm of bf16 rows with fp32 arithmetic inside, rounded once: ATen
// 1.13's bf16 layer_norm spends ~6–10 ns per element (~0.35 ms per decoder
// layer at batch 32, ~6 ms per vision layer norm over two crops), several
// times this plain loop.
#ifndef MOONDREAM_MODEL_NET_KERNELS_LAYER_NORM_BF16_H_
#define MOONDREAM_MODEL_NET_KERNELS_LAYER_NORM_BF16_H_

#include <ATen/core/Tensor.h>

namespace md {

// y = (x − mean) / √(var + eps) · gamma + beta over the last dim of x (bf16,
// contiguous, CPU, any leading dims); gamma and beta bf16 [C]. Each row is
// computed alone, in the same order whatever the number of rows or threads
// (rows are split across LibTorch's threads only in blocks), so a row's
// result does not depend on its batch. Undefined when it does not apply
// (other dtypes, layouts or devices, autograd): the caller runs
// at::layer_norm.
at::Tensor LayerNormBf16Rows(const at::Tensor& x, const at::Tensor& gamma,
                             const at::Tensor& beta, double eps);

}  // namespace md

#endif  // MOONDREAM_MODEL_NET_KERNELS_LAYER_NORM_BF16_H_
