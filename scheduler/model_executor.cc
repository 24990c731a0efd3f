// The executor on the real model: ForwardFeeds over the slot KV cache.
#include <memory>
#include <utility>
#include <vector>

#include "base/status_macros.h"
#include "model/net/kv_cache.h"
#include "scheduler/executor.h"

namespace md::scheduler {
namespace {

class ModelExecutor final : public Executor {
 public:
  ModelExecutor(const Model& model, KvCache cache)
      : model_(model), kv_(std::move(cache)) {}

  const InputEmbedder& embedder() const override { return model_; }
  int prefix_len() const override { return model_.prefix_len(); }
  int n_slots() const override { return kv_.n_slots; }
  int positions_per_slot() const override { return kv_.n_positions; }

  absl::StatusOr<std::vector<StepOutput>> Forward(
      absl::Span<const Feed> feeds) override {
    return ForwardFeeds(model_, kv_, feeds);
  }

  absl::StatusOr<std::vector<EncodedImage>> EncodeImages(
      absl::Span<const ImageCrops> images) override {
    // A scratch cache of its own (inside md::EncodeImages): never the slots.
    return md::EncodeImages(model_, images);
  }

 private:
  const Model& model_;
  KvCache kv_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Executor>> MakeModelExecutor(
    const Model& model, int n_slots, int positions_per_slot) {
  ASSIGN_OR_RETURN(KvCache cache, model.NewKvCache(n_slots, positions_per_slot,
                                                   /*shared_prefixes=*/true));
  return std::unique_ptr<Executor>(
      std::make_unique<ModelExecutor>(model, std::move(cache)));
}

}  // namespace md::scheduler
