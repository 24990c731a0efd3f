// SmallBatchLinearBf16 against the exact fp32 product of the same bf16
// inputs, and against at::linear on bf16 (what it replaces).
#include "model/net/kernels/bf16_linear.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

namespace md {
namespace {

// Error budget for y = bf16(s), s the kernel's fp32 sum, against r, the fp32
// at::linear of the same (bf16-valued) inputs:
//   * Rounding once to bf16 (8 significant bits, nearest-even) costs at most
//     half an ulp: |bf16(s) − s| <= 2^-8·|s|.
//   * Every product x·w of two bf16 values is exact in fp32, so s and r
//     differ only by the order of their fp32 additions. A sum of n terms in
//     any order is within (n−1)·u·Σ|term| of the exact sum (u = 2^-24);
//     both sums have at most K + 2 terms (bias included), hence
//     |s − r| <= 2·(K + 2)·u·Σ|term|.
// So |y − r| <= 2^-8·|r| + (1 + 2^-8)·2·(K + 2)·u·Σ|term|; the code uses
// 2^-8·|r| + 4·(K + 2)·u·Σ|term|, Σ|term| = |x|·|w|ᵀ + |b| computed here.
// The worst-case accumulation term is loose for large K, so two sharper
// checks follow: the fp32 sums differ far below a bf16 ulp, so nearly every
// output is exactly bf16(r) (ties broken differently only when r lies within
// |s − r| of a rounding boundary), and the largest error is at most twice
// that of at::linear on bf16, which also rounds an fp32 sum once, or half an
// ulp of the largest output, whichever is larger.
void ExpectMatchesReference(const at::Tensor& y, const at::Tensor& x,
                            const at::Tensor& w, const at::Tensor& b) {
  const int64_t K = w.size(1);
  const at::Tensor b_f = b.defined() ? b.to(at::kFloat) : at::Tensor();
  const at::Tensor r = at::linear(x.to(at::kFloat), w.to(at::kFloat), b_f);
  at::Tensor sum_abs =
      at::linear(x.to(at::kFloat).abs(), w.to(at::kFloat).abs(),
                 b.defined() ? b_f.abs() : at::Tensor());
  ASSERT_EQ(y.sizes(), r.sizes());
  ASSERT_EQ(y.scalar_type(), at::kBFloat16);

  const at::Tensor err = (y.to(at::kFloat) - r).abs();
  const at::Tensor tol =
      r.abs() * std::ldexp(1.0, -8) + sum_abs * (4.0 * (K + 2) * 0x1p-24);
  const int64_t n_over = (err > tol).sum().item<int64_t>();
  EXPECT_EQ(n_over, 0) << "max err " << err.max().item<float>();

  const int64_t n_outputs = r.numel();
  const int64_t n_inexact = (y != r.to(at::kBFloat16)).sum().item<int64_t>();
  EXPECT_LE(n_inexact, 1 + n_outputs / 100)
      << "of " << n_outputs << " outputs differ from bf16(fp32 reference)";

  const double max_err = err.max().item<double>();
  const double linear_err =
      (at::linear(x, w, b).to(at::kFloat) - r).abs().max().item<double>();
  const double half_ulp_of_max = std::ldexp(r.abs().max().item<double>(), -9);
  EXPECT_LE(max_err, std::max(2 * linear_err, half_ulp_of_max))
      << "at::linear bf16 max err " << linear_err;
}

class SmallBatchLinearTest
    : public ::testing::TestWithParam<std::tuple<int64_t, int64_t>> {
 protected:
  void SetUp() override {
    if (!HasAvx512Bf16()) GTEST_SKIP() << "CPU lacks AVX512-BF16";
  }
};

TEST_P(SmallBatchLinearTest, MatchesFp32Reference) {
  const auto [K, N] = GetParam();
  at::manual_seed(K * 10007 + N);
  const at::Tensor w = (at::randn({N, K}) * 0.05).to(at::kBFloat16);
  const at::Tensor b = (at::randn({N}) * 0.1).to(at::kBFloat16);
  for (int64_t M : {1, 2, 3, 5, 8, 16}) {
    SCOPED_TRACE(::testing::Message() << "M=" << M << " K=" << K << " N=" << N);
    const at::Tensor x = at::randn({M, K}).to(at::kBFloat16);
    const at::Tensor y = SmallBatchLinearBf16(x, w, b);
    ASSERT_TRUE(y.defined());
    ExpectMatchesReference(y, x, w, b);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, SmallBatchLinearTest,
    ::testing::Combine(::testing::Values(32, 64, 720, 1024, 2690, 8192),
                       ::testing::Values(1, 7, 64, 3072, 4096)),
    [](const ::testing::TestParamInfo<std::tuple<int64_t, int64_t>>& info) {
      return "K" + std::to_string(std::get<0>(info.param)) + "_N" +
             std::to_string(std::get<1>(info.param));
    });

TEST_F(SmallBatchLinearTest, LeadingDimsFlattenAndBiasIsOptional) {
  at::manual_seed(1);
  const at::Tensor x = at::randn({2, 3, 100}).to(at::kBFloat16);
  const at::Tensor w = (at::randn({50, 100}) * 0.1).to(at::kBFloat16);
  const at::Tensor y = SmallBatchLinearBf16(x, w, at::Tensor());
  ASSERT_TRUE(y.defined());
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{2, 3, 50}));
  ExpectMatchesReference(y, x, w, at::Tensor());
}

TEST_F(SmallBatchLinearTest, OneDimensionalXIsOneRow) {
  at::manual_seed(2);
  const at::Tensor x = at::randn({33}).to(at::kBFloat16);
  const at::Tensor w = at::randn({9, 33}).to(at::kBFloat16);
  const at::Tensor b = at::randn({9}).to(at::kBFloat16);
  const at::Tensor y = SmallBatchLinearBf16(x, w, b);
  ASSERT_TRUE(y.defined());
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{9}));
  ExpectMatchesReference(y, x, w, b);
}

TEST_F(SmallBatchLinearTest, NoRowsGivesEmptyOutput) {
  const at::Tensor x = at::zeros({0, 64}, at::kBFloat16);
  const at::Tensor w = at::zeros({8, 64}, at::kBFloat16);
  const at::Tensor y = SmallBatchLinearBf16(x, w, at::Tensor());
  ASSERT_TRUE(y.defined());
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{0, 8}));
}

TEST_F(SmallBatchLinearTest, RoundsToNearestEvenOnce) {
  // 1 + 2^-8 lies halfway between bf16 1 and 1 + 2^-7: ties go to even (1);
  // 1 + 3·2^-8 lies halfway between 1 + 2^-7 and 1 + 2^-6: to 1 + 2^-6.
  // Both sums are exact in fp32, so only the final rounding is checked.
  const at::Tensor x = at::ones({2, 2}, at::kBFloat16);
  const at::Tensor w =
      at::tensor({1.0f, 0x1p-8f}, at::kFloat).reshape({1, 2}).to(at::kBFloat16);
  const at::Tensor b = at::tensor({0.0f}, at::kFloat).to(at::kBFloat16);
  at::Tensor x2 = x.clone();
  x2[1][1] = 3.0;
  const at::Tensor y = SmallBatchLinearBf16(x2, w, b);
  ASSERT_TRUE(y.defined());
  EXPECT_EQ(y[0][0].item<float>(), 1.0f);
  EXPECT_EQ(y[1][0].item<float>(), 1.0f + 0x1p-6f);
}

TEST(SmallBatchLinearFallbackTest, ReturnsUndefinedWhenItDoesNotApply) {
  const at::Tensor x = at::randn({4, 64}).to(at::kBFloat16);
  const at::Tensor w = at::randn({16, 64}).to(at::kBFloat16);
  const at::Tensor b = at::randn({16}).to(at::kBFloat16);
  // fp32 inputs.
  EXPECT_FALSE(
      SmallBatchLinearBf16(x.to(at::kFloat), w.to(at::kFloat), b.to(at::kFloat))
          .defined());
  EXPECT_FALSE(SmallBatchLinearBf16(x, w, b.to(at::kFloat)).defined());
  // Non-contiguous x and w.
  const at::Tensor x_t = at::randn({64, 4}).to(at::kBFloat16).t();
  ASSERT_FALSE(x_t.is_contiguous());
  EXPECT_FALSE(SmallBatchLinearBf16(x_t, w, b).defined());
  EXPECT_FALSE(
      SmallBatchLinearBf16(x, at::randn({64, 16}).to(at::kBFloat16).t(), b)
          .defined());
  // More rows than kSmallBatchMaxRows, also through leading dims.
  EXPECT_FALSE(
      SmallBatchLinearBf16(
          at::randn({kSmallBatchMaxRows + 1, 64}).to(at::kBFloat16), w, b)
          .defined());
  EXPECT_FALSE(
      SmallBatchLinearBf16(at::randn({3, 6, 64}).to(at::kBFloat16), w, b)
          .defined());
  // Shapes that do not match.
  EXPECT_FALSE(
      SmallBatchLinearBf16(x, w.narrow(1, 0, 32).contiguous(), b).defined());
  EXPECT_FALSE(SmallBatchLinearBf16(x, w, b.narrow(0, 0, 8)).defined());
  // Without AVX512-BF16 nothing applies.
  if (!HasAvx512Bf16()) {
    EXPECT_FALSE(SmallBatchLinearBf16(x, w, b).defined());
  } else {
    EXPECT_TRUE(SmallBatchLinearBf16(x, w, b).defined());
    EXPECT_TRUE(SmallBatchLinearBf16(
                    at::randn({kSmallBatchMaxRows, 64}).to(at::kBFloat16), w, b)
                    .defined());
  }
}

}  // namespace
}  // namespace md
