// A fake executor for scheduler tests: no network, answers in microseconds,
// and fails on demand. Each slot keeps the values fed into it (one number
// per position: the token id, or a code for a coordinate or size) after the
// image prefix, which every feed brings (as with the real executor, whose
// slots store only the positions after it); a row's outputs are a hash of
// the prefix and its slot's history, so a sequence's answer depends only on
// its image and what it was fed — never on the batch — as with the real
// model.
#ifndef MOONDREAM_TESTS_SCHEDULER_FAKE_EXECUTOR_H_
#define MOONDREAM_TESTS_SCHEDULER_FAKE_EXECUTOR_H_

#include <ATen/ATen.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "model/config/config.h"
#include "model/skills/skills.h"
#include "scheduler/executor.h"
#include "scheduler/request.h"

namespace md::scheduler::testing {

inline constexpr int kFakeVocab = 64;
inline constexpr int kFakeEos = 2;
inline constexpr int kFakePrefix = 4;
inline constexpr int kFakeBins = 16;
// A prompt holding this token makes every forward that feeds it throw.
inline constexpr int kPoisonToken = 13;

// The config the fake stands for (job factories check prompts against it).
inline MoondreamConfig FakeConfig() {
  MoondreamConfig config;
  config.text.vocab_size = kFakeVocab;
  config.text.max_context = 256;
  config.tokenizer.eos_id = kFakeEos;
  return config;
}

inline GazePromptIds FakeGazeIds() { return {{5, 6}, {7, 8}}; }

class FakeEmbedder final : public InputEmbedder {
 public:
  absl::StatusOr<at::Tensor> EmbedTokens(
      absl::Span<const int> ids) const override {
    std::vector<float> v(ids.begin(), ids.end());
    return at::tensor(v, at::kFloat).view({-1, 1});
  }
  absl::StatusOr<at::Tensor> EncodeCoordinates(
      absl::Span<const float> coords) const override {
    std::vector<float> v;
    for (float c : coords) v.push_back(-1000 - c * 100);
    return at::tensor(v, at::kFloat).view({-1, 1});
  }
  absl::StatusOr<at::Tensor> EncodeSizes(
      absl::Span<const float> w_h) const override {
    std::vector<float> v;
    for (size_t i = 0; i + 1 < w_h.size(); i += 2) {
      v.push_back(-2000 - w_h[i] * 100 - w_h[i + 1] * 10);
    }
    return at::tensor(v, at::kFloat).view({-1, 1});
  }
};

class FakeExecutor final : public Executor {
 public:
  FakeExecutor(int n_slots, int positions_per_slot)
      : n_slots_(n_slots),
        positions_(positions_per_slot),
        history_(n_slots, std::vector<double>(positions_per_slot, 0)) {}

  const InputEmbedder& embedder() const override { return embedder_; }
  int prefix_len() const override { return kFakePrefix; }
  int n_slots() const override { return n_slots_; }
  int positions_per_slot() const override { return positions_; }

  absl::StatusOr<std::vector<StepOutput>> Forward(
      absl::Span<const Feed> feeds) override {
    ++forwards_;
    for (const Feed& feed : feeds) {
      const at::Tensor values = feed.embeds_TC.reshape({-1});
      if ((values == static_cast<float>(kPoisonToken)).any().item<bool>()) {
        throw std::runtime_error("injected failure");
      }
    }
    std::vector<StepOutput> outputs;
    for (const Feed& feed : feeds) {
      const at::Tensor values = feed.embeds_TC.reshape({-1}).contiguous();
      const int n = static_cast<int>(values.size(0));
      if (feed.pos + n > positions_) {
        return absl::OutOfRangeError("fake context overflow");
      }
      if (feed.pos < kFakePrefix || !feed.prefix_L2HQD.defined() ||
          feed.prefix_L2HQD.numel() != kFakePrefix) {
        return absl::InvalidArgumentError(
            "a feed without its image prefix, or inside it");
      }
      std::vector<double>& h = history_[feed.slot];
      const at::Tensor prefix = feed.prefix_L2HQD.reshape({-1});
      for (int i = 0; i < kFakePrefix; ++i) h[i] = prefix[i].item<float>();
      for (int i = 0; i < n; ++i) h[feed.pos + i] = values[i].item<float>();
      const uint64_t hash = Hash(h, feed.pos + n);
      StepOutput out;
      if (feed.heads.logits) {
        // Mostly ordinary tokens; eos now and then, so answers end.
        int token = 3 + static_cast<int>(hash % (kFakeVocab - 3));
        if (token == kPoisonToken) ++token;
        if (hash % 11 == 0) token = kFakeEos;
        out.logits_V = OneHot(kFakeVocab, token);
      }
      if (feed.heads.coordinate) {
        out.coordinate_X = OneHot(kFakeBins, (hash >> 8) % kFakeBins);
      }
      if (feed.heads.size) {
        out.size_2X = at::stack({OneHot(kFakeBins, (hash >> 16) % kFakeBins),
                                 OneHot(kFakeBins, (hash >> 24) % kFakeBins)});
      }
      outputs.push_back(std::move(out));
    }
    return outputs;
  }

  absl::StatusOr<std::vector<EncodedImage>> EncodeImages(
      absl::Span<const ImageCrops> images) override {
    std::vector<EncodedImage> encoded;
    for (const ImageCrops& image : images) {
      const float v = image.crops_u8.to(at::kFloat).sum().item<float>();
      encoded.push_back({at::full({kFakePrefix}, v, at::kFloat)});
    }
    return encoded;
  }

  int forwards() const { return forwards_.load(); }

 private:
  static uint64_t Hash(const std::vector<double>& h, int n) {
    uint64_t x = 1469598103934665603ull;
    for (int i = 0; i < n; ++i) {
      x ^= static_cast<uint64_t>(static_cast<int64_t>(h[i] * 1000));
      x *= 1099511628211ull;
    }
    return x ^ (x >> 29);
  }
  static at::Tensor OneHot(int n, int64_t index) {
    at::Tensor t = at::zeros({n}, at::kFloat);
    t[index] = 1;
    return t;
  }

  const int n_slots_;
  const int positions_;
  FakeEmbedder embedder_;
  std::vector<std::vector<double>> history_;
  std::atomic<int> forwards_{0};
};

// A small image with its mirror image; equal seeds give equal keys.
inline std::shared_ptr<const EngineImage> FakeImage(int seed) {
  auto image = std::make_shared<EngineImage>();
  image->key = "fake:" + std::to_string(seed);
  image->crops.crops_u8 = at::full({1, 2, 2, 3}, seed % 200, at::kByte);
  image->mirrored = ImageCrops{
      at::full({1, 2, 2, 3}, seed % 200 + 1, at::kByte), Tiling{1, 1}};
  image->mirrored_key = image->key + ":mirror";
  return image;
}

}  // namespace md::scheduler::testing

#endif  // MOONDREAM_TESTS_SCHEDULER_FAKE_EXECUTOR_H_
