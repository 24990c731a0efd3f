#include "model/net/kernels/batched_matmul.h"

#include <ATen/ATen.h>

#include "model/net/kernels/x86_simd.h"

namespace md {
namespace {

bool AtenBf16MatmulAccumulatesInBf16(const at::Tensor& a) {
  return a.scalar_type() == at::kBFloat16 && a.device().is_cpu() &&
         !CpuHasAvx512Bf16();
}

}  // namespace

at::Tensor BatchedMatmul(const at::Tensor& a, const at::Tensor& b) {
  if (!AtenBf16MatmulAccumulatesInBf16(a)) return at::matmul(a, b);
  return at::matmul(a.to(at::kFloat), b.to(at::kFloat)).to(at::kBFloat16);
}

}  // namespace md
