// The in-place bf16 softmax of attention scores against ATen's fp32 softmax:
// within one bf16 rounding, masked keys exactly 0, and it declines what it
// cannot run so callers fall back.
#include "model/net/kernels/softmax_bf16.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace md {
namespace {

// Random bf16 scores of the given shape, spread like attention logits.
at::Tensor RandomScores(at::IntArrayRef shape, double spread, uint64_t seed) {
  at::manual_seed(seed);
  return (at::randn(shape) * spread).to(at::kBFloat16);
}

// Runs the kernel on a copy; skips the test on CPUs without AVX512-BF16.
#define SOFTMAX_OR_SKIP(scores, scale)                            \
  do {                                                            \
    if (!ScaledSoftmaxBf16InPlace(scores, scale)) {               \
      GTEST_SKIP() << "no AVX512-BF16 here: the kernel declines"; \
    }                                                             \
  } while (0)

// |ours − fp32 softmax| within one bf16 rounding of the result (2^-8
// relative) plus the fp32 work before it; any indexing, scale or max bug is
// off by far more.
void ExpectWithinBf16Rounding(const at::Tensor& probs_bf16,
                              const at::Tensor& expected_f32) {
  const at::Tensor ours = probs_bf16.to(at::kFloat);
  const at::Tensor bound = expected_f32.abs() * std::ldexp(1.0, -8) + 1e-7;
  const at::Tensor excess = (ours - expected_f32).abs() - bound;
  EXPECT_LE(excess.max().item<double>(), 0.0)
      << "max |diff| " << (ours - expected_f32).abs().max().item<double>();
}

TEST(SoftmaxBf16Test, MatchesFp32SoftmaxOfScaledScores) {
  // 37 keys: two full vectors of 16 and a tail of 5.
  for (int64_t n : {1, 16, 37, 730}) {
    SCOPED_TRACE(n);
    at::Tensor scores = RandomScores({2, 3, 11, n}, 4.0, 7 + n);
    const at::Tensor expected = at::softmax(scores.to(at::kFloat) * 0.125, -1);
    at::Tensor probs = scores.clone();
    SOFTMAX_OR_SKIP(probs, 0.125);
    ExpectWithinBf16Rounding(probs, expected);
  }
}

TEST(SoftmaxBf16Test, MaskedKeysEndAsZeroAndRowsSumToOne) {
  at::Tensor scores = RandomScores({5, 40}, 3.0, 11);
  const float minus_inf = -std::numeric_limits<float>::infinity();
  scores.narrow(1, 20, 20).fill_(minus_inf);  // only the first 20 visible
  scores[4].fill_(minus_inf);
  scores[4][0] = 2.0;  // a row that sees a single key
  const at::Tensor expected = at::softmax(scores.to(at::kFloat), -1);
  at::Tensor probs = scores.clone();
  SOFTMAX_OR_SKIP(probs, 1.0);
  EXPECT_TRUE(
      at::equal(probs.narrow(1, 20, 20), at::zeros({5, 20}, probs.options())));
  EXPECT_EQ(probs[4][0].item<float>(), 1.0f);
  ExpectWithinBf16Rounding(probs, expected);
  const at::Tensor sums = probs.to(at::kFloat).sum(-1);
  EXPECT_LE((sums - 1).abs().max().item<double>(), 20 * std::ldexp(1.0, -8));
}

TEST(SoftmaxBf16Test, LargeScoresStayFinite) {
  at::Tensor scores = RandomScores({4, 64}, 1000.0, 13);
  const at::Tensor expected = at::softmax(scores.to(at::kFloat), -1);
  at::Tensor probs = scores.clone();
  SOFTMAX_OR_SKIP(probs, 1.0);
  EXPECT_TRUE(at::isfinite(probs).all().item<bool>());
  ExpectWithinBf16Rounding(probs, expected);
}

TEST(SoftmaxBf16Test, DeclinesOtherDtypesAndLayouts) {
  at::Tensor fp32 = at::randn({3, 8});
  const at::Tensor fp32_before = fp32.clone();
  EXPECT_FALSE(ScaledSoftmaxBf16InPlace(fp32, 1.0));
  EXPECT_TRUE(at::equal(fp32, fp32_before));

  at::Tensor strided = RandomScores({8, 3}, 1.0, 17).t();  // not contiguous
  const at::Tensor strided_before = strided.clone();
  EXPECT_FALSE(ScaledSoftmaxBf16InPlace(strided, 1.0));
  EXPECT_TRUE(at::equal(strided, strided_before));
}

}  // namespace
}  // namespace md
