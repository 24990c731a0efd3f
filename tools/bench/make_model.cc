#include "tools/bench/make_model.h"

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "base/paths.h"
#include "base/status_macros.h"
#include "model/bundle.h"
#include "model/config/config.h"
#include "model/io/tensor_io.h"
#include "model/io/weights.h"
#include "model/net/moondream.h"
#include "model/tokenizer/tokenizer.h"
#include "tools/bench/environment.h"
#include "tools/bench/flags.h"
#include "tools/bench/stats.h"
#include "tools/bench/workload.h"

namespace md::bench {
namespace {

// GPT-2's full BPE, the vocabulary the released models' prompt templates
// index. The tiny test model's tokenizer is cut to 2,048 tokens, so most ids
// a real-shape model can emit would have no text.
constexpr char kGpt2Tokenizer[] = "tests/data/tokenizer/tokenizer.json";

struct MakeModelOptions {
  std::string config_name = "moondream-0.5b";
  std::string dtype_name = "bf16";
  std::string out_dir;
  std::string tokenizer_path;
  int seed = static_cast<int>(kWeightSeed);
  int n_threads = static_cast<int>(std::thread::hardware_concurrency());
};

std::string DefaultTokenizerPath() {
  const std::string found = FindInProjectTree(kGpt2Tokenizer, ExecutableDir());
  return found.empty() ? std::string(kGpt2Tokenizer) : found;
}

absl::StatusOr<MakeModelOptions> ParseOptions(
    const std::vector<std::string>& args, bool* help) {
  MakeModelOptions opts;
  opts.tokenizer_path = DefaultTokenizerPath();
  FlagParser flags(
      "make-model",
      "Writes a model directory with RANDOM weights in the real shapes of a\n"
      "released configuration (model.safetensors, config.json, tokenizer.json\n"
      "and the RANDOM-WEIGHTS marker), for load tests: serve it with\n"
      "--model=DIR. Its answers are meaningless; its speed is the real one.");
  flags.AddString("config", &opts.config_name, "moondream-0.5b | moondream2");
  flags.AddString("dtype", &opts.dtype_name,
                  "bf16 | fp32 | fp16 (stored in the file)");
  flags.AddString("out", &opts.out_dir,
                  "directory to write (created; refused if it holds anything "
                  "but an earlier random-weights model)");
  flags.AddInt(
      "seed", &opts.seed,
      "random weights' seed (the default gives the weights `model` and "
      "`engine` time)");
  flags.AddString("tokenizer", &opts.tokenizer_path,
                  "Hugging Face tokenizer.json to copy in");
  flags.AddInt("threads", &opts.n_threads,
               "compute threads for making the weights");
  RETURN_IF_ERROR(flags.Parse(args));
  *help = flags.help_requested();
  if (*help) {
    std::printf("%s", flags.Usage().c_str());
    return opts;
  }
  if (opts.out_dir.empty()) {
    return absl::InvalidArgumentError("--out=DIR is required");
  }
  if (opts.seed < 0 || opts.n_threads < 1) {
    return absl::InvalidArgumentError("--seed must be >= 0 and --threads >= 1");
  }
  opts.out_dir = ExpandUser(opts.out_dir);
  opts.tokenizer_path = ExpandUser(opts.tokenizer_path);
  return opts;
}

// Checked before gigabytes are written: LoadModelBundle refuses a tokenizer
// with more tokens than the model has embeddings.
absl::Status CheckTokenizerFits(const std::string& path,
                                const MoondreamConfig& config) {
  ASSIGN_OR_RETURN(Tokenizer tokenizer, Tokenizer::FromHuggingFaceJson(path));
  if (tokenizer.vocab_size() > config.text.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, " has ", tokenizer.vocab_size(), " tokens but ", config.name,
        " has a vocabulary of ", config.text.vocab_size));
  }
  return absl::OkStatus();
}

// What the RANDOM-WEIGHTS marker says: why the answers are meaningless and
// how to make the same directory again.
std::string MarkerText(const MakeModelOptions& opts) {
  return absl::StrCat(
      "This model has random weights: `moondream-bench make-model --config=",
      opts.config_name, " --dtype=", opts.dtype_name, " --seed=", opts.seed,
      "` wrote it for load tests.\nIt has the real model's shapes and speed, "
      "but its answers are meaningless. See README, \"Real weights\".\n");
}

}  // namespace

absl::Status RunMakeModel(const std::vector<std::string>& args) {
  bool help = false;
  ASSIGN_OR_RETURN(MakeModelOptions opts, ParseOptions(args, &help));
  if (help) return absl::OkStatus();
  ASSIGN_OR_RETURN(MoondreamConfig config, PresetConfig(opts.config_name));
  ASSIGN_OR_RETURN(at::ScalarType dtype, ParseDType(opts.dtype_name));
  RETURN_IF_ERROR(CheckTokenizerFits(opts.tokenizer_path, config));
  SetComputeThreads(opts.n_threads);

  Stopwatch watch;
  // The same weights the `model` and `engine` benchmarks build for a seed.
  ASSIGN_OR_RETURN(Weights weights,
                   RandomWeights(config, {dtype, at::kCPU},
                                 static_cast<uint64_t>(opts.seed)));
  const double made_s = watch.ElapsedMs() / 1000;
  RETURN_IF_ERROR(WriteRandomModelDirectory(
      opts.out_dir, config, weights, opts.tokenizer_path, MarkerText(opts)));
  const double total_s = watch.ElapsedMs() / 1000;
  std::printf(
      "wrote %s: %s, %s, %.0f MiB of RANDOM weights (seed %d; made in %.1f s, "
      "written in %.1f s)\nserve it with --model=%s (its answers are "
      "meaningless)\n",
      opts.out_dir.c_str(), config.name.c_str(),
      std::string(DTypeLabel(dtype)).c_str(), Mb(WeightBytes(config, weights)),
      opts.seed, made_s, total_s - made_s, opts.out_dir.c_str());
  return absl::OkStatus();
}

}  // namespace md::bench
