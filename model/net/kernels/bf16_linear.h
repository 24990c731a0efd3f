// A bf16 linear layer for the few-row case (decode at small batch), where the
// cost is streaming the weights from memory. On CPUs with AVX512-BF16 it
// reads each weight once for all rows and keeps close to memory bandwidth,
// where at::linear (oneDNN) reaches about half of it.
#ifndef MOONDREAM_MODEL_NET_KERNELS_BF16_LINEAR_H_
#define MOONDREAM_MODEL_NET_KERNELS_BF16_LINEAR_H_

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace md {

// The most rows (product of x's leading dims) SmallBatchLinearBf16 takes.
inline constexpr int64_t kSmallBatchMaxRows = 16;

// y[M, N] = x[M, K] · w[N, K]ᵀ + b[N] for bf16 tensors, accumulating in fp32
// and rounding once to bf16 (round-to-nearest-even). Handles contiguous CPU
// bf16 x (any leading dims flattened to M rows, M <= kSmallBatchMaxRows), w
// [N, K] contiguous, b [N] (or undefined); returns an undefined tensor when it
// does not apply (other dtype/device/layout, M too large, or a CPU without
// AVX512-BF16) so the caller falls back to at::linear. The output has x's
// leading dims + [N]. Work is split over N on LibTorch's intra-op threads.
at::Tensor SmallBatchLinearBf16(const at::Tensor& x, const at::Tensor& w,
                                const at::Tensor& b);

// Whether this CPU runs AVX512-F/BW/VL/DQ and AVX512-BF16 (checked once).
bool HasAvx512Bf16();

}  // namespace md

#endif  // MOONDREAM_MODEL_NET_KERNELS_BF16_LINEAR_H_
