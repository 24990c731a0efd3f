#include "model/net/moondream.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "model/io/safetensors.h"
#include "model/io/tensor_io.h"
#include "model/net/kernels/pack_weights.h"
#include "model/net/region.h"
#include "model/net/vision.h"

namespace md {

void SetComputeThreads(int n_threads) {
  if (n_threads > 0) at::set_num_threads(n_threads);
}

namespace {

absl::Status CheckOptions(const ModelOptions& options) {
  if (options.dtype != at::kFloat && options.dtype != at::kBFloat16 &&
      options.dtype != at::kHalf) {
    return absl::InvalidArgumentError(
        "compute dtype must be fp32, bf16 or fp16");
  }
  if (options.dtype == at::kHalf && !options.device.is_cuda()) {
    return absl::InvalidArgumentError(
        "fp16 compute needs a CUDA device; on CPU use bf16 or fp32");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> Model::Load(
    const std::string& path, const MoondreamConfig& defaults,
    const ModelOptions& options) {
  RETURN_IF_ERROR(CheckOptions(options));
  namespace fs = std::filesystem;
  std::error_code ec;
  const bool is_dir = fs::is_directory(path, ec);
  const fs::path weights_path =
      is_dir ? fs::path(path) / "model.safetensors" : fs::path(path);
  const fs::path config_path = weights_path.parent_path() / "config.json";

  MoondreamConfig config = defaults;
  if (fs::exists(config_path, ec)) {
    ASSIGN_OR_RETURN(config, LoadConfigFile(config_path.string(), defaults));
  }
  RETURN_IF_ERROR(ValidateConfig(config));
  ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file,
                   SafetensorsFile::Open(weights_path.string()));
  ASSIGN_OR_RETURN(Weights weights,
                   LoadWeights(*file, config, {options.dtype, options.device}));
  return Create(std::move(config), std::move(weights), options);
}

absl::StatusOr<std::unique_ptr<Model>> Model::Create(
    MoondreamConfig config, Weights weights, const ModelOptions& options) {
  RETURN_IF_ERROR(CheckOptions(options));
  RETURN_IF_ERROR(ValidateConfig(config));
  return CatchTorch("creating the model", [&] {
    // bf16 on CPU: pack the linear layers once, here, for the packed kernel.
    PackLinearWeights(&weights);
    return std::unique_ptr<Model>(
        new Model(std::move(config), std::move(weights), options));
  });
}

Model::Model(MoondreamConfig config, Weights weights,
             const ModelOptions& options)
    : config_(std::move(config)),
      weights_(std::move(weights)),
      options_(options),
      rotary_(MakeRotaryTable(config_.text, options.device)) {}

absl::StatusOr<std::vector<at::Tensor>> Model::EmbedImages(
    absl::Span<const ImageCrops> images) const {
  const VisionConfig& vc = config_.vision;
  const int side = vc.crop_size;
  for (const ImageCrops& image : images) {
    const at::Tensor& c = image.crops_u8;
    if (!c.defined() || c.dim() != 4 ||
        c.size(0) != 1 + image.tiling.n_tiles() || c.size(1) != side ||
        c.size(2) != side || c.size(3) != 3 || c.scalar_type() != at::kByte ||
        image.tiling.rows < 1 || image.tiling.cols < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("image crops must be uint8 [1 + rows·cols, ", side, ", ",
                       side, ", 3] for their tiling"));
    }
  }
  return CatchTorch("encoding images", [&] {
    at::NoGradGuard no_grad;
    std::vector<at::Tensor> all_crops;
    for (const ImageCrops& image : images) all_crops.push_back(image.crops_u8);
    at::Tensor features_BPE = EncodeDistinctCrops(at::cat(all_crops));
    std::vector<at::Tensor> embeddings;
    int64_t first = 0;
    for (const ImageCrops& image : images) {
      const int64_t n_tiles = image.tiling.n_tiles();
      at::Tensor local = features_BPE.narrow(0, first + 1, n_tiles)
                             .view({n_tiles, vc.grid(), vc.grid(), vc.enc_dim});
      at::Tensor pooled = PoolReconstructed(
          ReconstructFromCrops(local, image.tiling, vc.overlap_margin), vc);
      embeddings.push_back(
          ProjectImage(features_BPE[first], pooled, weights_.vision, vc));
      first += 1 + n_tiles;
    }
    return embeddings;
  });
}

at::Tensor Model::EncodeDistinctCrops(const at::Tensor& crops_BHWC_u8) const {
  return md::EncodeDistinctCrops(crops_BHWC_u8, weights_.vision, config_.vision,
                                 options_.dtype, options_.device);
}

absl::StatusOr<ImageFeatures> Model::EncodeImageDetailed(
    const ImageCrops& image) const {
  const VisionConfig& vc = config_.vision;
  ASSIGN_OR_RETURN(std::vector<at::Tensor> check, EmbedImages({image}));
  return CatchTorch("encoding an image", [&] {
    at::NoGradGuard no_grad;
    at::Tensor features_BPE = EncodeDistinctCrops(image.crops_u8);
    const int64_t n_tiles = image.tiling.n_tiles();
    ImageFeatures f;
    f.global_PE = features_BPE[0];
    f.reconstructed_HWE = ReconstructFromCrops(
        features_BPE.narrow(0, 1, n_tiles)
            .view({n_tiles, vc.grid(), vc.grid(), vc.enc_dim}),
        image.tiling, vc.overlap_margin);
    f.pooled_GGE = PoolReconstructed(f.reconstructed_HWE, vc);
    f.embedding_PC =
        ProjectImage(f.global_PE, f.pooled_GGE, weights_.vision, vc);
    return f;
  });
}

absl::StatusOr<at::Tensor> Model::PrefixEmbeddings(
    const at::Tensor& image_PC) const {
  ASSIGN_OR_RETURN(at::Tensor bos_1C, EmbedTokens({config_.tokenizer.bos_id}));
  return CatchTorch("building prefix embeddings", [&] {
    return at::cat({bos_1C, image_PC}, 0);
  });
}

absl::StatusOr<KvCache> Model::NewKvCache(int n_slots, int n_positions,
                                          bool shared_prefixes) const {
  return AllocateKvCache(config_.text, n_slots, n_positions, options_.dtype,
                         options_.device, shared_prefixes ? prefix_len() : 0);
}

absl::StatusOr<at::Tensor> Model::Forward(
    const at::Tensor& embeds_NC, absl::Span<const SequenceChunk> chunks,
    KvCache& cache) const {
  RETURN_IF_ERROR(ValidateChunks(chunks, embeds_NC.size(0), cache));
  return CatchTorch("text decoder forward", [&] {
    at::NoGradGuard no_grad;
    return DecoderForward(embeds_NC, chunks, cache, weights_.text, config_.text,
                          rotary_, prefix_len());
  });
}

absl::StatusOr<at::Tensor> Model::EmbedTokens(absl::Span<const int> ids) const {
  for (int id : ids) {
    if (id < 0 || id >= config_.text.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", id, " is outside the vocabulary (",
                       config_.text.vocab_size, ")"));
    }
  }
  return CatchTorch("embedding tokens", [&] {
    std::vector<int64_t> ids64(ids.begin(), ids.end());
    return md::EmbedTokens(at::tensor(ids64, at::kLong), weights_.text);
  });
}

absl::StatusOr<at::Tensor> Model::Logits(const at::Tensor& hidden_BC) const {
  return CatchTorch("evaluating the language-model head", [&] {
    at::NoGradGuard no_grad;
    return LmHead(hidden_BC, weights_.text);
  });
}

absl::StatusOr<at::Tensor> Model::CoordinateLogits(
    const at::Tensor& hidden_BC) const {
  return CatchTorch("evaluating the coordinate head", [&] {
    at::NoGradGuard no_grad;
    return DecodeCoordinate(hidden_BC, weights_.region);
  });
}

absl::StatusOr<at::Tensor> Model::SizeLogits(
    const at::Tensor& hidden_BC) const {
  return CatchTorch("evaluating the size head", [&] {
    at::NoGradGuard no_grad;
    return DecodeSize(hidden_BC, weights_.region);
  });
}

absl::StatusOr<at::Tensor> Model::EncodeCoordinates(
    absl::Span<const float> coords) const {
  return CatchTorch("encoding coordinates", [&] {
    at::NoGradGuard no_grad;
    std::vector<float> values(coords.begin(), coords.end());
    return EncodeCoordinate(at::tensor(values, at::kFloat), weights_.region);
  });
}

absl::StatusOr<at::Tensor> Model::EncodeSizes(
    absl::Span<const float> w_h_pairs) const {
  return CatchTorch("encoding sizes", [&] {
    at::NoGradGuard no_grad;
    std::vector<float> values(w_h_pairs.begin(), w_h_pairs.end());
    return EncodeSize(at::tensor(values, at::kFloat).view({-1, 2}),
                      weights_.region);
  });
}

}  // namespace md
