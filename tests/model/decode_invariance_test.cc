// Batch invariance of a whole bf16 decode step: a sequence's logits are the
// same bits whether it is decoded alone or among 32 sequences, step after
// step. This is what lets the engine batch requests without changing any
// answer (greedy outputs equal to serial ones).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "model/config/config.h"
#include "model/io/weights.h"
#include "model/net/kernels/bf16_gemm.h"
#include "model/net/kv_cache.h"
#include "model/net/moondream.h"
#include "tests/model/golden.h"

namespace md {
namespace {

constexpr int kBatch = 32;
constexpr int kSteps = 4;
// Filled positions per slot before the first step: past the image prefix,
// so the steps run as decode queries over prefix + prompt keys.
constexpr int kPromptLen = 7;

// The golden tiny model's config with the 0.5B model's text width (dim
// 1024, 16 heads; 2 layers, vocab 2048) on random bf16 weights: the real
// decode shapes of the linears and attention heads, small enough to be
// quick. (A linear that switches kernels by row count — as the model's did,
// a weight-streaming kernel up to 16 rows and at::linear above — sums in a
// different order alone and in a batch of 32, and fails this test.)
const Model& WideBf16Model() {
  static const Model* model = [] {
    SetComputeThreads(2);
    auto config = LoadConfigFile(testing::GoldenDir() + "/config.json",
                                 Moondream2Config());
    EXPECT_TRUE(config.ok()) << config.status();
    config->text.dim = 1024;
    config->text.n_heads = 16;
    config->vision.proj_out_dim = 1024;
    config->region.dim = 1024;
    const ModelOptions options{.dtype = at::kBFloat16};
    auto weights = RandomWeights(*config, {options.dtype, options.device}, 3);
    EXPECT_TRUE(weights.ok()) << weights.status();
    auto created = Model::Create(*config, std::move(*weights), options);
    EXPECT_TRUE(created.ok()) << created.status();
    return created.ok() ? created->release() : nullptr;
  }();
  return *model;
}

// Random K/V for `n_positions` positions of every layer, [L, 2, H, n, D].
at::Tensor RandomContext(const Model& model, int n_positions, int seed) {
  const TextConfig& t = model.config().text;
  at::manual_seed(seed);
  return at::randn({t.n_layers, 2, t.n_heads, n_positions, t.dim / t.n_heads})
      .to(at::kBFloat16);
}

// One decode step of `slots` (one token each at `pos`, reading the image
// prefixes `prefixes`, one per slot, in a shared-prefix cache): logits
// [B, V].
at::Tensor Step(const Model& model, KvCache& cache,
                const std::vector<int>& slots, const std::vector<int>& tokens,
                int pos, const std::vector<at::Tensor>& prefixes = {}) {
  std::vector<SequenceChunk> chunks;
  for (size_t i = 0; i < slots.size(); ++i) {
    chunks.push_back({slots[i], pos, 1, AttentionMask::kCausal,
                      prefixes.empty() ? at::Tensor() : prefixes[i]});
  }
  auto embeds = model.EmbedTokens(tokens);
  EXPECT_TRUE(embeds.ok()) << embeds.status();
  auto hidden = model.Forward(*embeds, chunks, cache);
  EXPECT_TRUE(hidden.ok()) << hidden.status();
  auto logits = model.Logits(*hidden);
  EXPECT_TRUE(logits.ok()) << logits.status();
  return *logits;
}

// Decodes kSteps greedy steps of kBatch sequences together and each alone
// (in its own cache, whole history in its slot), comparing every sequence's
// logits bit for bit. shared_prefix: the batch runs in a shared-prefix cache
// on two images, as the engine does: each sequence reads its image's prefix
// tensor in place and its slot holds only its prompt and answer.
void ExpectBatchInvariantDecode(bool shared_prefix) {
  const Model& model = WideBf16Model();
  ASSERT_EQ(model.options().dtype, at::kBFloat16);
  const int context = model.prefix_len() + kPromptLen;
  auto batch_cache = model.NewKvCache(kBatch, context + kSteps, shared_prefix);
  auto alone_cache = model.NewKvCache(kBatch, context + kSteps);
  ASSERT_TRUE(batch_cache.ok() && alone_cache.ok());
  ASSERT_EQ(batch_cache->shares_prefixes(), shared_prefix);
  const std::vector<at::Tensor> images = {
      RandomContext(model, model.prefix_len(), 101),
      RandomContext(model, model.prefix_len(), 102)};
  std::vector<int> slots, tokens;
  std::vector<at::Tensor> prefixes;
  for (int s = 0; s < kBatch; ++s) {
    if (shared_prefix) {
      const at::Tensor& image = images[s % 2];
      const at::Tensor prompt = RandomContext(model, kPromptLen, s);
      WriteSlotPrefix(*alone_cache, s, at::cat({image, prompt}, 3));
      WriteSlotPositions(*batch_cache, s, model.prefix_len(), prompt);
      prefixes.push_back(image);
    } else {
      const at::Tensor kv = RandomContext(model, context, s);
      WriteSlotPrefix(*batch_cache, s, kv);
      WriteSlotPrefix(*alone_cache, s, kv);
    }
    slots.push_back(s);
    tokens.push_back((37 * s + 5) % model.config().text.vocab_size);
  }
  for (int step = 0; step < kSteps; ++step) {
    SCOPED_TRACE(::testing::Message() << "step " << step);
    const int pos = context + step;
    const at::Tensor batch_BV =
        Step(model, *batch_cache, slots, tokens, pos, prefixes);
    for (int s = 0; s < kBatch; ++s) {
      const at::Tensor alone_1V =
          Step(model, *alone_cache, {s}, {tokens[s]}, pos);
      ASSERT_TRUE(at::equal(batch_BV.narrow(0, s, 1), alone_1V))
          << "slot " << s << ": max |diff| "
          << (batch_BV.narrow(0, s, 1).to(at::kFloat) - alone_1V.to(at::kFloat))
                 .abs()
                 .max()
                 .item<float>();
    }
    const at::Tensor next = batch_BV.argmax(-1);
    for (int s = 0; s < kBatch; ++s) tokens[s] = next[s].item<int>();
  }
}

TEST(DecodeInvarianceTest, LogitsAreBitIdenticalAloneAndInABatchOf32) {
  if (!PackedLinearBf16Enabled()) GTEST_SKIP() << "no packed bf16 kernel";
  ExpectBatchInvariantDecode(/*shared_prefix=*/false);
}

TEST(DecodeInvarianceTest, SharedImagePrefixChangesNoBit) {
  if (!PackedLinearBf16Enabled()) GTEST_SKIP() << "no packed bf16 kernel";
  ExpectBatchInvariantDecode(/*shared_prefix=*/true);
}

}  // namespace
}  // namespace md
