#include "model/bundle.h"

#include <cctype>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "model/io/tensor_io.h"
#include "model/io/weights.h"

namespace md {
namespace {

bool SameShape(const MoondreamConfig& a, const MoondreamConfig& b) {
  return a.text.dim == b.text.dim && a.text.n_layers == b.text.n_layers &&
         a.text.n_heads == b.text.n_heads &&
         a.text.vocab_size == b.text.vocab_size &&
         a.vision.enc_dim == b.vision.enc_dim &&
         a.vision.enc_n_layers == b.vision.enc_n_layers;
}

absl::Status WriteTextFile(const std::filesystem::path& path,
                           const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) {
    return absl::InternalError(
        absl::StrCat("cannot write '", path.string(), "'"));
  }
  return absl::OkStatus();
}

// An empty or missing directory, or one an earlier run flagged random.
absl::Status CheckWritableModelDir(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(dir, ec)) return absl::OkStatus();
  if (!fs::is_directory(dir, ec)) {
    return absl::FailedPreconditionError(
        absl::StrCat("'", dir.string(), "' exists and is not a directory"));
  }
  const bool empty = fs::is_empty(dir, ec);
  if (ec) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot read directory '", dir.string(), "': ", ec.message()));
  }
  if (!empty && !fs::exists(dir / kRandomWeightsMarker, ec)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "refusing to write into '", dir.string(),
        "': it holds files and is not a random-weights model directory (no ",
        kRandomWeightsMarker, " file)"));
  }
  return absl::OkStatus();
}

// The DEMO-MODEL file's text without trailing blank space; empty when the
// file is absent. A banner line, not a document: longer files are refused.
absl::StatusOr<std::string> ReadDemoDescription(
    const std::filesystem::path& path) {
  constexpr std::uintmax_t kMaxBytes = 4096;
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return std::string();
  const std::uintmax_t size = std::filesystem::file_size(path, ec);
  if (ec || size > kMaxBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", path.string(), "' must be a text file of at most ",
                     kMaxBytes, " bytes"));
  }
  std::ifstream in(path, std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)),
                   std::istreambuf_iterator<char>());
  while (!text.empty() &&
         std::isspace(static_cast<unsigned char>(text.back()))) {
    text.pop_back();
  }
  return text;
}

}  // namespace

absl::Status WriteRandomModelDirectory(const std::string& dir,
                                       const MoondreamConfig& config,
                                       const Weights& weights,
                                       const std::string& tokenizer_path,
                                       const std::string& marker_text) {
  namespace fs = std::filesystem;
  const fs::path root(dir);
  RETURN_IF_ERROR(CheckWritableModelDir(root));
  std::error_code ec;
  if (!fs::is_regular_file(tokenizer_path, ec)) {
    return absl::NotFoundError(
        absl::StrCat("tokenizer file '", tokenizer_path, "' does not exist"));
  }
  fs::create_directories(root, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot create directory '", dir, "': ", ec.message()));
  }
  RETURN_IF_ERROR(WriteTextFile(root / kRandomWeightsMarker, marker_text));
  RETURN_IF_ERROR(WriteTextFile(root / "config.json", ConfigToJson(config)));
  fs::copy_file(tokenizer_path, root / "tokenizer.json",
                fs::copy_options::overwrite_existing, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat(
        "cannot copy '", tokenizer_path, "' into '", dir, "': ", ec.message()));
  }
  // The format's own metadata says it too, for a file copied out alone.
  const std::map<std::string, std::string> metadata = {{"format", "pt"},
                                                       {"weights", "random"}};
  return SaveWeights((root / "model.safetensors").string(), config, weights,
                     metadata);
}

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
  ASSIGN_OR_RETURN(bundle.demo_description,
                   ReadDemoDescription(fs::path(dir) / kDemoModelMarker));
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
  } else if (!bundle.demo_description.empty()) {
    absl::StrAppend(&line, "\nNOTE: a demo model, not Moondream's weights: ",
                    bundle.demo_description);
  } else if (!bundle.released_shape) {
    absl::StrAppend(
        &line,
        "\nNOTE: this is not the shape of a released Moondream model; "
        "its answers are only as good as its weights.");
  }
  return line;
}

}  // namespace md
