// What the engine runs its steps on. The engine decides what to feed; an
// executor owns the slot KV cache and does the arithmetic. The real one wraps
// the model (MakeModelExecutor); scheduler tests use a fake that answers in
// microseconds and can be told to fail, so scheduling is tested without a
// network.
//
// Forward runs on the engine thread, EncodeImages on the image
// encoder thread (concurrently with Forward: it must not touch the slots).
// Implementations return statuses; the engine also survives exceptions.
#ifndef MOONDREAM_SCHEDULER_EXECUTOR_H_
#define MOONDREAM_SCHEDULER_EXECUTOR_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "model/net/feeds.h"
#include "model/net/moondream.h"
#include "model/skills/skills.h"

namespace md::scheduler {

class Executor {
 public:
  virtual ~Executor() = default;

  // What skill runs embed their inputs with.
  virtual const InputEmbedder& embedder() const = 0;
  // Positions of an image prefix (BOS + image tokens).
  virtual int prefix_len() const = 0;
  virtual int n_slots() const = 0;
  virtual int positions_per_slot() const = 0;

  // One batched forward over the feeds, each into its slot; the outputs of
  // the heads each feed asked for, in feed order. Slots store positions from
  // prefix_len() on: every feed brings its image prefix ([L, 2, H,
  // prefix_len, D], Feed::prefix_L2HQD) and starts at or after prefix_len.
  virtual absl::StatusOr<std::vector<StepOutput>> Forward(
      absl::Span<const Feed> feeds) = 0;
  // Vision encoder + prefix prefill for each image, as one batch.
  virtual absl::StatusOr<std::vector<EncodedImage>> EncodeImages(
      absl::Span<const ImageCrops> images) = 0;
};

// The model with a KV cache of `n_slots` sequences of `positions_per_slot`
// positions each, the image prefix included, of which the slots store only
// those after the prefix. `model` must outlive the executor.
absl::StatusOr<std::unique_ptr<Executor>> MakeModelExecutor(
    const Model& model, int n_slots, int positions_per_slot);

}  // namespace md::scheduler

#endif  // MOONDREAM_SCHEDULER_EXECUTOR_H_
