// A loaded Moondream model: config, weights on a device in a compute dtype,
// and the batched operations the skills and the engine are built from. Pure
// computation: no threads, no queues. Every entry point returns a status;
// LibTorch exceptions stop here.
#ifndef MOONDREAM_MODEL_NET_MOONDREAM_H_
#define MOONDREAM_MODEL_NET_MOONDREAM_H_

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "model/config/config.h"
#include "model/image/tiling.h"
#include "model/io/weights.h"
#include "model/net/kv_cache.h"
#include "model/net/text.h"

namespace md {

struct ModelOptions {
  at::ScalarType dtype = at::kFloat;
  at::Device device = at::kCPU;
};

// One image as preprocessing delivers it: uint8 crops [1 + tiles, 378, 378,
// 3], the global crop first, then tiles row-major.
struct ImageCrops {
  at::Tensor crops_u8;
  Tiling tiling;
};

// Every intermediate of encoding one image (for tests and debugging).
struct ImageFeatures {
  at::Tensor global_PE;          // [729, E]
  at::Tensor reconstructed_HWE;  // stitched local features
  at::Tensor pooled_GGE;         // [27, 27, E]
  at::Tensor embedding_PC;       // [729, C]
};

// What a skill run embeds its next input with: token ids, coordinates and
// sizes → rows [T, C] to feed. The model implements it; scheduler tests use
// a fake so they run without a network.
class InputEmbedder {
 public:
  virtual ~InputEmbedder() = default;
  virtual absl::StatusOr<at::Tensor> EmbedTokens(
      absl::Span<const int> ids) const = 0;
  // [B, C] for B coordinates in [0, 1].
  virtual absl::StatusOr<at::Tensor> EncodeCoordinates(
      absl::Span<const float> coords) const = 0;
  // [B, C] for B (w, h) pairs, flattened.
  virtual absl::StatusOr<at::Tensor> EncodeSizes(
      absl::Span<const float> w_h_pairs) const = 0;
};

// Sets LibTorch's intra-op thread count (it defaults to 1 on some machines).
void SetComputeThreads(int n_threads);

class Model final : public InputEmbedder {
 public:
  // `path` is a directory holding model.safetensors (and optionally
  // config.json, which overrides `defaults`), or a .safetensors file.
  static absl::StatusOr<std::unique_ptr<Model>> Load(
      const std::string& path, const MoondreamConfig& defaults,
      const ModelOptions& options);
  static absl::StatusOr<std::unique_ptr<Model>> Create(
      MoondreamConfig config, Weights weights, const ModelOptions& options);

  const MoondreamConfig& config() const { return config_; }
  const Weights& weights() const { return weights_; }
  const ModelOptions& options() const { return options_; }
  int prefix_len() const { return config_.prefix_len(); }

  // ---- Vision ----
  // Image embeddings [729, C] for each image; all crops of all images go
  // through the encoder as one batch, each distinct crop once (a 1×1
  // tiling's local crop is its global crop, pixel for pixel).
  absl::StatusOr<std::vector<at::Tensor>> EmbedImages(
      absl::Span<const ImageCrops> images) const;
  absl::StatusOr<ImageFeatures> EncodeImageDetailed(
      const ImageCrops& image) const;
  // md::EncodeDistinctCrops (vision.h) with this model's weights, dtype and
  // device: features [B, P, E] of uint8 crops [B, S, S, 3].
  at::Tensor EncodeDistinctCrops(const at::Tensor& crops_BHWC_u8) const;
  // [wte[bos]; image embedding] → the prefix embeddings [730, C].
  absl::StatusOr<at::Tensor> PrefixEmbeddings(const at::Tensor& image_PC) const;

  // ---- Text decoder ----
  // n_positions per sequence, the image prefix included. With
  // shared_prefixes the slots store only the positions after the prefix,
  // and every chunk brings its image's prefix (kv_cache.h).
  absl::StatusOr<KvCache> NewKvCache(int n_slots, int n_positions,
                                     bool shared_prefixes = false) const;
  // Hidden states [N, C] (pre post-LN) for a flat batch of chunks.
  absl::StatusOr<at::Tensor> Forward(const at::Tensor& embeds_NC,
                                     absl::Span<const SequenceChunk> chunks,
                                     KvCache& cache) const;
  absl::StatusOr<at::Tensor> EmbedTokens(
      absl::Span<const int> ids) const override;

  // ---- Heads on picked hidden rows [B, C] ----
  absl::StatusOr<at::Tensor> Logits(const at::Tensor& hidden_BC) const;
  absl::StatusOr<at::Tensor> CoordinateLogits(
      const at::Tensor& hidden_BC) const;
  // [B, 2, 1024]
  absl::StatusOr<at::Tensor> SizeLogits(const at::Tensor& hidden_BC) const;
  absl::StatusOr<at::Tensor> EncodeCoordinates(
      absl::Span<const float> coords) const override;
  absl::StatusOr<at::Tensor> EncodeSizes(
      absl::Span<const float> w_h_pairs) const override;

 private:
  Model(MoondreamConfig config, Weights weights, const ModelOptions& options);

  MoondreamConfig config_;
  Weights weights_;
  ModelOptions options_;
  RotaryTable rotary_;
};

}  // namespace md

#endif  // MOONDREAM_MODEL_NET_MOONDREAM_H_
