// Moondream's parameters, loaded from safetensors in either published layout
// (docs/DESIGN.md §2.6) and cast once to the compute dtype and device.
#ifndef MOONDREAM_MODEL_IO_WEIGHTS_H_
#define MOONDREAM_MODEL_IO_WEIGHTS_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "model/config/config.h"
#include "model/io/safetensors.h"

namespace md {

struct LinearWeights {
  at::Tensor weight;  // [out, in]
  at::Tensor bias;    // [out]
  // bf16 models on CPUs with AVX512-BF16: `weight` packed once at model
  // creation for the packed linear kernel (model/net/kernels/bf16_gemm.h);
  // otherwise undefined. Not a parameter: never saved or counted, and
  // `weight` stays the source of truth (the ATen fallback uses it).
  at::Tensor packed;
};

struct LayerNormWeights {
  at::Tensor weight;
  at::Tensor bias;
};

struct MlpWeights {
  LinearWeights fc1;
  LinearWeights fc2;
};

struct AttentionWeights {
  LinearWeights qkv;  // rows ordered q | k | v
  LinearWeights proj;
};

struct VisionBlockWeights {
  LayerNormWeights ln1;
  AttentionWeights attn;
  LayerNormWeights ln2;
  MlpWeights mlp;
};

struct VisionWeights {
  LinearWeights patch_emb;
  at::Tensor pos_emb;  // [1, 729, enc_dim]
  std::vector<VisionBlockWeights> blocks;
  LayerNormWeights post_ln;
  MlpWeights proj_mlp;
};

struct TextBlockWeights {
  LayerNormWeights ln;
  AttentionWeights attn;
  MlpWeights mlp;
};

struct TextWeights {
  at::Tensor wte;  // [vocab, dim]
  std::vector<TextBlockWeights> blocks;
  LayerNormWeights post_ln;
  LinearWeights lm_head;
};

struct RegionWeights {
  at::Tensor coord_features;  // [1, coord_feat_dim / 2]
  LinearWeights coord_encoder;
  MlpWeights coord_decoder;
  at::Tensor size_features;  // [2, size_feat_dim / 2]
  LinearWeights size_encoder;
  MlpWeights size_decoder;
};

struct Weights {
  VisionWeights vision;
  TextWeights text;
  RegionWeights region;
};

enum class WeightLayout {
  kHuggingFace,  // model.vision.blocks.0.attn.qkv.weight, ...
  kLegacy,       // vision_encoder.encoder.model.visual..., text_model...
};

struct WeightOptions {
  at::ScalarType dtype = at::kFloat;
  at::Device device = at::kCPU;
};

// Which layout a file uses, from marker tensors.
absl::StatusOr<WeightLayout> DetectLayout(const SafetensorsFile& file);

// Loads and checks every tensor against `config` (presence and shape; the
// error names the tensor), then casts to options.dtype on options.device.
absl::StatusOr<Weights> LoadWeights(const SafetensorsFile& file,
                                    const MoondreamConfig& config,
                                    const WeightOptions& options);

// Random weights with the shapes of `config`, for benchmarks: scaled so
// activations stay finite, deterministic for a seed.
absl::StatusOr<Weights> RandomWeights(const MoondreamConfig& config,
                                      const WeightOptions& options,
                                      uint64_t seed);

// Writes `weights` to `path` as safetensors in the Hugging Face layout, each
// tensor in its own dtype, so LoadWeights reads them back bit for bit. The
// tensors stream to the file one at a time: no second copy of the weights is
// made (a tensor off the CPU is copied to it alone).
absl::Status SaveWeights(
    const std::string& path, const MoondreamConfig& config,
    const Weights& weights,
    const std::map<std::string, std::string>& metadata = {});

// Every parameter of `weights` under its Hugging Face layout name, in the
// order LoadWeights reads them: what a checkpoint of these weights holds.
std::vector<std::pair<std::string, at::Tensor>> NamedParameters(
    const MoondreamConfig& config, const Weights& weights);

// Bytes held by all parameters.
int64_t WeightBytes(const MoondreamConfig& config, const Weights& weights);

}  // namespace md

#endif  // MOONDREAM_MODEL_IO_WEIGHTS_H_
