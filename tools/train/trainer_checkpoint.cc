// The trainer's files: checkpoints (weights, optimizer, step, RNG state),
// a first stage's vision tower, and the model directory the server loads.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/serialize/archive.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "absl/algorithm/container.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "model/bundle.h"
#include "model/io/safetensors.h"
#include "model/io/tensor_io.h"
#include "model/io/weights.h"
#include "tools/train/trainer.h"

namespace md::train {
namespace {

namespace fs = std::filesystem;

absl::Status WriteTextFile(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) {
    return absl::InternalError(
        absl::StrCat("cannot write '", path.string(), "'"));
  }
  return absl::OkStatus();
}

// What the start-up banner says of a model trained here (the DEMO-MODEL
// file of model/bundle.h).
constexpr char kDemoDescription[] =
    "a tiny Moondream trained by moondream-bench train on synthetic scenes "
    "only (1 to 4 red, green, blue or yellow circles, squares and triangles "
    "on a white or light grey background; tools/scenes), to count them, "
    "tell their colours and shapes, caption them left to right, detect and "
    "point at them. How well it does: moondream-bench scenes-eval "
    "--model=<this directory>. Other images get meaningless answers.\n";

// A vision-only stage's directory: its decoder was trained to read another
// tower's features, so what it answers means nothing yet.
constexpr char kVisionStageDescription[] =
    "a vision-only training stage of a tiny Moondream for synthetic scenes "
    "(moondream-bench train --vision-only): its vision tower was retrained "
    "alone, so its text decoder has not learnt to read it and every answer "
    "is meaningless until a text stage starts from this directory "
    "(--init-from). moondream-bench feature-probe reads what its tower "
    "holds.\n";

}  // namespace

std::string Trainer::checkpoint_path() const {
  return (fs::path(opts_.out_dir) / "checkpoint.pt").string();
}
std::string Trainer::model_dir() const {
  return (fs::path(opts_.out_dir) / "model").string();
}

absl::Status Trainer::SaveCheckpoint() const {
  const std::string tmp = checkpoint_path() + ".tmp";
  RETURN_IF_ERROR(CatchTorchStatus("saving the checkpoint", [&] {
    torch::serialize::OutputArchive archive;
    archive.write("config", c10::IValue(ConfigToJson(opts_.config)));
    archive.write("step", at::tensor(static_cast<int64_t>(step_)));
    if (steps_before_ > 0) {
      archive.write("steps_before", at::tensor(steps_before_));
    }
    archive.write("rng", at::detail::getDefaultCPUGenerator().get_state());
    for (const auto& [name, tensor] : params_) {
      archive.write("param/" + name, tensor.detach());
    }
    if (region_rows_mean_C_.defined()) {
      archive.write("region_rows_mean", region_rows_mean_C_);
    }
    torch::serialize::OutputArchive optimizer;
    optimizer_->save(optimizer);
    archive.write("optimizer", optimizer);
    archive.save_to(tmp);
  }));
  std::error_code ec;
  fs::rename(tmp, checkpoint_path(), ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot rename '", tmp, "': ", ec.message()));
  }
  return absl::OkStatus();
}

absl::Status Trainer::LoadCheckpoint() {
  return CatchTorchStatus("loading the checkpoint", [&] {
    torch::serialize::InputArchive archive;
    archive.load_from(checkpoint_path());
    c10::IValue config;
    archive.read("config", config);
    if (config.toStringRef() != ConfigToJson(opts_.config)) {
      throw std::runtime_error(
          "the checkpoint was trained with another model config");
    }
    at::Tensor step, rng;
    archive.read("step", step);
    step_ = static_cast<int>(step.item<int64_t>());
    at::Tensor steps_before;
    if (archive.try_read("steps_before", steps_before)) {
      steps_before_ = steps_before.item<int64_t>();
    }
    archive.read("rng", rng);
    at::Generator generator = at::detail::getDefaultCPUGenerator();
    generator.set_state(rng);
    at::NoGradGuard no_grad;
    int fresh_probes = 0, fresh_weights = 0;
    for (auto& [name, tensor] : params_) {
      if (absl::c_any_of(opts_.reinit_prefixes, [&](const std::string& p) {
            return absl::StartsWith(name, p);
          })) {
        ++fresh_weights;
        continue;
      }
      at::Tensor saved;
      if (!archive.try_read("param/" + name, saved)) {
        // A probe switched on at this resume starts fresh (a curriculum).
        if (!absl::StartsWith(name, "train_only.")) {
          throw std::runtime_error(
              absl::StrCat("the checkpoint has no ", name));
        }
        ++fresh_probes;
        continue;
      }
      tensor.copy_(saved);
    }
    at::Tensor mean_C;
    if (fresh_weights == 0 && archive.try_read("region_rows_mean", mean_C)) {
      region_rows_mean_C_ = mean_C;
    }
    if (fresh_weights > 0) {
      std::printf(
          "train: %d tensors re-initialised (--reinit); the optimizer state "
          "and the region rows' mean start anew\n",
          fresh_weights);
      return;
    }
    if (fresh_probes > 0) {
      // AdamW's state is stored per parameter in order: with new ones it no
      // longer lines up, so every moment starts anew.
      std::printf(
          "train: %d probe tensors start fresh; the optimizer state too\n",
          fresh_probes);
      return;
    }
    torch::serialize::InputArchive optimizer;
    archive.read("optimizer", optimizer);
    optimizer_->load(optimizer);
  });
}

namespace {

// Under NoGradGuard; throws, naming the tensor, when the shapes differ.
void CopyVisionTensor(const std::string& name, const at::Tensor& saved,
                      const std::string& source, at::Tensor& into) {
  if (!saved.sizes().equals(into.sizes())) {
    throw std::runtime_error(
        absl::StrCat(name, " has another shape in ", source,
                     ": its vision config differs from this run's"));
  }
  into.copy_(saved);
}

}  // namespace

absl::Status Trainer::LoadVisionFrom(const std::string& source) {
  std::error_code ec;
  if (fs::is_directory(source, ec)) return LoadVisionFromModel(source);
  const std::string& checkpoint = source;
  return CatchTorchStatus("loading the vision tower", [&] {
    torch::serialize::InputArchive archive;
    archive.load_from(checkpoint);
    at::NoGradGuard no_grad;
    int copied = 0;
    for (auto& [name, tensor] : params_) {
      if (!IsVisionParameter(name)) continue;
      at::Tensor saved;
      if (!archive.try_read("param/" + name, saved)) {
        // A probe the first stage did not train starts fresh.
        if (absl::StartsWith(name, "train_only.")) continue;
        throw std::runtime_error(absl::StrCat(checkpoint, " has no ", name));
      }
      CopyVisionTensor(name, saved, checkpoint, tensor);
      ++copied;
    }
    std::printf("train: vision tower (%d tensors) from %s\n", copied,
                checkpoint.c_str());
  });
}

at::Tensor& Trainer::Parameter(const std::string& name) {
  const auto it =
      absl::c_find_if(params_, [&](const auto& p) { return p.first == name; });
  if (it == params_.end()) {
    throw std::runtime_error(absl::StrCat("the trainer has no ", name));
  }
  return it->second;
}

// Called under NoGradGuard.
void Trainer::ZeroResidualOutputs(const std::string& block) {
  for (const char* part : {".attn.proj.", ".mlp.fc2."}) {
    for (const char* kind : {"weight", "bias"}) {
      const std::string name = absl::StrCat(block, part, kind);
      Parameter(name).zero_();
    }
  }
}

absl::StatusOr<MoondreamConfig> Trainer::SourceConfig(
    const std::string& model_dir) const {
  if (!opts_.grow_vision && !opts_.grow_text) return opts_.config;
  ASSIGN_OR_RETURN(
      MoondreamConfig source,
      LoadConfigFile((fs::path(model_dir) / "config.json").string(),
                     opts_.config));
  const int vision_layers = source.vision.enc_n_layers;
  const int text_layers = source.text.n_layers;
  if (opts_.grow_vision) {
    source.vision.enc_n_layers = opts_.config.vision.enc_n_layers;
  }
  if (opts_.grow_text) source.text.n_layers = opts_.config.text.n_layers;
  if (ConfigToJson(source) != ConfigToJson(opts_.config)) {
    return absl::InvalidArgumentError(
        absl::StrCat(model_dir,
                     ": growing needs a model whose config differs from this "
                     "run's in the ",
                     opts_.grow_vision && opts_.grow_text ? "vision and text"
                     : opts_.grow_vision                  ? "vision"
                                                          : "text",
                     " layers alone"));
  }
  if (vision_layers > opts_.config.vision.enc_n_layers) {
    return absl::InvalidArgumentError(absl::StrCat(
        model_dir, " has ", vision_layers, " vision layers, more than ",
        opts_.config.vision.enc_n_layers, ": a tower only grows"));
  }
  if (text_layers > opts_.config.text.n_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat(model_dir, " has ", text_layers, " text layers, this run ",
                     opts_.config.text.n_layers, ": a decoder only grows"));
  }
  source.vision.enc_n_layers = vision_layers;
  source.text.n_layers = text_layers;
  RETURN_IF_ERROR(ValidateConfig(source));
  return source;
}

namespace {

// The name a source model's tensor has in a run whose decoder grew from
// `source_layers` to `layers` text layers: the source's last block becomes
// the last one; every other name is unchanged.
std::string GrownName(const std::string& name, int source_layers, int layers) {
  const std::string last =
      absl::StrCat("model.text.blocks.", source_layers - 1, ".");
  if (source_layers == layers || !absl::StartsWith(name, last)) return name;
  return absl::StrCat("model.text.blocks.", layers - 1, ".",
                      name.substr(last.size()));
}

}  // namespace

// A model directory holds no probes: they start fresh. Its config.json
// may differ from this run's anywhere but in the vision tower and the
// projection (a fresh decoder of another shape on a trained tower).
absl::Status Trainer::LoadVisionFromModel(const std::string& model_dir) {
  const std::string path = (fs::path(model_dir) / "model.safetensors").string();
  ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file,
                   SafetensorsFile::Open(path));
  ASSIGN_OR_RETURN(
      const MoondreamConfig source,
      LoadConfigFile((fs::path(model_dir) / "config.json").string(),
                     opts_.config));
  ASSIGN_OR_RETURN(Weights loaded, LoadWeights(*file, source, {}));
  return CatchTorchStatus("loading the vision tower", [&] {
    at::NoGradGuard no_grad;
    int copied = 0;
    for (const auto& [name, saved] : NamedParameters(source, loaded)) {
      if (!IsVisionParameter(name)) continue;
      CopyVisionTensor(name, saved, path, Parameter(name));
      ++copied;
    }
    const auto tower_tensors = absl::c_count_if(params_, [](const auto& p) {
      return IsVisionParameter(p.first) &&
             !absl::StartsWith(p.first, "train_only.");
    });
    if (copied != tower_tensors) {  // a tower with fewer layers than ours
      throw std::runtime_error(absl::StrCat(
          path, " holds ", copied, " of this run's ", tower_tensors,
          " vision tensors: its vision config differs"));
    }
    std::printf("train: vision tower (%d tensors) from %s\n", copied,
                path.c_str());
  });
}

absl::Status Trainer::LoadModelFrom(const std::string& model_dir) {
  const std::string path = (fs::path(model_dir) / "model.safetensors").string();
  ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file,
                   SafetensorsFile::Open(path));
  ASSIGN_OR_RETURN(const MoondreamConfig source, SourceConfig(model_dir));
  // Checks every tensor's presence and shape against the source's config.
  ASSIGN_OR_RETURN(Weights loaded, LoadWeights(*file, source, {}));
  const auto loaded_params = NamedParameters(source, loaded);
  RETURN_IF_ERROR(CatchTorchStatus("starting from a model", [&] {
    at::NoGradGuard no_grad;
    int copied = 0;
    const int text_layers = opts_.config.text.n_layers;
    for (const auto& [name, saved] : loaded_params) {
      Parameter(GrownName(name, source.text.n_layers, text_layers))
          .copy_(saved);
      ++copied;
    }
    std::printf("train: all %d model tensors from %s\n", copied, path.c_str());
    for (int layer = source.vision.enc_n_layers;
         layer < opts_.config.vision.enc_n_layers; ++layer) {
      ZeroResidualOutputs(absl::StrCat("model.vision.blocks.", layer));
    }
    if (source.vision.enc_n_layers < opts_.config.vision.enc_n_layers) {
      std::printf("train: vision layers %d..%d appended as identity blocks\n",
                  source.vision.enc_n_layers,
                  opts_.config.vision.enc_n_layers - 1);
    }
    for (int layer = source.text.n_layers - 1; layer < text_layers - 1;
         ++layer) {
      ZeroResidualOutputs(absl::StrCat("model.text.blocks.", layer));
    }
    if (source.text.n_layers < text_layers) {
      std::printf(
          "train: text layers %d..%d inserted as identity blocks before the "
          "last\n",
          source.text.n_layers - 1, text_layers - 2);
    }
  }));
  unfold_region_mean_ = opts_.center_region_head;
  // The written model's "step" counts every step behind its weights.
  const auto step = file->metadata().find("step");
  if (step != file->metadata().end() &&
      !absl::SimpleAtoi(step->second, &steps_before_)) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": metadata step '", step->second, "' is not a number"));
  }
  return absl::OkStatus();
}

absl::Status Trainer::WriteModelDirectory(const std::string& dir) const {
  const fs::path final_dir(dir);
  const fs::path tmp = fs::path(dir + ".writing");
  std::error_code ec;
  if (fs::exists(final_dir, ec) && !fs::is_empty(final_dir, ec) &&
      !fs::exists(final_dir / "model.safetensors", ec)) {
    return absl::FailedPreconditionError(
        absl::StrCat("refusing to replace '", dir,
                     "': it holds files but no model.safetensors"));
  }
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot create '", tmp.string(), "': ", ec.message()));
  }
  RETURN_IF_ERROR(
      WriteTextFile(tmp / "config.json", ConfigToJson(opts_.config)));
  fs::copy_file(opts_.tokenizer_path, tmp / "tokenizer.json",
                fs::copy_options::overwrite_existing, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat(
        "cannot copy '", opts_.tokenizer_path, "': ", ec.message()));
  }
  RETURN_IF_ERROR(WriteTextFile(
      tmp / kDemoModelMarker,
      opts_.vision_only ? kVisionStageDescription : kDemoDescription));
  const std::map<std::string, std::string> metadata = {
      {"format", "pt"},
      {"weights", "trained"},
      {"trainer", "moondream-bench train (synthetic scenes, issue 14)"},
      {"step", std::to_string(steps_before_ + step_)}};
  Weights served;
  RETURN_IF_ERROR(CatchTorchStatus("folding the head statistics", [&] {
    at::NoGradGuard no_grad;
    served = ServedWeights();
  }));
  RETURN_IF_ERROR(SaveWeights((tmp / "model.safetensors").string(),
                              opts_.config, served, metadata));
  fs::remove_all(final_dir, ec);
  fs::rename(tmp, final_dir, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat(
        "cannot rename '", tmp.string(), "' to '", dir, "': ", ec.message()));
  }
  return absl::OkStatus();
}

}  // namespace md::train
