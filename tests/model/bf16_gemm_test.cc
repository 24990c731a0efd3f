// PackedLinearBf16: the packed layout, results against an fp32 reference,
// bitwise batch invariance over M = 1..256 and thread counts, the GELU
// epilogue, the ATen fallback, and concurrent callers.
#include "model/net/kernels/bf16_gemm.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <vector>

#include "model/net/kernels/x86_simd.h"

namespace md {
namespace {

// Error budget for y = bf16(s), s the kernel's fp32 sum, against r, the fp32
// at::linear of the same (bf16-valued) inputs:
//   * Rounding once to bf16 (8 significant bits, nearest-even) costs at most
//     half an ulp: |bf16(s) − s| <= 2^-8·|s|.
//   * Every product x·w of two bf16 values (8 significant bits each) is exact
//     in fp32 (24 bits), so s and r differ only by the order (and grouping:
//     vdpbf16ps adds two products per step) of their fp32 additions. A sum of
//     n terms added in any order is within (n−1)·u·Σ|term| of the exact sum
//     (u = 2^-24); both sums have at most K + 2 terms (bias included), hence
//     |s − r| <= 2·(K + 2)·u·Σ|term|.
// So |y − r| <= 2^-8·|s| + |s − r| <= 2^-8·|r| + (1 + 2^-8)·2·(K + 2)·u·Σ|term|
// <= 2^-8·|r| + 4·(K + 2)·u·Σ|term|, Σ|term| = |x|·|w|ᵀ + |b| computed here.
// That accumulation bound is loose for large K, so a sharper check follows:
// the fp32 sums differ far below a bf16 ulp, so nearly every output is
// exactly bf16(r) (only r within |s − r| of a rounding boundary may round
// the other way).
void ExpectMatchesReference(const at::Tensor& y, const at::Tensor& x,
                            const at::Tensor& w, const at::Tensor& b) {
  const int64_t K = w.size(1);
  const at::Tensor b_f = b.defined() ? b.to(at::kFloat) : at::Tensor();
  const at::Tensor r = at::linear(x.to(at::kFloat), w.to(at::kFloat), b_f);
  const at::Tensor sum_abs =
      at::linear(x.to(at::kFloat).abs(), w.to(at::kFloat).abs(),
                 b.defined() ? b_f.abs() : at::Tensor());
  ASSERT_EQ(y.sizes(), r.sizes());
  ASSERT_EQ(y.scalar_type(), at::kBFloat16);

  const at::Tensor err = (y.to(at::kFloat) - r).abs();
  const at::Tensor tol =
      r.abs() * std::ldexp(1.0, -8) + sum_abs * (4.0 * (K + 2) * 0x1p-24);
  EXPECT_EQ((err > tol).sum().item<int64_t>(), 0)
      << "max err " << err.max().item<float>();
  const int64_t n_outputs = r.numel();
  const int64_t n_inexact = (y != r.to(at::kBFloat16)).sum().item<int64_t>();
  EXPECT_LE(n_inexact, 1 + n_outputs / 100)
      << "of " << n_outputs << " outputs differ from bf16(fp32 reference)";
}

at::Tensor RandomBf16(std::vector<int64_t> sizes, double scale) {
  return (at::randn(sizes) * scale).to(at::kBFloat16);
}

class PackedLinearTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!PackedLinearBf16Enabled()) {
      GTEST_SKIP() << "CPU lacks AVX512-BF16 (or MD_BF16_LINEAR=aten)";
    }
  }
  void TearDown() override { SetPackedLinearThreads(0); }
};

// AMX where the CPU (and Linux) offer it, unless MD_BF16_LINEAR=avx512 (the
// CTest runs *_avx512) or ForceAvx512Linear asks for vdpbf16ps.
TEST_F(PackedLinearTest, RunsAmxWhereTheCpuHasIt) {
  const char* env = std::getenv("MD_BF16_LINEAR");
  const bool avx512_asked = env != nullptr && std::string_view(env) == "avx512";
  const PackedLinearIsa isa = PackedLinearBf16Isa();
  RecordProperty("isa", PackedLinearIsaName(isa));
  EXPECT_EQ(isa, CpuHasAmxBf16() && !avx512_asked
                     ? PackedLinearIsa::kAmxBf16
                     : PackedLinearIsa::kAvx512Bf16);
  ForceAvx512Linear(true);
  EXPECT_EQ(PackedLinearBf16Isa(), PackedLinearIsa::kAvx512Bf16);
  ForceAvx512Linear(false);
  EXPECT_EQ(PackedLinearBf16Isa(), isa);
}

TEST_F(PackedLinearTest, PackedLayoutIsColumnPanelsOfKPairs) {
  at::manual_seed(3);
  const int64_t N = 70, K = 5;
  const at::Tensor w = RandomBf16({N, K}, 1.0);
  const at::Tensor p = PackLinearWeightBf16(w);
  ASSERT_TRUE(p.defined());
  ASSERT_EQ(p.sizes(), (std::vector<int64_t>{2, 3, 64, 2}));
  const at::Tensor w_f = w.to(at::kFloat), p_f = p.to(at::kFloat);
  for (int64_t n = 0; n < 128; ++n) {
    for (int64_t k = 0; k < 6; ++k) {
      const float packed = p_f[n / 64][k / 2][n % 64][k % 2].item<float>();
      const float expected = n < N && k < K ? w_f[n][k].item<float>() : 0.0f;
      ASSERT_EQ(packed, expected) << "n=" << n << " k=" << k;
    }
  }
}

class PackedLinearShapesTest
    : public PackedLinearTest,
      public ::testing::WithParamInterface<std::tuple<int64_t, int64_t>> {};

TEST_P(PackedLinearShapesTest, MatchesFp32Reference) {
  const auto [K, N] = GetParam();
  at::manual_seed(K * 10007 + N);
  const at::Tensor w = RandomBf16({N, K}, 0.05);
  const at::Tensor b = RandomBf16({N}, 0.1);
  const at::Tensor packed = PackLinearWeightBf16(w);
  for (int64_t M : {1, 2, 3, 5, 6, 7, 13, 32, 67}) {
    SCOPED_TRACE(::testing::Message() << "M=" << M << " K=" << K << " N=" << N);
    const at::Tensor x = RandomBf16({M, K}, 1.0);
    const at::Tensor y = PackedLinearBf16(x, packed, N, b);
    ASSERT_TRUE(y.defined());
    ExpectMatchesReference(y, x, w, b);
    const at::Tensor y_no_bias = PackedLinearBf16(x, packed, N, at::Tensor());
    ASSERT_TRUE(y_no_bias.defined());
    ExpectMatchesReference(y_no_bias, x, w, at::Tensor());
  }
}

// K odd, K below one pair, N below / across / at panel boundaries, and the
// 0.5B model's shapes.
INSTANTIATE_TEST_SUITE_P(
    Shapes, PackedLinearShapesTest,
    ::testing::Combine(::testing::Values(1, 2, 33, 64, 720, 1024, 2690),
                       ::testing::Values(1, 7, 64, 65, 200, 3072)),
    [](const ::testing::TestParamInfo<std::tuple<int64_t, int64_t>>& info) {
      return "K" + std::to_string(std::get<0>(info.param)) + "_N" +
             std::to_string(std::get<1>(info.param));
    });

// Every row of every M in 1..256 (and of a few larger M that the kernel
// runs in several passes over the weights), on 1 and 2 threads, equals that
// row computed alone on one thread, bit for bit: the property that makes a
// sequence's decode independent of the batch it runs in.
TEST_F(PackedLinearTest, RowsAreBitIdenticalForEveryBatchSizeAndThreadCount) {
  at::manual_seed(11);
  const int64_t K = 131, N = 200, kMaxM = 1000;
  std::vector<int64_t> row_counts;
  for (int64_t M = 1; M <= 256; ++M) row_counts.push_back(M);
  for (int64_t M : {479, 480, 481, 961, 1000}) row_counts.push_back(M);
  const at::Tensor w = RandomBf16({N, K}, 0.1);
  const at::Tensor b = RandomBf16({N}, 0.1);
  const at::Tensor packed = PackLinearWeightBf16(w);
  const at::Tensor x = RandomBf16({kMaxM, K}, 1.0);
  for (LinearActivation act :
       {LinearActivation::kNone, LinearActivation::kGeluTanh}) {
    SetPackedLinearThreads(1);
    std::vector<at::Tensor> alone;
    for (int64_t m = 0; m < kMaxM; ++m) {
      alone.push_back(PackedLinearBf16(x.narrow(0, m, 1), packed, N, b, act));
    }
    const at::Tensor alone_MN = at::cat(alone);
    for (int threads : {1, 2}) {
      SetPackedLinearThreads(threads);
      for (int64_t M : row_counts) {
        const at::Tensor y =
            PackedLinearBf16(x.narrow(0, 0, M), packed, N, b, act);
        ASSERT_TRUE(at::equal(y, alone_MN.narrow(0, 0, M)))
            << "M=" << M << " threads=" << threads
            << " gelu=" << (act == LinearActivation::kGeluTanh);
      }
    }
  }
}

// gelu_tanh(v) = ½·v·(1 + tanh(u)), u = √(2/π)·(v + 0.044715·v³), in double
// and in the form v / (1 + e^(−2u)), which has no cancellation in the
// negative tail (1 + tanh(u) loses all digits there, even in double).
at::Tensor GeluTanhExact(const at::Tensor& v) {
  const at::Tensor v_d = v.to(at::kDouble);
  const at::Tensor u = std::sqrt(2 / M_PI) * (v_d + 0.044715 * v_d.pow(3));
  return v_d / (1 + at::exp(-2 * u));
}

// The GELU epilogue reads the bf16 pre-activation p (what the plain kernel
// returns) and rounds g(p) once. Against g(p) in double: half a bf16 ulp
// (<= 2^-8·|g|) plus the fp32 evaluation error (exp within ~2 ulp, then a
// few correctly rounded operations: far below 2^-18·|g|), and the smallest
// bf16 denormal where g underflows. Against ATen's fp32 gelu of the same p
// rounded to bf16 — the unfused path evaluated in fp32 — within one bf16
// ulp (2^-7 of the larger) plus ATen's own error, which in the negative tail
// (1 + tanh(u) cancels) is absolute, ~2^-23·|p|. (ATen 1.13's bf16 gelu
// itself is not a reference: it rounds its intermediates to bf16, e.g.
// gelu(−3) = −0.00586 where the function is −0.00363.)
TEST_F(PackedLinearTest, GeluEpilogueMatchesUnfusedGelu) {
  at::manual_seed(5);
  const int64_t M = 37, K = 300, N = 1000;
  const at::Tensor w = RandomBf16({N, K}, 0.2);
  const at::Tensor b = RandomBf16({N}, 0.5);
  const at::Tensor packed = PackLinearWeightBf16(w);
  const at::Tensor x = RandomBf16({M, K}, 1.0);
  const at::Tensor pre = PackedLinearBf16(x, packed, N, b);
  const at::Tensor y =
      PackedLinearBf16(x, packed, N, b, LinearActivation::kGeluTanh);
  ASSERT_TRUE(y.defined());
  ASSERT_GT((pre < -6).sum().item<int64_t>(), 0) << "the tail is exercised";
  const at::Tensor y_d = y.to(at::kDouble);
  const at::Tensor exact = GeluTanhExact(pre);
  EXPECT_EQ(((y_d - exact).abs() > exact.abs() * (0x1p-8 + 0x1p-18) + 0x1p-133)
                .sum()
                .item<int64_t>(),
            0);
  const at::Tensor unfused =
      at::gelu(pre.to(at::kFloat), "tanh").to(at::kBFloat16);
  const at::Tensor unfused_d = unfused.to(at::kDouble);
  const at::Tensor larger = at::maximum(y_d.abs(), unfused_d.abs());
  EXPECT_EQ(((y_d - unfused_d).abs() >
             larger * 0x1p-7 + pre.to(at::kDouble).abs() * 0x1p-22)
                .sum()
                .item<int64_t>(),
            0);
  // Away from the tail the two round the same fp32 value almost always.
  const at::Tensor body = pre > -4;
  EXPECT_LE((y.masked_select(body) != unfused.masked_select(body))
                .sum()
                .item<int64_t>(),
            M * N / 100);
  // Spot values, the saturated tails included.
  const at::Tensor probe_M1 =
      at::tensor({-20.0f, -6.0f, -3.0f, -1.0f, 0.0f, 0.5f, 3.0f, 20.0f})
          .to(at::kBFloat16)
          .reshape({8, 1});
  const at::Tensor g_M1 = PackedLinearBf16(
      probe_M1, PackLinearWeightBf16(at::ones({1, 1}, at::kBFloat16)), 1,
      at::Tensor(), LinearActivation::kGeluTanh);
  EXPECT_TRUE(at::equal(g_M1, GeluTanhExact(probe_M1).to(at::kBFloat16)))
      << g_M1 << GeluTanhExact(probe_M1);
}

TEST_F(PackedLinearTest, RoundsToNearestEvenOnce) {
  // 1 + 2^-8 lies halfway between bf16 1 and 1 + 2^-7: ties go to even (1);
  // 1 + 3·2^-8 lies halfway between 1 + 2^-7 and 1 + 2^-6: to 1 + 2^-6.
  const at::Tensor w =
      at::tensor({1.0f, 0x1p-8f}, at::kFloat).reshape({1, 2}).to(at::kBFloat16);
  at::Tensor x = at::ones({2, 2}, at::kBFloat16);
  x[1][1] = 3.0;
  const at::Tensor y =
      PackedLinearBf16(x, PackLinearWeightBf16(w), 1, at::Tensor());
  ASSERT_TRUE(y.defined());
  EXPECT_EQ(y[0][0].item<float>(), 1.0f);
  EXPECT_EQ(y[1][0].item<float>(), 1.0f + 0x1p-6f);
}

TEST_F(PackedLinearTest, LeadingDimsFlattenAndNonContiguousXIsCopied) {
  at::manual_seed(1);
  const at::Tensor w = RandomBf16({50, 100}, 0.1);
  const at::Tensor packed = PackLinearWeightBf16(w);
  const at::Tensor x = RandomBf16({2, 3, 100}, 1.0);
  const at::Tensor y = PackedLinearBf16(x, packed, 50, at::Tensor());
  ASSERT_TRUE(y.defined());
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{2, 3, 50}));
  ExpectMatchesReference(y, x, w, at::Tensor());
  const at::Tensor x_t = RandomBf16({100, 4}, 1.0).t();
  ASSERT_FALSE(x_t.is_contiguous());
  const at::Tensor y_t = PackedLinearBf16(x_t, packed, 50, at::Tensor());
  ASSERT_TRUE(y_t.defined());
  ExpectMatchesReference(y_t, x_t, w, at::Tensor());
  EXPECT_EQ(PackedLinearBf16(at::zeros({0, 100}, at::kBFloat16), packed, 50,
                             at::Tensor())
                .sizes(),
            (std::vector<int64_t>{0, 50}));
}

TEST_F(PackedLinearTest, DeclinesWhatItCannotServe) {
  const at::Tensor x = RandomBf16({4, 64}, 1.0);
  const at::Tensor w = RandomBf16({16, 64}, 1.0);
  const at::Tensor b = RandomBf16({16}, 1.0);
  const at::Tensor packed = PackLinearWeightBf16(w);
  EXPECT_FALSE(PackLinearWeightBf16(w.to(at::kFloat)).defined());
  EXPECT_FALSE(PackedLinearBf16(x.to(at::kFloat), packed, 16, b).defined());
  EXPECT_FALSE(PackedLinearBf16(x, packed, 16, b.to(at::kFloat)).defined());
  EXPECT_FALSE(PackedLinearBf16(x.narrow(1, 0, 32), packed, 16, b).defined());
  EXPECT_FALSE(PackedLinearBf16(x, packed, 80, b).defined());
  EXPECT_FALSE(PackedLinearBf16(x, packed, 16, b.narrow(0, 0, 8)).defined());
  EXPECT_TRUE(PackedLinearBf16(x, packed, 16, b).defined());
}

// With the kernel forced off, the model's linear is at::linear (then
// at::gelu) bit for bit: the path CPUs without AVX512-BF16 take.
TEST(PackedLinearFallbackTest, ForcedFallbackIsAtenLinear) {
  at::manual_seed(9);
  const at::Tensor x = RandomBf16({5, 3, 96}, 1.0);
  const at::Tensor w = RandomBf16({130, 96}, 0.1);
  const at::Tensor b = RandomBf16({130}, 0.1);
  const at::Tensor packed = PackLinearWeightBf16(w);
  ForceAtenLinear(true);
  EXPECT_FALSE(PackedLinearBf16Enabled());
  EXPECT_FALSE(PackedLinearBf16(x, packed, 130, b).defined());
  const at::Tensor y = LinearWithPacked(x, w, packed, b);
  const at::Tensor y_gelu =
      LinearWithPacked(x, w, packed, b, LinearActivation::kGeluTanh);
  ForceAtenLinear(false);
  EXPECT_TRUE(at::equal(y, at::linear(x, w, b)));
  EXPECT_TRUE(at::equal(y_gelu, at::gelu(at::linear(x, w, b), "tanh")));
  // fp32 never takes the kernel.
  const at::Tensor x_f = x.to(at::kFloat), w_f = w.to(at::kFloat);
  EXPECT_TRUE(at::equal(LinearWithPacked(x_f, w_f, packed, b.to(at::kFloat)),
                        at::linear(x_f, w_f, b.to(at::kFloat))));
}

// Two threads calling at once take turns on the pool; neither blocks the
// other forever and both get their own results.
TEST_F(PackedLinearTest, ConcurrentCallersGetTheirOwnResults) {
  at::manual_seed(13);
  const at::Tensor w = RandomBf16({300, 200}, 0.1);
  const at::Tensor packed = PackLinearWeightBf16(w);
  const at::Tensor x1 = RandomBf16({9, 200}, 1.0);
  const at::Tensor x2 = RandomBf16({3, 200}, 1.0);
  SetPackedLinearThreads(2);
  const at::Tensor y1 = PackedLinearBf16(x1, packed, 300, at::Tensor());
  const at::Tensor y2 = PackedLinearBf16(x2, packed, 300, at::Tensor());
  bool ok1 = true, ok2 = true;
  std::thread t1([&] {
    for (int i = 0; i < 300; ++i) {
      ok1 &= at::equal(PackedLinearBf16(x1, packed, 300, at::Tensor()), y1);
    }
  });
  std::thread t2([&] {
    for (int i = 0; i < 300; ++i) {
      ok2 &= at::equal(PackedLinearBf16(x2, packed, 300, at::Tensor()), y2);
    }
  });
  t1.join();
  t2.join();
  EXPECT_TRUE(ok1);
  EXPECT_TRUE(ok2);
}

}  // namespace
}  // namespace md
