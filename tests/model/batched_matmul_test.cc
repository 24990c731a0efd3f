// Attention's batched products in bf16 against the fp32 product of the same
// bf16 inputs: within one bf16 rounding on every CPU, including those where
// ATen's own bf16 product accumulates in bf16 (no AVX512-BF16).
#include "model/net/kernels/batched_matmul.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

namespace md {
namespace {

// |ours − exact| within one bf16 rounding of the result (2^-8 relative, 2×
// headroom) plus fp32 summation-order noise scaled by Σ|a||b|. A sum
// accumulated in bf16 over hundreds of keys is off by far more (~6% of the
// largest output measured on an AVX2 CPU).
void ExpectWithinOneBf16Rounding(const at::Tensor& a, const at::Tensor& b,
                                 const at::Tensor& ours) {
  const at::Tensor a32 = a.to(at::kFloat), b32 = b.to(at::kFloat);
  const at::Tensor exact = at::matmul(a32, b32);
  const at::Tensor magnitude = at::matmul(a32.abs(), b32.abs());
  const at::Tensor bound = exact.abs() * std::ldexp(1.0, -8) + magnitude * 1e-6;
  const at::Tensor diff = (ours.to(at::kFloat) - exact).abs();
  EXPECT_LE((diff - bound).max().item<double>(), 0.0)
      << "max |diff| " << diff.max().item<double>() << " of max |exact| "
      << exact.abs().max().item<double>();
}

TEST(BatchedMatmulTest, ProbabilitiesTimesValuesOverTheImagePrefix) {
  at::manual_seed(3);
  // [B, H, P, P] · [B, H, P, D] with v a transposed view, as attention has it.
  const at::Tensor probs =
      at::softmax(at::randn({2, 4, 16, 730}) * 3, -1).to(at::kBFloat16);
  const at::Tensor v =
      at::randn({2, 730, 4, 64}).to(at::kBFloat16).transpose(1, 2);
  const at::Tensor out = BatchedMatmul(probs, v);
  EXPECT_EQ(out.scalar_type(), at::kBFloat16);
  EXPECT_EQ(out.sizes(), (at::IntArrayRef{2, 4, 16, 64}));
  ExpectWithinOneBf16Rounding(probs, v, out);
}

TEST(BatchedMatmulTest, QueriesTimesTransposedKeys) {
  at::manual_seed(4);
  const at::Tensor q = at::randn({3, 5, 72}).to(at::kBFloat16);
  const at::Tensor k = at::randn({3, 730, 72}).to(at::kBFloat16);
  const at::Tensor scores = BatchedMatmul(q, k.transpose(1, 2));
  ExpectWithinOneBf16Rounding(q, k.transpose(1, 2), scores);
}

TEST(BatchedMatmulTest, Fp32IsAtenMatmulBitForBit) {
  at::manual_seed(5);
  const at::Tensor a = at::randn({4, 9, 33}), b = at::randn({4, 33, 7});
  EXPECT_TRUE(at::equal(BatchedMatmul(a, b), at::matmul(a, b)));
}

}  // namespace
}  // namespace md
