#include "model/bundle.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "model/io/tensor_io.h"

namespace md {
namespace {

bool SameShape(const MoondreamConfig& a, const MoondreamConfig& b) {
  return a.text.dim == b.text.dim && a.text.n_layers == b.text.n_layers &&
         a.text.n_heads == b.text.n_heads &&
         a.text.vocab_size == b.text.vocab_size &&
         a.vision.enc_dim == b.vision.enc_dim &&
         a.vision.enc_n_layers == b.vision.enc_n_layers;
}

}  // namespace

absl::StatusOr<ModelBundle> LoadModelBundle(const std::string& dir,
                                            const std::string& preset,
                                            const ModelOptions& options) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::NotFoundError(
        absl::StrCat("model directory '", dir, "' does not exist"));
  }
  ASSIGN_OR_RETURN(MoondreamConfig defaults, PresetConfig(preset));
  ModelBundle bundle;
  bundle.dir = dir;
  ASSIGN_OR_RETURN(bundle.model, Model::Load(dir, defaults, options));
  const std::string tokenizer_path =
      (fs::path(dir) / "tokenizer.json").string();
  if (!fs::exists(tokenizer_path, ec)) {
    return absl::NotFoundError(
        absl::StrCat("model directory '", dir,
                     "' has no tokenizer.json (see README: Real weights)"));
  }
  ASSIGN_OR_RETURN(Tokenizer tokenizer,
                   Tokenizer::FromHuggingFaceJson(tokenizer_path));
  bundle.tokenizer = std::make_unique<Tokenizer>(std::move(tokenizer));
  const int model_vocab = bundle.model->config().text.vocab_size;
  if (bundle.tokenizer->vocab_size() > model_vocab) {
    return absl::FailedPreconditionError(
        absl::StrCat("tokenizer.json has ", bundle.tokenizer->vocab_size(),
                     " tokens but the model's vocabulary is ", model_vocab));
  }
  ASSIGN_OR_RETURN(bundle.gaze_ids.before,
                   bundle.tokenizer->Encode("\n\nPoint:"));
  ASSIGN_OR_RETURN(bundle.gaze_ids.after,
                   bundle.tokenizer->Encode(" gaze\n\n"));
  bundle.random_weights = fs::exists(fs::path(dir) / kRandomWeightsMarker, ec);
  const MoondreamConfig& c = bundle.model->config();
  bundle.released_shape =
      SameShape(c, Moondream2Config()) || SameShape(c, Moondream05BConfig());
  return bundle;
}

std::string DescribeBundle(const ModelBundle& bundle) {
  const MoondreamConfig& c = bundle.model->config();
  std::string line = absl::StrCat(
      "model ", bundle.dir, ": text dim ", c.text.dim, " x ", c.text.n_layers,
      " layers, vision dim ", c.vision.enc_dim, ", vocab ", c.text.vocab_size,
      ", ", std::string(DTypeLabel(bundle.model->options().dtype)), " on ",
      bundle.model->options().device.str());
  if (bundle.random_weights) {
    absl::StrAppend(
        &line,
        "\nWARNING: this model's weights are random (a test model): its "
        "answers are meaningless. See README 'Real weights'.");
  } else if (!bundle.released_shape) {
    absl::StrAppend(
        &line,
        "\nNOTE: this is not the shape of a released Moondream model; "
        "its answers are only as good as its weights.");
  }
  return line;
}

}  // namespace md
