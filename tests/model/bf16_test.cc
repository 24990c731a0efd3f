// bf16 compute against the fp32 reference: every golden case's prefill
// logits (the whole vision + prefix + prompt path in bf16) must stay close to
// the reference's fp32 logits in direction and size.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "model/net/moondream.h"
#include "model/skills/skills.h"
#include "tests/model/golden.h"

namespace md {
namespace {

using ::md::testing::Cases;
using ::md::testing::CaseTensor;
using ::md::testing::GoldenDir;
using Json = nlohmann::json;

// Bounds. Measured here (45 cases, golden set, LibTorch 1.13 CPU): min
// cosine 0.999884, max relative error 0.0161 (max |diff| 0.23 on logits of
// magnitude ~15), argmax equal in 44 of 45. bf16 keeps 8 mantissa bits, and
// the logits pass through 27 vision layers, the projection and 2 text
// layers, so a percent or two is expected. The bounds leave ~8x headroom on
// 1 − cosine and 2.5x on the relative error for other CPUs' kernels; a mask,
// layout or dtype bug decorrelates the logits far past them (cosine < 0.99).
constexpr double kMinCosine = 0.999;
constexpr double kMaxRelativeError = 0.04;  // max |diff| / max |logit|

TEST(Bf16Test, PrefillLogitsTrackFp32) {
  SetComputeThreads(2);
  auto model = Model::Load(GoldenDir(), Moondream2Config(),
                           ModelOptions{.dtype = at::kBFloat16});
  ASSERT_TRUE(model.ok()) << model.status();

  double worst_cosine = 1.0, worst_relative = 0.0, worst_abs = 0.0;
  int n_cases = 0, n_same_argmax = 0;
  for (const Json& image : Cases()["images"]) {
    ImageCrops crops{
        CaseTensor(image["tensors"]["crops"]),
        Tiling{image["tiling"][0].get<int>(), image["tiling"][1].get<int>()}};
    auto encoded = EncodeImage(**model, crops);
    ASSERT_TRUE(encoded.ok()) << encoded.status();
    for (const Json& tc : Cases()["text_cases"]) {
      if (tc["image"] != image["name"] || !tc.contains("prompt_ids")) continue;
      SCOPED_TRACE(tc["id"].get<std::string>());
      at::Tensor logits;
      auto observe = [&](size_t, const StepOutput& out) {
        if (!logits.defined()) logits = out.logits_V.to(at::kFloat);
      };
      auto result = GenerateText(**model, *encoded,
                                 tc["prompt_ids"].get<std::vector<int>>(),
                                 /*max_tokens=*/1, {}, observe);
      ASSERT_TRUE(result.ok()) << result.status();
      at::Tensor expected = CaseTensor(tc["tensors"]["prefill_logits"]);
      const double cosine =
          at::cosine_similarity(logits, expected, 0).item<double>();
      const double max_abs = (logits - expected).abs().max().item<double>();
      const double relative = max_abs / expected.abs().max().item<double>();
      worst_cosine = std::min(worst_cosine, cosine);
      worst_relative = std::max(worst_relative, relative);
      worst_abs = std::max(worst_abs, max_abs);
      n_same_argmax +=
          logits.argmax().item<int64_t>() == expected.argmax().item<int64_t>();
      ++n_cases;
      EXPECT_GE(cosine, kMinCosine);
      EXPECT_LE(relative, kMaxRelativeError);
    }
  }
  EXPECT_GT(n_cases, 0);
  std::printf(
      "bf16 vs fp32 reference over %d prefill logits: min cosine %.6f, "
      "max |diff| %.4f, max relative %.4f, same argmax %d/%d\n",
      n_cases, worst_cosine, worst_abs, worst_relative, n_same_argmax, n_cases);
}

}  // namespace
}  // namespace md
