#include "model/io/weights.h"

#include <ATen/ATen.h>

#include <functional>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "model/io/safetensors_writer.h"
#include "model/io/tensor_io.h"

namespace md {
namespace {

// One parameter: where it goes, its names in both layouts, its shape (in our
// layout), and whether the legacy file stores it transposed.
struct ParamSpec {
  at::Tensor* target;
  std::string hf_name;
  std::string legacy_name;
  std::vector<int64_t> shape;
  bool legacy_transposed = false;
};

class SpecList {
 public:
  void Add(at::Tensor* target, std::string hf, std::string legacy,
           std::vector<int64_t> shape, bool legacy_transposed = false) {
    specs_.push_back({target, std::move(hf), std::move(legacy),
                      std::move(shape), legacy_transposed});
  }
  void Linear(LinearWeights* w, const std::string& hf,
              const std::string& legacy, int64_t in, int64_t out) {
    Add(&w->weight, hf + ".weight", legacy + ".weight", {out, in});
    Add(&w->bias, hf + ".bias", legacy + ".bias", {out});
  }
  void Norm(LayerNormWeights* w, const std::string& hf,
            const std::string& legacy, int64_t dim) {
    Add(&w->weight, hf + ".weight", legacy + ".weight", {dim});
    Add(&w->bias, hf + ".bias", legacy + ".bias", {dim});
  }
  void Mlp(MlpWeights* w, const std::string& hf, const std::string& legacy,
           int64_t in, int64_t inner, int64_t out) {
    Linear(&w->fc1, hf + ".fc1", legacy + ".fc1", in, inner);
    Linear(&w->fc2, hf + ".fc2", legacy + ".fc2", inner, out);
  }
  std::vector<ParamSpec>& specs() { return specs_; }

 private:
  std::vector<ParamSpec> specs_;
};

// Every parameter of `config`, in a fixed order.
std::vector<ParamSpec> ParameterSpecs(const MoondreamConfig& config,
                                      Weights* w) {
  const VisionConfig& v = config.vision;
  const TextConfig& t = config.text;
  const RegionConfig& r = config.region;
  SpecList s;

  VisionWeights& vw = w->vision;
  const std::string lv = "vision_encoder.encoder.model.visual";
  s.Linear(&vw.patch_emb, "model.vision.patch_emb", lv + ".patch_embed.linear",
           v.patch_dim(), v.enc_dim);
  s.Add(&vw.pos_emb, "model.vision.pos_emb", lv + ".pos_embed",
        {1, v.n_patches(), v.enc_dim});
  vw.blocks.resize(v.enc_n_layers);
  for (int i = 0; i < v.enc_n_layers; ++i) {
    VisionBlockWeights& b = vw.blocks[i];
    std::string hf = absl::StrCat("model.vision.blocks.", i);
    std::string lg = absl::StrCat(lv, ".blocks.", i);
    s.Norm(&b.ln1, hf + ".ln1", lg + ".norm1", v.enc_dim);
    s.Linear(&b.attn.qkv, hf + ".attn.qkv", lg + ".attn.qkv", v.enc_dim,
             3 * v.enc_dim);
    s.Linear(&b.attn.proj, hf + ".attn.proj", lg + ".attn.proj", v.enc_dim,
             v.enc_dim);
    s.Norm(&b.ln2, hf + ".ln2", lg + ".norm2", v.enc_dim);
    s.Mlp(&b.mlp, hf + ".mlp", lg + ".mlp", v.enc_dim, v.enc_ff_dim, v.enc_dim);
  }
  s.Norm(&vw.post_ln, "model.vision.post_ln", lv + ".norm", v.enc_dim);
  s.Mlp(&vw.proj_mlp, "model.vision.proj_mlp", "vision_encoder.projection.mlp",
        2 * v.enc_dim, v.proj_inner_dim, v.proj_out_dim);

  TextWeights& tw = w->text;
  s.Add(&tw.wte, "model.text.wte", "text_model.transformer.embd.wte.weight",
        {t.vocab_size, t.dim});
  tw.blocks.resize(t.n_layers);
  for (int i = 0; i < t.n_layers; ++i) {
    TextBlockWeights& b = tw.blocks[i];
    std::string hf = absl::StrCat("model.text.blocks.", i);
    std::string lg = absl::StrCat("text_model.transformer.h.", i);
    s.Norm(&b.ln, hf + ".ln", lg + ".ln", t.dim);
    s.Linear(&b.attn.qkv, hf + ".attn.qkv", lg + ".mixer.Wqkv", t.dim,
             3 * t.dim);
    s.Linear(&b.attn.proj, hf + ".attn.proj", lg + ".mixer.out_proj", t.dim,
             t.dim);
    s.Mlp(&b.mlp, hf + ".mlp", lg + ".mlp", t.dim, 4 * t.dim, t.dim);
  }
  s.Norm(&tw.post_ln, "model.text.post_ln", "text_model.lm_head.ln", t.dim);
  s.Linear(&tw.lm_head, "model.text.lm_head", "text_model.lm_head.linear",
           t.dim, t.vocab_size);

  RegionWeights& rw = w->region;
  const std::string lr = "region_model";
  s.Add(&rw.coord_features, "model.region.coord_features",
        lr + ".coordinate_features.weight", {1, r.coord_feat_dim / 2},
        /*legacy_transposed=*/true);
  s.Linear(&rw.coord_encoder, "model.region.coord_encoder",
           lr + ".coordinate_encoder", r.coord_feat_dim, r.dim);
  s.Mlp(&rw.coord_decoder, "model.region.coord_decoder",
        lr + ".coordinate_decoder", r.dim, r.inner_dim, r.coord_out_dim);
  s.Add(&rw.size_features, "model.region.size_features",
        lr + ".size_features.weight", {2, r.size_feat_dim / 2},
        /*legacy_transposed=*/true);
  s.Linear(&rw.size_encoder, "model.region.size_encoder", lr + ".size_encoder",
           r.size_feat_dim, r.dim);
  s.Mlp(&rw.size_decoder, "model.region.size_decoder", lr + ".size_decoder",
        r.dim, r.inner_dim, r.size_out_dim);
  return std::move(s.specs());
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// Training checkpoints saved from a compiled model carry "._orig_mod" in
// their names; the reference strips it, and so do we.
absl::StatusOr<TensorView> FindTensor(const SafetensorsFile& file,
                                      const std::string& name) {
  if (file.Contains(name)) return file.Get(name);
  for (const std::string& candidate : file.Names()) {
    std::string stripped = candidate;
    for (size_t at; (at = stripped.find("._orig_mod")) != std::string::npos;) {
      stripped.erase(at, 10);
    }
    if (stripped == name) return file.Get(candidate);
  }
  return absl::NotFoundError(absl::StrCat(
      "weights: tensor '", name, "' is missing from ", file.display_name()));
}

absl::StatusOr<at::Tensor> LoadOne(const SafetensorsFile& file,
                                   const ParamSpec& spec, WeightLayout layout,
                                   const WeightOptions& options) {
  const bool legacy = layout == WeightLayout::kLegacy;
  const std::string& name = legacy ? spec.legacy_name : spec.hf_name;
  ASSIGN_OR_RETURN(TensorView view, FindTensor(file, name));
  if (view.dtype != DType::kF16 && view.dtype != DType::kBF16 &&
      view.dtype != DType::kF32) {
    return absl::InvalidArgumentError(absl::StrCat(
        "weights: tensor '", name, "' has dtype ",
        std::string(DTypeName(view.dtype)), "; expected F16, BF16 or F32"));
  }
  std::vector<int64_t> expected = spec.shape;
  if (legacy && spec.legacy_transposed) std::swap(expected[0], expected[1]);
  if (view.shape != expected) {
    return absl::InvalidArgumentError(absl::StrCat(
        "weights: tensor '", name, "' has shape ", ShapeString(view.shape),
        " but the config needs ", ShapeString(expected)));
  }
  ASSIGN_OR_RETURN(at::Tensor tensor, ToTensor(view));
  return CatchTorch(absl::StrCat("converting '", name, "'"), [&] {
    if (legacy && spec.legacy_transposed) tensor = tensor.t();
    return tensor.to(options.device, options.dtype).contiguous();
  });
}

}  // namespace

absl::StatusOr<WeightLayout> DetectLayout(const SafetensorsFile& file) {
  if (FindTensor(file, "model.text.wte").ok())
    return WeightLayout::kHuggingFace;
  if (FindTensor(file, "text_model.transformer.embd.wte.weight").ok()) {
    return WeightLayout::kLegacy;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "weights: ", file.display_name(),
      " is not a Moondream checkpoint: neither 'model.text.wte' (Hugging Face "
      "layout) nor 'text_model.transformer.embd.wte.weight' (training layout) "
      "is present"));
}

absl::StatusOr<Weights> LoadWeights(const SafetensorsFile& file,
                                    const MoondreamConfig& config,
                                    const WeightOptions& options) {
  ASSIGN_OR_RETURN(WeightLayout layout, DetectLayout(file));
  Weights weights;
  for (const ParamSpec& spec : ParameterSpecs(config, &weights)) {
    ASSIGN_OR_RETURN(*spec.target, LoadOne(file, spec, layout, options));
  }
  return weights;
}

absl::StatusOr<Weights> RandomWeights(const MoondreamConfig& config,
                                      const WeightOptions& options,
                                      uint64_t seed) {
  Weights weights;
  std::vector<ParamSpec> specs = ParameterSpecs(config, &weights);
  RETURN_IF_ERROR(CatchTorchStatus("making random weights", [&] {
    at::Generator gen = at::detail::createCPUGenerator(seed);
    for (const ParamSpec& spec : specs) {
      at::Tensor t;
      const bool is_norm_weight =
          spec.shape.size() == 1 &&
          spec.hf_name.find("ln") != std::string::npos &&
          spec.hf_name.ends_with(".weight");
      if (is_norm_weight) {
        t = at::ones(spec.shape);
      } else if (spec.shape.size() == 1) {
        t = at::zeros(spec.shape);
      } else {
        // Fan-in scaling keeps activations O(1) through deep stacks.
        double fan_in = static_cast<double>(spec.shape.back());
        t = at::randn(spec.shape, gen) * (1.0 / std::sqrt(fan_in));
      }
      *spec.target = t.to(options.device, options.dtype).contiguous();
    }
  }));
  return weights;
}

std::vector<std::pair<std::string, at::Tensor>> NamedParameters(
    const MoondreamConfig& config, const Weights& weights) {
  Weights copy = weights;  // shares the tensors; the specs only point at slots
  std::vector<std::pair<std::string, at::Tensor>> named;
  for (const ParamSpec& spec : ParameterSpecs(config, &copy)) {
    named.emplace_back(spec.hf_name, *spec.target);
  }
  return named;
}

absl::Status SaveWeights(const std::string& path, const MoondreamConfig& config,
                         const Weights& weights,
                         const std::map<std::string, std::string>& metadata) {
  const std::vector<std::pair<std::string, at::Tensor>> named =
      NamedParameters(config, weights);
  std::vector<TensorHeader> headers;
  headers.reserve(named.size());
  for (const auto& [name, tensor] : named) {
    if (!tensor.defined()) {
      return absl::FailedPreconditionError(
          absl::StrCat("weights: tensor '", name, "' is not set"));
    }
    ASSIGN_OR_RETURN(DType dtype, SafetensorsDType(tensor.scalar_type()));
    headers.push_back({name, dtype, tensor.sizes().vec()});
  }
  using Writer = std::unique_ptr<SafetensorsWriter>;
  ASSIGN_OR_RETURN(Writer writer, SafetensorsWriter::Create(
                                      path, std::move(headers), metadata));
  for (const auto& [name, tensor] : named) {
    ASSIGN_OR_RETURN(at::Tensor host,
                     CatchTorch(absl::StrCat("saving '", name, "'"), [&] {
                       return tensor.to(at::kCPU).contiguous();
                     }));
    RETURN_IF_ERROR(writer->Write(name, host.data_ptr(), host.nbytes()));
  }
  return writer->Finish();
}

int64_t WeightBytes(const MoondreamConfig& config, const Weights& weights) {
  Weights copy = weights;  // shares the tensors; the specs only point at slots
  int64_t bytes = 0;
  for (const ParamSpec& spec : ParameterSpecs(config, &copy)) {
    if (spec.target->defined()) bytes += spec.target->nbytes();
  }
  return bytes;
}

}  // namespace md
