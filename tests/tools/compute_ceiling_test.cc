// The engine bench's compute ceiling: the flops a request is charged, the
// arithmetic of the ceiling, and that the peak measurement measures.
#include "tools/bench/compute_ceiling.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "model/net/kernels/bf16_gemm.h"
#include "model/net/kernels/x86_simd.h"

namespace md::bench {
namespace {

LinearWeights Linear(int64_t n_out, int64_t n_in) {
  return {at::zeros({n_out, n_in}), at::Tensor(), at::Tensor()};
}

// One block of dim 2: qkv 6×2, proj 2×2, fc1 8×2, fc2 2×8 (48 weights);
// LM head 10×2 (20).
Weights TinyText() {
  Weights w;
  TextBlockWeights block;
  block.attn.qkv = Linear(6, 2);
  block.attn.proj = Linear(2, 2);
  block.mlp.fc1 = Linear(8, 2);
  block.mlp.fc2 = Linear(2, 8);
  w.text.blocks.push_back(block);
  w.text.lm_head = Linear(10, 2);
  return w;
}

TEST(ComputeCeilingTest, RequestFlopsCountsPrefillDecodeAttentionAndHead) {
  TextConfig text;
  text.dim = 2;
  text.n_layers = 1;
  // Prefix 3, one prompt token, two generated tokens. Attention: 4·dim·
  // layers = 8 flops per visible key.
  const double prompt = 2 * 48 + 8 * 4;         // sees 4 keys
  const double first = 2 * (48 + 20) + 8 * 5;   // sees 5
  const double second = 2 * (48 + 20) + 8 * 6;  // sees 6
  EXPECT_DOUBLE_EQ(RequestFlops(TinyText(), text, /*prefix_len=*/3,
                                /*prompt_tokens=*/1, /*n_tokens=*/2),
                   prompt + first + second);
}

TEST(ComputeCeilingTest, CeilingIsPeakOverWorkPerToken) {
  ComputeCeiling c;
  c.peak_gflops = 150;
  c.gflop_per_token = 1.5;
  c.serial_tokens_per_s = 20;
  EXPECT_DOUBLE_EQ(c.tokens_per_s(), 100);
  EXPECT_DOUBLE_EQ(c.speedup(), 5);
  EXPECT_DOUBLE_EQ(c.ToJson()["speedup_vs_serial"].get<double>(), 5);
  c.serial_tokens_per_s = 0;  // no baseline: no speedup, not a division
  EXPECT_EQ(c.speedup(), 0);
}

TEST(ComputeCeilingTest, PeakIsMeasuredWhereTheInstructionExists) {
  if (!PackedLinearBf16Enabled()) GTEST_SKIP() << "no AVX512-BF16 here";
  const std::optional<double> vdp =
      MeasureBf16PeakGflops(1, /*n_reps=*/1, PackedLinearIsa::kAvx512Bf16);
  ASSERT_TRUE(vdp.has_value());
  // Any AVX512-BF16 core does billions of these a second.
  EXPECT_GT(*vdp, 1.0);
  EXPECT_TRUE(std::isfinite(*vdp));
  EXPECT_FALSE(MeasureBf16PeakGflops(1, 1, PackedLinearIsa::kNone).has_value());
  const std::optional<double> tdp =
      MeasureBf16PeakGflops(1, /*n_reps=*/1, PackedLinearIsa::kAmxBf16);
  ASSERT_EQ(tdp.has_value(), CpuHasAmxBf16());
  if (tdp.has_value()) {
    // A tile product does 8192 multiply-adds where vdpbf16ps does 32.
    EXPECT_GT(*tdp, 2 * *vdp);
    EXPECT_TRUE(std::isfinite(*tdp));
  }
}

}  // namespace
}  // namespace md::bench
