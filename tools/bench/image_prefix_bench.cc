#include "tools/bench/image_prefix_bench.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstdint>
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "model/config/config.h"
#include "model/image/tiling.h"
#include "model/io/tensor_io.h"
#include "model/io/weights.h"
#include "model/net/kv_cache.h"
#include "model/net/moondream.h"
#include "model/net/text.h"
#include "model/net/vision.h"
#include "model/skills/skills.h"
#include "tools/bench/environment.h"
#include "tools/bench/flags.h"
#include "tools/bench/stats.h"
#include "tools/bench/workload.h"

namespace md::bench {
namespace {

constexpr uint64_t kCropSeed = 7;
// A 378×378 image of random pixels: the global crop and one tile (what the
// preprocessing picks for that size), and both hold the same pixels.
constexpr Tiling kOneTile{1, 1};
constexpr int kImageSide = 378;

struct ImagePrefixOptions {
  std::string config_name = "moondream-0.5b";
  std::string dtype_name = "bf16";
  int n_threads = static_cast<int>(std::thread::hardware_concurrency());
  int n_reps = 5;
  bool stages = false;
  bool driven = false;
};

absl::StatusOr<ImagePrefixOptions> ParseOptions(
    const std::vector<std::string>& args, bool* help) {
  ImagePrefixOptions opts;
  FlagParser flags(
      "image-prefix",
      "Times md::EncodeImage on one 378x378 image of random pixels (2 crops,\n"
      "the same pixels twice, encoded once) with RANDOM weights: vision\n"
      "encoder + projection + prefill of the 730-position prefix (BOS +\n"
      "image), from uint8 crops to the prefix KV. Prints JSON:\n"
      "the median over --reps after one warm-up, or with --stdin one line per\n"
      "command read ('encode', 'stages'; EOF ends) after a 'ready' line.");
  flags.AddString("config", &opts.config_name, "moondream-0.5b | moondream2");
  flags.AddString("dtype", &opts.dtype_name, "bf16 | fp32");
  flags.AddInt("threads", &opts.n_threads, "intra-op compute threads");
  flags.AddInt("reps", &opts.n_reps, "measured repetitions (after a warm-up)");
  flags.AddBool("stages", &opts.stages,
                "also time each stage (encoder, projection, prefix prefill) "
                "in a separate step-by-step run per repetition");
  flags.AddBool("stdin", &opts.driven,
                "wait for commands on stdin instead of running --reps");
  RETURN_IF_ERROR(flags.Parse(args));
  *help = flags.help_requested();
  if (*help) {
    std::printf("%s", flags.Usage().c_str());
    return opts;
  }
  if (opts.n_threads < 1 || opts.n_reps < 1) {
    return absl::InvalidArgumentError("--threads and --reps must be >= 1");
  }
  return opts;
}

// ---- Measurements ----

// The engine's path: md::EncodeImage, crops to prefix KV.
absl::StatusOr<double> TimeEncode(const Model& model, const ImageCrops& image) {
  Stopwatch watch;
  RETURN_IF_ERROR(EncodeImage(model, image).status());
  return watch.ElapsedMs();
}

struct StageTimes {
  double encoder_ms = 0;     // normalise + ViT over all crops
  double projection_ms = 0;  // reconstruct + pool + projection MLP
  double prefill_ms = 0;     // BOS + image rows through the text model
  double total_ms = 0;
};

// Normalised crops through the vision transformer, each distinct crop once
// as Model::EmbedImages does: features [B, P, E].
at::Tensor RunEncoder(const Model& model, const ImageCrops& image) {
  return model.EncodeDistinctCrops(image.crops_u8);
}

// Features [B, P, E] → image embedding [P, C], as Model::EmbedImages does.
at::Tensor RunProjection(const Model& model, const ImageCrops& image,
                         const at::Tensor& features_BPE) {
  const VisionConfig& vc = model.config().vision;
  const int64_t n_tiles = image.tiling.n_tiles();
  at::Tensor local = features_BPE.narrow(0, 1, n_tiles)
                         .view({n_tiles, vc.grid(), vc.grid(), vc.enc_dim});
  at::Tensor pooled = PoolReconstructed(
      ReconstructFromCrops(local, image.tiling, vc.overlap_margin), vc);
  return ProjectImage(features_BPE[0], pooled, model.weights().vision, vc);
}

// The prefix prefill as md::EncodeImages does it: a scratch cache, one
// chunk of 730 rows, the prefix KV read back out.
absl::Status RunPrefill(const Model& model, const at::Tensor& image_PC) {
  ASSIGN_OR_RETURN(at::Tensor prefix_TC, model.PrefixEmbeddings(image_PC));
  ASSIGN_OR_RETURN(KvCache cache, model.NewKvCache(1, model.prefix_len()));
  const SequenceChunk chunk{/*slot=*/0, /*start_pos=*/0, model.prefix_len(),
                            AttentionMask::kCausal};
  RETURN_IF_ERROR(model.Forward(prefix_TC, {chunk}, cache).status());
  return CatchTorchStatus("reading the prefix", [&] {
    ReadSlotPrefix(cache, 0, model.prefix_len());
  });
}

// md::EncodeImage's work step by step, each step timed.
absl::StatusOr<StageTimes> TimeStages(const Model& model,
                                      const ImageCrops& image) {
  StageTimes t;
  Stopwatch watch;
  ASSIGN_OR_RETURN(at::Tensor features_BPE, CatchTorch("vision encoder", [&] {
                     at::NoGradGuard no_grad;
                     return RunEncoder(model, image);
                   }));
  t.encoder_ms = watch.ElapsedMs();
  ASSIGN_OR_RETURN(at::Tensor image_PC, CatchTorch("projection", [&] {
                     at::NoGradGuard no_grad;
                     return RunProjection(model, image, features_BPE);
                   }));
  t.projection_ms = watch.ElapsedMs() - t.encoder_ms;
  RETURN_IF_ERROR(RunPrefill(model, image_PC));
  t.total_ms = watch.ElapsedMs();
  t.prefill_ms = t.total_ms - t.encoder_ms - t.projection_ms;
  return t;
}

nlohmann::json StageJson(const StageTimes& t) {
  return {{"encoder_ms", t.encoder_ms},
          {"projection_ms", t.projection_ms},
          {"prefill_ms", t.prefill_ms},
          {"total_ms", t.total_ms}};
}

// ---- Output ----

nlohmann::json HeaderJson(const ImagePrefixOptions& opts,
                          const MoondreamConfig& config, double build_s) {
  const TextConfig& t = config.text;
  const VisionConfig& v = config.vision;
  return {
      {"config", opts.config_name},
      {"dtype", opts.dtype_name},
      {"threads", at::get_num_threads()},
      {"threading_env", ThreadingEnvJson()},
      {"weights", "random"},
      {"build_s", build_s},
      {"tiling", {kOneTile.rows, kOneTile.cols}},
      {"n_crops", 1 + kOneTile.n_tiles()},
      {"prefix_len", config.prefix_len()},
      {"text",
       {{"dim", t.dim}, {"n_layers", t.n_layers}, {"n_heads", t.n_heads}}},
      {"vision",
       {{"enc_dim", v.enc_dim},
        {"enc_n_layers", v.enc_n_layers},
        {"enc_ff_dim", v.enc_ff_dim},
        {"enc_n_heads", v.enc_n_heads},
        {"proj_inner_dim", v.proj_inner_dim},
        {"proj_out_dim", v.proj_out_dim}}},
  };
}

void PrintLine(const nlohmann::json& j) {
  std::printf("%s\n", j.dump().c_str());
  std::fflush(stdout);
}

// --stdin: one JSON line per command until EOF.
absl::Status RunDriven(const Model& model, const ImageCrops& image) {
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line == "encode") {
      ASSIGN_OR_RETURN(double ms, TimeEncode(model, image));
      PrintLine({{"encode_ms", ms}});
    } else if (line == "stages") {
      ASSIGN_OR_RETURN(StageTimes t, TimeStages(model, image));
      PrintLine(StageJson(t));
    } else if (line == "quit") {
      break;
    } else {
      PrintLine({{"error", absl::StrCat("unknown command '", line, "'")}});
    }
  }
  return absl::OkStatus();
}

absl::Status RunReps(const Model& model, const ImageCrops& image,
                     const ImagePrefixOptions& opts, nlohmann::json out) {
  Timing encode;
  std::vector<nlohmann::json> stages;
  for (int rep = 0; rep < opts.n_reps; ++rep) {
    ASSIGN_OR_RETURN(double ms, TimeEncode(model, image));
    encode.samples_ms.push_back(ms);
    if (opts.stages) {
      ASSIGN_OR_RETURN(StageTimes t, TimeStages(model, image));
      stages.push_back(StageJson(t));
    }
  }
  out["encode_ms"] = encode.median_ms();
  out["encode_samples_ms"] = encode.samples_ms;
  if (opts.stages) out["stages"] = stages;
  out["load_average"] = LoadAverage();
  PrintLine(out);
  return absl::OkStatus();
}

}  // namespace

absl::Status RunImagePrefixBench(const std::vector<std::string>& args) {
  bool help = false;
  ASSIGN_OR_RETURN(ImagePrefixOptions opts, ParseOptions(args, &help));
  if (help) return absl::OkStatus();
  ASSIGN_OR_RETURN(MoondreamConfig config, PresetConfig(opts.config_name));
  ASSIGN_OR_RETURN(at::ScalarType dtype, ParseDType(opts.dtype_name));
  SetComputeThreads(opts.n_threads);

  Stopwatch build;
  ASSIGN_OR_RETURN(Weights weights,
                   RandomWeights(config, {dtype, at::kCPU}, kWeightSeed));
  ASSIGN_OR_RETURN(
      std::unique_ptr<Model> model,
      Model::Create(config, std::move(weights), {dtype, at::kCPU}));
  ASSIGN_OR_RETURN(ImageCrops image, RandomImageCrops(config.vision, kImageSide,
                                                      kImageSide, kCropSeed));
  if (image.tiling.rows != kOneTile.rows ||
      image.tiling.cols != kOneTile.cols) {
    return absl::InternalError("a 378x378 image should have a 1x1 tiling");
  }
  const double build_s = build.ElapsedMs() / 1000;

  ASSIGN_OR_RETURN(double warmup_ms, TimeEncode(*model, image));
  nlohmann::json header = HeaderJson(opts, config, build_s);
  header["warmup_ms"] = warmup_ms;
  if (opts.driven) {
    header["ready"] = true;
    PrintLine(header);
    return RunDriven(*model, image);
  }
  return RunReps(*model, image, opts, std::move(header));
}

}  // namespace md::bench
