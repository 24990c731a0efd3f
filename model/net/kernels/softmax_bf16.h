// Row softmax of bf16 attention scores, in place, for the attention of whole
// blocks of queries (the vision encoder's crops, the image prefix): ATen's
// softmax over such score tensors runs at a fraction of memory speed on
// CPU (upcast copy, softmax, downcast copy), which made it a third of the
// prefix prefill.
#ifndef MOONDREAM_MODEL_NET_KERNELS_SOFTMAX_BF16_H_
#define MOONDREAM_MODEL_NET_KERNELS_SOFTMAX_BF16_H_

#include <ATen/core/Tensor.h>

namespace md {

// Each row r of scores (bf16, contiguous, CPU, last dim the keys) becomes
// softmax(scale · scores[r]) computed in fp32 (e^x within ~1.3 ulp) and
// rounded to bf16 (round to nearest even). Masked keys hold −inf and end as
// 0. Returns false and leaves scores untouched where the kernel does not
// apply (dtype, layout, device, no AVX512-BF16); the caller then runs
// at::softmax.
bool ScaledSoftmaxBf16InPlace(at::Tensor& scores, double scale);

}  // namespace md

#endif  // MOONDREAM_MODEL_NET_KERNELS_SOFTMAX_BF16_H_
