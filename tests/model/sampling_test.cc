#include "model/skills/sampling.h"

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <vector>

#include "model/skills/checks.h"

namespace md {
namespace {

using ::testing::HasSubstr;

// Logits whose softmax at temperature 1 is exactly `probs`.
at::Tensor LogitsFor(const std::vector<double>& probs) {
  std::vector<float> logits;
  for (double p : probs) logits.push_back(static_cast<float>(std::log(p)));
  return at::tensor(logits);
}

TEST(SamplingTest, ValidationNamesTheField) {
  EXPECT_TRUE(CheckSampling({}).ok());
  EXPECT_THAT(CheckSampling({.temperature = -0.5f}).message(),
              HasSubstr("temperature"));
  EXPECT_THAT(CheckSampling({.temperature = INFINITY}).message(),
              HasSubstr("temperature"));
  EXPECT_THAT(CheckSampling({.top_p = 0}).message(), HasSubstr("top_p"));
  EXPECT_THAT(CheckSampling({.top_p = 1.01f}).message(), HasSubstr("top_p"));
  EXPECT_THAT(CheckSampling({.min_p = -0.1f}).message(), HasSubstr("min_p"));
  EXPECT_THAT(CheckSampling({.min_p = NAN}).message(), HasSubstr("min_p"));
}

TEST(SamplingTest, DrawWalksTheCumulativeDistribution) {
  const at::Tensor logits = LogitsFor({0.1, 0.6, 0.3});
  const SamplingParams params{.temperature = 1.0f};
  // Sorted: token 1 (0.6), token 2 (0.3), token 0 (0.1).
  EXPECT_EQ(SampleToken(logits, params, 0.0), 1);
  EXPECT_EQ(SampleToken(logits, params, 0.59), 1);
  EXPECT_EQ(SampleToken(logits, params, 0.61), 2);
  EXPECT_EQ(SampleToken(logits, params, 0.89), 2);
  EXPECT_EQ(SampleToken(logits, params, 0.91), 0);
  EXPECT_EQ(SampleToken(logits, params, 0.999999), 0);
}

TEST(SamplingTest, TopPKeepsTheSmallestSetReachingP) {
  const at::Tensor logits = LogitsFor({0.1, 0.6, 0.3});
  // 0.6 < 0.7, so token 2 is kept too; token 0 is cut.
  const SamplingParams params{.temperature = 1.0f, .top_p = 0.7f};
  EXPECT_EQ(SampleToken(logits, params, 0.999999), 2);
  // top_p tiny: only the most likely token survives.
  EXPECT_EQ(
      SampleToken(logits, {.temperature = 1.0f, .top_p = 1e-6f}, 0.999999), 1);
}

TEST(SamplingTest, MinPDropsUnlikelyTokens) {
  const at::Tensor logits = LogitsFor({0.1, 0.6, 0.3});
  // Floor 0.4 × 0.6 = 0.24: token 0 (0.1) goes, token 2 (0.3) stays.
  const SamplingParams params{.temperature = 1.0f, .min_p = 0.4f};
  EXPECT_EQ(SampleToken(logits, params, 0.999999), 2);
  EXPECT_EQ(SampleToken(logits, {.temperature = 1.0f, .min_p = 1.0f}, 0.999999),
            1);
}

TEST(SamplingTest, LowTemperatureSharpens) {
  const at::Tensor logits = LogitsFor({0.1, 0.6, 0.3});
  // At T = 0.05, token 1 carries all but ~1e-6 of the mass.
  EXPECT_EQ(SampleToken(logits, {.temperature = 0.05f}, 0.99), 1);
}

TEST(SamplingTest, GreedyChooserIsArgmax) {
  TokenChooser greedy = MakeTokenChooser({});
  EXPECT_EQ(greedy(LogitsFor({0.1, 0.6, 0.3})), 1);
}

TEST(SamplingTest, SeededStreamsRepeatAndFrequenciesMatch) {
  const at::Tensor logits = LogitsFor({0.1, 0.6, 0.3});
  const SamplingParams params{.temperature = 1.0f, .seed = 1234};
  TokenChooser a = MakeTokenChooser(params);
  TokenChooser b = MakeTokenChooser(params);
  std::map<int, int> counts;
  constexpr int kDraws = 20000;
  for (int i = 0; i < kDraws; ++i) {
    const int token = a(logits);
    EXPECT_EQ(token, b(logits));
    ++counts[token];
  }
  // Binomial standard deviations are below 0.0035 here; 0.02 is > 5 sigma.
  EXPECT_NEAR(counts[0] / double{kDraws}, 0.1, 0.02);
  EXPECT_NEAR(counts[1] / double{kDraws}, 0.6, 0.02);
  EXPECT_NEAR(counts[2] / double{kDraws}, 0.3, 0.02);
}

TEST(SamplingRandomTest, UniformInUnitIntervalAndSeedDependent) {
  SamplingRandom a(1), b(2);
  bool differs = false;
  for (int i = 0; i < 1000; ++i) {
    const double x = a.NextDouble();
    EXPECT_GE(x, 0.0);
    EXPECT_LT(x, 1.0);
    differs |= x != b.NextDouble();
  }
  EXPECT_TRUE(differs);
}

}  // namespace
}  // namespace md
