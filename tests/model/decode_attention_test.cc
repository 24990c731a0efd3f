#include "model/net/kernels/decode_attention.h"

#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace md {
namespace {

// Whether DecodeAttention should run (not fall back) for this dtype here.
bool CpuRunsKernel(at::ScalarType dtype) {
#if defined(__x86_64__)
  __builtin_cpu_init();
  const bool avx512 =
      __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  if (dtype == at::kBFloat16) {
    return avx512 && __builtin_cpu_supports("avx512bf16");
  }
  return avx512;
#else
  return false;
#endif
}

std::string DtypeName(at::ScalarType dtype) {
  return dtype == at::kBFloat16 ? "bf16" : "fp32";
}

// Plain ATen attention in fp64 from the same (possibly bf16) inputs.
at::Tensor Reference(const at::Tensor& q_BHD, const at::Tensor& k_SHPD,
                     const at::Tensor& v_SHPD, const std::vector<int>& slots,
                     const std::vector<int>& n_keys, double scale) {
  at::Tensor q = q_BHD.to(at::kDouble);
  std::vector<at::Tensor> outs;
  for (size_t i = 0; i < slots.size(); ++i) {
    at::Tensor keys_HND =
        k_SHPD[slots[i]].narrow(1, 0, n_keys[i]).to(at::kDouble);
    at::Tensor values_HND =
        v_SHPD[slots[i]].narrow(1, 0, n_keys[i]).to(at::kDouble);
    at::Tensor scores_H1N =
        at::bmm(q[i].unsqueeze(1), keys_HND.transpose(1, 2)) * scale;
    at::Tensor probs_H1N = at::softmax(scores_H1N, -1);
    outs.push_back(at::bmm(probs_H1N, values_HND).squeeze(1));
  }
  return at::stack(outs);
}

// Random K/V [S, H, P, D]; positions no sequence may read (at or past the
// largest n_keys among the sequences on that slot, all of an unused slot)
// are NaN, so reading them shows up in the output.
struct Cache {
  at::Tensor k_SHPD, v_SHPD;
  double max_abs_v = 0;  // over readable positions
};

Cache MakeCache(int n_slots, int n_heads, int n_positions, int head_dim,
                at::ScalarType dtype, const std::vector<int>& slots,
                const std::vector<int>& n_keys) {
  Cache cache;
  cache.k_SHPD = at::randn({n_slots, n_heads, n_positions, head_dim});
  cache.v_SHPD = at::randn({n_slots, n_heads, n_positions, head_dim});
  std::vector<int> readable(n_slots, 0);
  for (size_t i = 0; i < slots.size(); ++i) {
    readable[slots[i]] = std::max(readable[slots[i]], n_keys[i]);
  }
  for (int s = 0; s < n_slots; ++s) {
    if (readable[s] > 0) {
      at::Tensor v_read = cache.v_SHPD[s].narrow(1, 0, readable[s]);
      cache.max_abs_v =
          std::max(cache.max_abs_v, v_read.abs().max().item<double>());
    }
    const int hidden = n_positions - readable[s];
    if (hidden == 0) continue;
    cache.k_SHPD[s].narrow(1, readable[s], hidden).fill_(NAN);
    cache.v_SHPD[s].narrow(1, readable[s], hidden).fill_(NAN);
  }
  cache.k_SHPD = cache.k_SHPD.to(dtype);
  cache.v_SHPD = cache.v_SHPD.to(dtype);
  return cache;
}

// fp32: within 1e-5 · max|v|. bf16: within one rounding of the fp64 result
// (half a bf16 ulp, <= 2^-8 · |ref|) plus 1e-5 · max|v| for the fp32 sums.
void ExpectMatches(const at::Tensor& out, const at::Tensor& ref,
                   at::ScalarType dtype, double max_abs_v) {
  ASSERT_TRUE(out.defined());
  ASSERT_EQ(out.sizes(), ref.sizes());
  ASSERT_EQ(out.scalar_type(), dtype);
  ASSERT_TRUE(out.is_contiguous());
  ASSERT_TRUE(at::isfinite(ref).all().item<bool>());
  at::Tensor err = (out.to(at::kDouble) - ref).abs();
  at::Tensor tol = at::full_like(ref, 1e-5 * max_abs_v);
  if (dtype == at::kBFloat16) tol = tol + ref.abs() * std::ldexp(1.0, -8);
  // NaN errors count as bad: compare with <=, then negate.
  at::Tensor bad = (err <= tol).logical_not();
  const int64_t n_bad = bad.sum().item<int64_t>();
  if (n_bad > 0) {
    const int64_t at_flat =
        (err - tol).nan_to_num(1e300).argmax().item<int64_t>();
    ADD_FAILURE() << n_bad << " of " << ref.numel()
                  << " outside tolerance; worst at flat index " << at_flat
                  << ": got "
                  << out.to(at::kDouble).flatten()[at_flat].item<double>()
                  << ", want " << ref.flatten()[at_flat].item<double>()
                  << ", tolerance " << tol.flatten()[at_flat].item<double>();
  }
}

struct Shape {
  at::ScalarType dtype;
  int n_batch, n_heads, head_dim;
};

std::string ShapeName(const ::testing::TestParamInfo<Shape>& info) {
  const Shape& s = info.param;
  return absl::StrCat(DtypeName(s.dtype), "_B", s.n_batch, "_H", s.n_heads,
                      "_D", s.head_dim);
}

class DecodeAttentionShapeTest : public ::testing::TestWithParam<Shape> {};

TEST_P(DecodeAttentionShapeTest, MatchesFp64Reference) {
  const Shape& shape = GetParam();
  if (!CpuRunsKernel(shape.dtype)) GTEST_SKIP() << "CPU lacks AVX-512 (BF16)";
  at::manual_seed(1234 + shape.n_batch * 100 + shape.head_dim);
  const int kSlots = 24, kPositions = 800;
  const std::vector<int> kKeyCounts = {1, 7, 730, 750, kPositions};
  std::vector<int> slots, n_keys;
  for (int i = 0; i < shape.n_batch; ++i) {
    slots.push_back((7 * i + 5) % kSlots);  // permuted; repeats past 24
    n_keys.push_back(kKeyCounts[(i + 2) % kKeyCounts.size()]);
  }
  const Cache cache = MakeCache(kSlots, shape.n_heads, kPositions,
                                shape.head_dim, shape.dtype, slots, n_keys);
  // q as the text model slices it out of the fused qkv projection:
  // [B, 3, H, D] → strides (3·H·D, D, 1).
  at::Tensor qkv =
      at::randn({shape.n_batch, 3, shape.n_heads, shape.head_dim}) * 2.0;
  at::Tensor q_BHD = qkv.to(shape.dtype).select(1, 0);
  ASSERT_EQ(q_BHD.stride(0), 3 * shape.n_heads * shape.head_dim);
  const double scale = 1.0 / std::sqrt(static_cast<double>(shape.head_dim));

  at::Tensor out =
      DecodeAttention(q_BHD, cache.k_SHPD, cache.v_SHPD, slots, n_keys, scale);
  ExpectMatches(
      out, Reference(q_BHD, cache.k_SHPD, cache.v_SHPD, slots, n_keys, scale),
      shape.dtype, cache.max_abs_v);
}

std::vector<Shape> AllShapes() {
  std::vector<Shape> shapes;
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    for (int n_batch : {1, 3, 32}) {
      for (int n_heads : {1, 16}) {
        for (int head_dim : {64, 128}) {
          shapes.push_back({dtype, n_batch, n_heads, head_dim});
        }
      }
    }
  }
  return shapes;
}

INSTANTIATE_TEST_SUITE_P(Shapes, DecodeAttentionShapeTest,
                         ::testing::ValuesIn(AllShapes()), ShapeName);

class DecodeAttentionDtypeTest
    : public ::testing::TestWithParam<at::ScalarType> {
 protected:
  void SetUp() override {
    if (!CpuRunsKernel(GetParam())) GTEST_SKIP() << "CPU lacks AVX-512 (BF16)";
  }
};

// Head dims other than 64/128: a 16-dim half at the end of the bf16 dot
// product (48, 80, 144) and more output dims than one register tile (144:
// 128 + 16, 272: 2 · 128 + 16).
TEST_P(DecodeAttentionDtypeTest, OtherHeadDims) {
  const at::ScalarType dtype = GetParam();
  at::manual_seed(7);
  for (int head_dim : {16, 32, 48, 80, 144, 272}) {
    SCOPED_TRACE(absl::StrCat("D = ", head_dim));
    const std::vector<int> slots = {2, 0, 2}, n_keys = {33, 1, 64};
    const Cache cache = MakeCache(3, 4, 64, head_dim, dtype, slots, n_keys);
    at::Tensor q_BHD = at::randn({3, 4, head_dim}).to(dtype);
    const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
    ExpectMatches(
        DecodeAttention(q_BHD, cache.k_SHPD, cache.v_SHPD, slots, n_keys,
                        scale),
        Reference(q_BHD, cache.k_SHPD, cache.v_SHPD, slots, n_keys, scale),
        dtype, cache.max_abs_v);
  }
}

// Scores spread over hundreds: exp without subtracting the max overflows.
TEST_P(DecodeAttentionDtypeTest, LargeScoresStayFinite) {
  const at::ScalarType dtype = GetParam();
  at::manual_seed(11);
  const std::vector<int> slots = {0, 1}, n_keys = {750, 100};
  const Cache cache = MakeCache(2, 16, 800, 64, dtype, slots, n_keys);
  at::Tensor q_BHD = (at::randn({2, 16, 64}) * 30.0).to(dtype);
  at::Tensor ref =
      Reference(q_BHD, cache.k_SHPD, cache.v_SHPD, slots, n_keys, 0.125);
  at::Tensor scores_max =
      at::matmul(
          q_BHD[0].to(at::kDouble).unsqueeze(1),
          cache.k_SHPD[0].narrow(1, 0, 750).to(at::kDouble).transpose(1, 2)) *
      0.125;
  ASSERT_GT(scores_max.max().item<double>(), 100.0);  // e^100 > FLT_MAX
  ExpectMatches(
      DecodeAttention(q_BHD, cache.k_SHPD, cache.v_SHPD, slots, n_keys, 0.125),
      ref, dtype, cache.max_abs_v);
}

// One key: the output is that key's value exactly, in either dtype.
TEST_P(DecodeAttentionDtypeTest, SingleKeyReturnsItsValue) {
  const at::ScalarType dtype = GetParam();
  at::manual_seed(3);
  const std::vector<int> slots = {1, 0}, n_keys = {1, 1};
  const Cache cache = MakeCache(2, 16, 8, 64, dtype, slots, n_keys);
  at::Tensor q_BHD = at::randn({2, 16, 64}).to(dtype);
  at::Tensor out =
      DecodeAttention(q_BHD, cache.k_SHPD, cache.v_SHPD, slots, n_keys, 0.125);
  ASSERT_TRUE(out.defined());
  at::Tensor want =
      at::stack({cache.v_SHPD[1].select(1, 0), cache.v_SHPD[0].select(1, 0)});
  EXPECT_TRUE(at::equal(out, want));
}

TEST_P(DecodeAttentionDtypeTest, EmptyBatch) {
  const at::ScalarType dtype = GetParam();
  at::Tensor k = at::zeros({2, 16, 8, 64}, dtype);
  at::Tensor out =
      DecodeAttention(at::zeros({0, 16, 64}, dtype), k, k, {}, {}, 0.125);
  ASSERT_TRUE(out.defined());
  EXPECT_EQ(out.sizes(), (std::vector<int64_t>{0, 16, 64}));
}

INSTANTIATE_TEST_SUITE_P(
    Dtypes, DecodeAttentionDtypeTest,
    ::testing::Values(at::kFloat, at::kBFloat16),
    [](const ::testing::TestParamInfo<at::ScalarType>& info) {
      return DtypeName(info.param);
    });

// Inputs the kernel does not take come back undefined (the caller falls
// back), never as a crash or a wrong answer. Each case changes one thing of
// a call that the kernel does take.
TEST(DecodeAttentionTest, ReturnsUndefinedWhenItDoesNotApply) {
  const int S = 3, H = 4, P = 16, D = 64;
  at::Tensor q = at::randn({2, H, D});
  at::Tensor k = at::randn({S, H, P, D}), v = at::randn({S, H, P, D});
  const std::vector<int> slots = {2, 0}, n_keys = {5, 16};
  if (CpuRunsKernel(at::kFloat)) {
    ASSERT_TRUE(DecodeAttention(q, k, v, slots, n_keys, 0.125).defined());
  }
  if (CpuRunsKernel(at::kBFloat16)) {
    ASSERT_TRUE(DecodeAttention(q.to(at::kBFloat16), k.to(at::kBFloat16),
                                v.to(at::kBFloat16), slots, n_keys, 0.125)
                    .defined());
  }
  auto call = [&](const at::Tensor& q2, const at::Tensor& k2,
                  const at::Tensor& v2, std::vector<int> slots2,
                  std::vector<int> n_keys2) {
    return DecodeAttention(q2, k2, v2, slots2, n_keys2, 0.125).defined();
  };
  // dtypes
  EXPECT_FALSE(
      call(q.to(at::kHalf), k.to(at::kHalf), v.to(at::kHalf), slots, n_keys));
  EXPECT_FALSE(call(q.to(at::kDouble), k.to(at::kDouble), v.to(at::kDouble),
                    slots, n_keys));
  EXPECT_FALSE(
      call(q, k.to(at::kBFloat16), v.to(at::kBFloat16), slots, n_keys));
  EXPECT_FALSE(call(q, k, v.to(at::kBFloat16), slots, n_keys));
  // layouts
  at::Tensor k_wide = at::randn({S, H, P + 4, D});
  EXPECT_FALSE(call(q, k_wide.narrow(2, 0, P), v, slots, n_keys));
  EXPECT_FALSE(call(q, k, k_wide.narrow(2, 0, P), slots, n_keys));
  EXPECT_FALSE(call(at::randn({2, H, D, 2}).select(3, 0), k, v, slots, n_keys));
  EXPECT_FALSE(call(q, k.to_sparse(), v, slots, n_keys));
  EXPECT_FALSE(call(at::Tensor(), k, v, slots, n_keys));
  // sizes
  EXPECT_FALSE(call(at::randn({2, H, 40}), at::randn({S, H, P, 40}),
                    at::randn({S, H, P, 40}), slots, n_keys));
  EXPECT_FALSE(call(q, at::randn({S, H, P + 1, D}), v, slots, n_keys));
  EXPECT_FALSE(call(at::randn({2, H + 1, D}), k, v, slots, n_keys));
  EXPECT_FALSE(call(q.unsqueeze(0), k, v, slots, n_keys));
  EXPECT_FALSE(call(q, k, v, {2}, n_keys));
  EXPECT_FALSE(call(q, k, v, slots, {5, 16, 1}));
  // indices
  EXPECT_FALSE(call(q, k, v, {2, S}, n_keys));
  EXPECT_FALSE(call(q, k, v, {-1, 0}, n_keys));
  EXPECT_FALSE(call(q, k, v, slots, {0, 16}));
  EXPECT_FALSE(call(q, k, v, slots, {5, P + 1}));
}

// Sequences on two images, read in the shared-prefix layout (each image's
// 730 prefix positions in one [L, 2, H, Q, D] tensor, the slots holding only
// the positions after it) must give, bit for bit, what each sequence gives
// alone with its whole history in its own slot.
TEST(DecodeAttentionSharedPrefixTest, BitIdenticalToEachSequenceAlone) {
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    SCOPED_TRACE(DtypeName(dtype));
    if (!CpuRunsKernel(dtype)) GTEST_SKIP() << "CPU lacks AVX-512 (BF16)";
    at::manual_seed(77);
    const int S = 12, H = 4, P = 800, D = 64, kPrefix = 730, kLayer = 1;
    // Two images' prefixes for two layers; this test reads layer 1.
    const std::vector<at::Tensor> images = {
        at::randn({2, 2, H, kPrefix, D}).to(dtype),
        at::randn({2, 2, H, kPrefix, D}).to(dtype)};
    // Own layout: slots 0..6 on image 0, 7..11 on image 1, then their own.
    at::Tensor k = at::randn({S, H, P, D}).to(dtype);
    at::Tensor v = at::randn({S, H, P, D}).to(dtype);
    for (int s = 0; s < S; ++s) {
      const at::Tensor& image = images[s < 7 ? 0 : 1];
      k[s].narrow(1, 0, kPrefix).copy_(image[kLayer][0]);
      v[s].narrow(1, 0, kPrefix).copy_(image[kLayer][1]);
    }
    const at::Tensor k_tail = k.narrow(2, kPrefix, P - kPrefix).contiguous();
    const at::Tensor v_tail = v.narrow(2, kPrefix, P - kPrefix).contiguous();
    const std::vector<int> slots = {3, 0, 8, 6, 11, 1, 7, 2, 10};
    std::vector<int> n_keys;
    std::vector<at::Tensor> prefix_of;
    for (size_t i = 0; i < slots.size(); ++i) {
      n_keys.push_back(kPrefix + 1 + static_cast<int>(7 * i % 60));
      prefix_of.push_back(images[slots[i] < 7 ? 0 : 1]);
    }
    const SharedPrefixes shared{prefix_of, kLayer, kPrefix};
    at::Tensor q =
        at::randn({static_cast<int64_t>(slots.size()), H, D}).to(dtype);
    at::Tensor alone = DecodeAttention(q, k, v, slots, n_keys, 0.125);
    at::Tensor grouped =
        DecodeAttention(q, k_tail, v_tail, slots, n_keys, 0.125, &shared);
    ASSERT_TRUE(alone.defined());
    ASSERT_TRUE(grouped.defined());
    EXPECT_TRUE(at::equal(alone, grouped))
        << (alone.to(at::kFloat) - grouped.to(at::kFloat)).abs().max();

    // Falls back on: too few keys for the prefix, too many for the slot, a
    // prefix of the wrong length, dtype or layer, a missing one.
    auto falls_back = [&](absl::Span<const int> keys, const SharedPrefixes& p) {
      return !DecodeAttention(q, k_tail, v_tail, slots, keys, 0.125, &p)
                  .defined();
    };
    std::vector<int> bad_keys = n_keys;
    bad_keys[0] = 10;
    EXPECT_TRUE(falls_back(bad_keys, shared));
    bad_keys[0] = P + 1;
    EXPECT_TRUE(falls_back(bad_keys, shared));
    std::vector<at::Tensor> bad = prefix_of;
    bad[1] = images[0].narrow(3, 0, kPrefix - 1).contiguous();
    EXPECT_TRUE(falls_back(n_keys, {bad, kLayer, kPrefix}));
    bad[1] = images[0].to(dtype == at::kFloat ? at::kBFloat16 : at::kFloat);
    EXPECT_TRUE(falls_back(n_keys, {bad, kLayer, kPrefix}));
    bad[1] = at::Tensor();
    EXPECT_TRUE(falls_back(n_keys, {bad, kLayer, kPrefix}));
    EXPECT_TRUE(falls_back(n_keys, {prefix_of, 2, kPrefix}));
    EXPECT_TRUE(falls_back(
        n_keys, {absl::MakeConstSpan(prefix_of).subspan(1), kLayer, kPrefix}));
  }
}

}  // namespace
}  // namespace md
