// The bf16 row LayerNorm against ATen's fp32 layer_norm, its batch
// invariance (a row alone = the same row in a batch split across threads),
// and what it declines.
#include "model/net/kernels/layer_norm_bf16.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <cmath>

namespace md {
namespace {

constexpr double kEps = 1e-5;

struct Case {
  at::Tensor x, gamma, beta;  // bf16
};

Case RandomCase(at::IntArrayRef shape, uint64_t seed) {
  at::manual_seed(seed);
  const int64_t c = shape.back();
  return {(at::randn(shape) * 3 + 0.5).to(at::kBFloat16),
          (at::randn({c}) * 0.2 + 1).to(at::kBFloat16),
          (at::randn({c}) * 0.1).to(at::kBFloat16)};
}

TEST(LayerNormBf16Test, MatchesFp32LayerNormWithinOneRounding) {
  // [crops, patches, channels] as the vision encoder calls it; 720 channels.
  const Case c = RandomCase({2, 100, 720}, 1);
  const at::Tensor y = LayerNormBf16Rows(c.x, c.gamma, c.beta, kEps);
  ASSERT_TRUE(y.defined());
  EXPECT_EQ(y.sizes(), c.x.sizes());
  EXPECT_EQ(y.scalar_type(), at::kBFloat16);
  const at::Tensor expected =
      at::layer_norm(c.x.to(at::kFloat), {720}, c.gamma.to(at::kFloat),
                     c.beta.to(at::kFloat), kEps);
  // One bf16 rounding of the result (2^-8 relative) plus fp32 summation.
  const at::Tensor bound = expected.abs() * std::ldexp(1.0, -8) + 1e-5;
  EXPECT_LE(((y.to(at::kFloat) - expected).abs() - bound).max().item<double>(),
            0.0);
}

TEST(LayerNormBf16Test, ARowAloneEqualsItsRowInAThreadedBatch) {
  at::set_num_threads(2);
  const Case c = RandomCase({700, 256}, 2);  // several row blocks
  const at::Tensor batch = LayerNormBf16Rows(c.x, c.gamma, c.beta, kEps);
  ASSERT_TRUE(batch.defined());
  for (int64_t r : {0, 63, 64, 350, 699}) {
    const at::Tensor alone = LayerNormBf16Rows(c.x.narrow(0, r, 1).contiguous(),
                                               c.gamma, c.beta, kEps);
    EXPECT_TRUE(at::equal(alone, batch.narrow(0, r, 1))) << "row " << r;
  }
}

TEST(LayerNormBf16Test, DeclinesWhatItCannotRun) {
  const Case c = RandomCase({4, 8}, 3);
  EXPECT_FALSE(LayerNormBf16Rows(c.x.to(at::kFloat), c.gamma.to(at::kFloat),
                                 c.beta.to(at::kFloat), kEps)
                   .defined());
  EXPECT_FALSE(LayerNormBf16Rows(c.x.t(), c.gamma, c.beta, kEps).defined());
  EXPECT_FALSE(
      LayerNormBf16Rows(c.x, c.gamma.narrow(0, 0, 4), c.beta, kEps).defined());
}

}  // namespace
}  // namespace md
