#include "tools/bench/model_bench.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/types/span.h"
#include "base/status_macros.h"
#include "model/config/config.h"
#include "model/image/tiling.h"
#include "model/io/tensor_io.h"
#include "model/io/weights.h"
#include "model/net/kv_cache.h"
#include "model/net/moondream.h"
#include "model/net/text.h"
#include "tools/bench/environment.h"
#include "tools/bench/flags.h"
#include "tools/bench/model_bench_report.h"
#include "tools/bench/op_profile.h"
#include "tools/bench/stats.h"
#include "tools/bench/workload.h"

namespace md::bench {
namespace {

constexpr uint64_t kCropSeed = 7;

// The two image sizes timed: the smallest (global crop + 1 tile) and the
// largest the preprocessing picks (global + 12 tiles).
constexpr Tiling kVisionTilings[] = {{1, 1}, {3, 4}};

// Rows the linear benchmark times: decode at batch 1 and 8, batches of 32,
// prefill-sized chunks.
const std::vector<int64_t> kLinearRowCounts = {1, 8, 32, 128, 256};

// ---- Options ----

absl::StatusOr<std::vector<std::string>> ConfigNames(const std::string& flag) {
  if (flag == "both") {
    return std::vector<std::string>{"moondream-0.5b", "moondream2"};
  }
  RETURN_IF_ERROR(PresetConfig(flag).status());
  return std::vector<std::string>{flag};
}

absl::StatusOr<std::vector<at::ScalarType>> DTypes(const std::string& flag) {
  if (flag == "both") {
    return std::vector<at::ScalarType>{at::kFloat, at::kBFloat16};
  }
  ASSIGN_OR_RETURN(at::ScalarType dtype, ParseDType(flag));
  return std::vector<at::ScalarType>{dtype};
}

absl::StatusOr<std::vector<int>> BatchSizes(const std::string& flag) {
  std::vector<int> sizes;
  for (absl::string_view part : absl::StrSplit(flag, ',', absl::SkipEmpty())) {
    int b = 0;
    if (!absl::SimpleAtoi(part, &b) || b < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("--batches wants positive integers, got '", flag, "'"));
    }
    sizes.push_back(b);
  }
  if (sizes.empty()) return absl::InvalidArgumentError("--batches is empty");
  return sizes;
}

absl::StatusOr<Parts> ParseParts(const std::string& flag) {
  Parts parts{false, false, false, false, false};
  for (absl::string_view part : absl::StrSplit(flag, ',', absl::SkipEmpty())) {
    if (part == "vision") {
      parts.vision = true;
    } else if (part == "prefill") {
      parts.prefill = true;
    } else if (part == "decode") {
      parts.decode = true;
    } else if (part == "linear") {
      parts.linear = true;
    } else if (part == "kv") {
      parts.kv = true;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "--parts wants vision, prefill, decode, linear and/or kv, got '",
          part, "'"));
    }
  }
  if (!parts.vision && !parts.prefill && !parts.decode && !parts.linear &&
      !parts.kv) {
    return absl::InvalidArgumentError("--parts is empty");
  }
  return parts;
}

// ---- Measurements ----

absl::StatusOr<VisionResult> BenchVision(const Model& model, Tiling tiling,
                                         int n_reps, bool profile,
                                         at::Tensor* embedding_PC) {
  VisionResult result;
  result.tiling = tiling;
  result.n_crops = 1 + tiling.n_tiles();
  ASSIGN_OR_RETURN(ImageCrops image,
                   RandomCrops(model.config().vision, tiling, kCropSeed));
  for (int rep = 0; rep <= n_reps; ++rep) {  // rep 0 warms up
    Stopwatch watch;
    ASSIGN_OR_RETURN(std::vector<at::Tensor> embeddings,
                     model.EmbedImages(absl::MakeConstSpan(&image, 1)));
    const double ms = watch.ElapsedMs();
    if (rep > 0) result.time.samples_ms.push_back(ms);
    if (embedding_PC != nullptr) *embedding_PC = embeddings[0];
  }
  if (profile) {
    OpProfile ops;
    Stopwatch watch;
    RETURN_IF_ERROR(model.EmbedImages(absl::MakeConstSpan(&image, 1)).status());
    const double ms = watch.ElapsedMs();
    result.profile = OpBreakdown{ms, ops.Finish()};
  }
  return result;
}

// The end times (ms since the start) of a prefill's three phases.
struct PrefillTimes {
  double image_ms = 0;
  double prompt_ms = 0;
  double total_ms = 0;
};

absl::StatusOr<PrefillTimes> PrefillOnce(const Model& model,
                                         const at::Tensor& prefix_TC,
                                         const at::Tensor& prompt_TC,
                                         KvCache& cache) {
  const int n_image = static_cast<int>(prefix_TC.size(0));
  const int n_prompt = static_cast<int>(prompt_TC.size(0));
  const SequenceChunk image_chunk{/*slot=*/0, /*start_pos=*/0, n_image,
                                  AttentionMask::kCausal};
  const SequenceChunk prompt_chunk{/*slot=*/0, n_image, n_prompt,
                                   AttentionMask::kCausal};
  PrefillTimes times;
  Stopwatch watch;
  RETURN_IF_ERROR(model.Forward(prefix_TC, {image_chunk}, cache).status());
  times.image_ms = watch.ElapsedMs();
  ASSIGN_OR_RETURN(at::Tensor hidden_TC,
                   model.Forward(prompt_TC, {prompt_chunk}, cache));
  times.prompt_ms = watch.ElapsedMs();
  ASSIGN_OR_RETURN(at::Tensor logits_1V,
                   model.Logits(hidden_TC.narrow(0, n_prompt - 1, 1)));
  RETURN_IF_ERROR(
      CatchTorchStatus("argmax", [&] { logits_1V.argmax(-1).item(); }));
  times.total_ms = watch.ElapsedMs();
  return times;
}

// Prefills the image prefix and a prompt into slot 0 of `cache` (which holds
// them afterwards); with `profile`, once more under an op profile.
absl::StatusOr<PrefillResult> BenchPrefill(const Model& model,
                                           const at::Tensor& image_PC,
                                           int n_reps, bool profile,
                                           KvCache& cache) {
  PrefillResult result;
  result.n_image_tokens = model.prefix_len();
  result.n_prompt_tokens = kPromptTokens;
  ASSIGN_OR_RETURN(at::Tensor prefix_TC, model.PrefixEmbeddings(image_PC));
  ASSIGN_OR_RETURN(at::Tensor prompt_TC, model.EmbedTokens(kPromptIds));
  for (int rep = 0; rep <= n_reps; ++rep) {  // rep 0 warms up
    ASSIGN_OR_RETURN(PrefillTimes t,
                     PrefillOnce(model, prefix_TC, prompt_TC, cache));
    if (rep == 0) continue;
    result.image.samples_ms.push_back(t.image_ms);
    result.prompt.samples_ms.push_back(t.prompt_ms - t.image_ms);
    result.lm_head.samples_ms.push_back(t.total_ms - t.prompt_ms);
    result.total.samples_ms.push_back(t.total_ms);
  }
  if (profile) {
    OpProfile ops;
    ASSIGN_OR_RETURN(PrefillTimes t,
                     PrefillOnce(model, prefix_TC, prompt_TC, cache));
    result.profile = OpBreakdown{t.total_ms, ops.Finish()};
  }
  return result;
}

// One decode step for every slot of `cache`: feeds `tokens` at position
// `pos`, runs the LM head on all rows and replaces `tokens` by the greedy
// picks. In a shared-prefix cache every slot reads the image prefix
// `prefix_L2HQD` in place, as the engine's streams on one image do.
absl::Status DecodeStep(const Model& model, int pos, std::vector<int>& tokens,
                        KvCache& cache, const at::Tensor& prefix_L2HQD) {
  const int batch = static_cast<int>(tokens.size());
  std::vector<SequenceChunk> chunks(batch);
  for (int slot = 0; slot < batch; ++slot) {
    chunks[slot] = {slot, pos, /*n_tokens=*/1, AttentionMask::kCausal,
                    cache.shares_prefixes() ? prefix_L2HQD : at::Tensor()};
  }
  ASSIGN_OR_RETURN(at::Tensor embeds_BC, model.EmbedTokens(tokens));
  ASSIGN_OR_RETURN(at::Tensor hidden_BC,
                   model.Forward(embeds_BC, chunks, cache));
  ASSIGN_OR_RETURN(at::Tensor logits_BV, model.Logits(hidden_BC));
  return CatchTorchStatus("argmax", [&] {
    at::Tensor next_B = logits_BV.argmax(-1).to(at::kLong).contiguous();
    const int64_t* next = next_B.data_ptr<int64_t>();
    for (int slot = 0; slot < batch; ++slot) {
      tokens[slot] = static_cast<int>(next[slot]);
    }
  });
}

// `batch` slots each holding `prefix_kv_L2HPD` (context positions), stepped
// together. Every repetition restarts at the same position, so the cache
// holds only context + n_steps positions. With `shared_prefix` the cache is
// the engine's layout: the slots hold the positions after the image prefix,
// which all of them read from one tensor. With `profile`, n_steps more
// steps run under an op profile (reported per step).
absl::StatusOr<DecodeResult> BenchDecode(const Model& model,
                                         const at::Tensor& prefix_kv_L2HPD,
                                         int batch, int n_steps, int n_reps,
                                         bool profile, bool shared_prefix) {
  DecodeResult result;
  result.batch = batch;
  result.context = static_cast<int>(prefix_kv_L2HPD.size(3));
  result.n_steps = n_steps;
  ASSIGN_OR_RETURN(
      KvCache cache,
      model.NewKvCache(batch, result.context + n_steps, shared_prefix));
  result.kv_bytes = cache.bytes();
  const int q = model.prefix_len();
  at::Tensor image_L2HQD;
  RETURN_IF_ERROR(CatchTorchStatus("placing decode contexts", [&] {
    image_L2HQD = prefix_kv_L2HPD.narrow(3, 0, q).contiguous();
    const at::Tensor prompt_L2HND =
        prefix_kv_L2HPD.narrow(3, q, result.context - q);
    for (int slot = 0; slot < batch; ++slot) {
      if (shared_prefix) {
        WriteSlotPositions(cache, slot, q, prompt_L2HND);
      } else {
        WriteSlotPrefix(cache, slot, prefix_kv_L2HPD);
      }
    }
  }));

  std::vector<int> tokens(batch, kPromptIds[kPromptTokens - 1]);
  for (int rep = 0; rep <= n_reps; ++rep) {  // rep 0 warms up
    Stopwatch watch;
    for (int step = 0; step < n_steps; ++step) {
      RETURN_IF_ERROR(
          DecodeStep(model, result.context + step, tokens, cache, image_L2HQD));
    }
    const double ms = watch.ElapsedMs();
    if (rep > 0) result.step.samples_ms.push_back(ms / n_steps);
  }
  if (profile) {
    OpProfile ops;
    Stopwatch watch;
    for (int step = 0; step < n_steps; ++step) {
      RETURN_IF_ERROR(
          DecodeStep(model, result.context + step, tokens, cache, image_L2HQD));
    }
    const double ms = watch.ElapsedMs();
    std::vector<OpTime> per_step = ops.Finish();
    for (OpTime& op : per_step) {
      op.ms /= n_steps;
      op.calls /= n_steps;
    }
    result.profile = OpBreakdown{ms / n_steps, std::move(per_step)};
  }
  return result;
}

// ---- One config × dtype ----

// Image embeddings for the prefill when the vision encoder is not timed.
absl::StatusOr<at::Tensor> RandomImageEmbedding(const Model& model) {
  return CatchTorch("making a random image embedding", [&] {
    at::manual_seed(kCropSeed);
    return at::randn(
               {model.config().vision.n_patches(), model.config().text.dim})
        .to(model.options().dtype);
  });
}

absl::StatusOr<CaseResult> RunCase(const std::string& config_name,
                                   at::ScalarType dtype,
                                   const ModelBenchOptions& opts) {
  CaseResult result;
  result.config = config_name;
  result.dtype = std::string(DTypeLabel(dtype));
  result.load_start = LoadAverage();
  ASSIGN_OR_RETURN(MoondreamConfig config, PresetConfig(config_name));

  Stopwatch build;
  ASSIGN_OR_RETURN(Weights weights,
                   RandomWeights(config, {dtype, at::kCPU}, kWeightSeed));
  result.weight_bytes = WeightBytes(config, weights);
  ASSIGN_OR_RETURN(
      std::unique_ptr<Model> model,
      Model::Create(config, std::move(weights), {dtype, at::kCPU}));
  result.build_s = build.ElapsedMs() / 1000;
  std::printf(
      "\n== %s %s: weights %.0f MiB (random, built in %.1f s), load average "
      "%.2f ==\n",
      result.config.c_str(), result.dtype.c_str(), Mb(result.weight_bytes),
      result.build_s, result.load_start);

  at::Tensor image_PC;
  if (opts.parts.vision) {
    for (Tiling tiling : kVisionTilings) {
      // Profiling the smallest image is enough to see where the time goes.
      const bool profile = opts.profile && tiling == kVisionTilings[0];
      ASSIGN_OR_RETURN(VisionResult v, BenchVision(*model, tiling, opts.n_reps,
                                                   profile, &image_PC));
      PrintVision(v);
      result.vision.push_back(std::move(v));
    }
  } else {
    ASSIGN_OR_RETURN(image_PC, RandomImageEmbedding(*model));
  }

  // Decode starts from the prefilled context, so the prefill always runs
  // (untimed, once, when it is not asked for).
  at::Tensor prefix_kv_L2HPD;
  {
    ASSIGN_OR_RETURN(KvCache cache,
                     model->NewKvCache(1, model->prefix_len() + kPromptTokens));
    ASSIGN_OR_RETURN(
        PrefillResult p,
        BenchPrefill(*model, image_PC, opts.parts.prefill ? opts.n_reps : 0,
                     opts.parts.prefill && opts.profile, cache));
    ASSIGN_OR_RETURN(prefix_kv_L2HPD,
                     CatchTorch("reading the prefilled context", [&] {
                       return ReadSlotPrefix(cache, 0, cache.n_positions);
                     }));
    if (opts.parts.prefill) {
      PrintPrefill(p);
      result.prefill = std::move(p);
    }
  }

  if (opts.parts.decode) {
    result.decode_weight_bytes = DecodeWeightBytes(model->weights());
    ASSIGN_OR_RETURN(result.bandwidth,
                     MeasureReadBandwidth(result.decode_weight_bytes,
                                          std::max(opts.n_reps, 5)));
    for (int batch : opts.batch_sizes) {
      ASSIGN_OR_RETURN(
          DecodeResult d,
          BenchDecode(*model, prefix_kv_L2HPD, batch, opts.n_decode_steps,
                      opts.n_reps, opts.profile, opts.shared_prefix));
      PrintDecode(d);
      result.decode.push_back(std::move(d));
    }
    PrintDecodeFloor(result);
  }
  if (opts.parts.linear && dtype == at::kBFloat16) {
    ASSIGN_OR_RETURN(result.linears, BenchLinears(config.text, kLinearRowCounts,
                                                  std::max(opts.n_reps, 5)));
    PrintLinears(result.linears);
  }
  if (opts.parts.kv) {
    ASSIGN_OR_RETURN(result.kv, BenchKvSlots(*model, std::max(opts.n_reps, 5)));
    PrintKvSlots(*result.kv);
  }
  result.load_end = LoadAverage();
  return result;
}

}  // namespace

absl::Status RunModelBench(const std::vector<std::string>& args) {
  std::string config_flag = "moondream-0.5b";
  std::string dtype_flag = "fp32";
  std::string batches_flag = "1,8,32";
  std::string parts_flag = "vision,prefill,decode,linear,kv";
  std::string json_path;
  int n_threads = static_cast<int>(std::thread::hardware_concurrency());
  int n_reps = 3;
  int n_steps = 10;
  bool profile = false;
  bool shared_prefix = false;
  FlagParser flags(
      "model",
      "Times the model's building blocks on RANDOM weights of the real "
      "shapes:\n"
      "vision encode (EmbedImages), prefill of the image prefix and a prompt,\n"
      "and batched greedy decode steps. Reports the median over --reps after\n"
      "one warm-up.");
  flags.AddString("config", &config_flag, "moondream-0.5b | moondream2 | both");
  flags.AddString("dtype", &dtype_flag, "fp32 | bf16 | both");
  flags.AddInt("threads", &n_threads, "intra-op compute threads");
  flags.AddInt("reps", &n_reps, "measured repetitions (after one warm-up)");
  flags.AddInt("steps", &n_steps, "decode steps per repetition");
  flags.AddString("batches", &batches_flag,
                  "decode batch sizes, comma-separated");
  flags.AddString("parts", &parts_flag,
                  "what to time: vision, prefill, decode, linear (bf16: the "
                  "packed linear vs at::linear), kv (slot sizes and the "
                  "admission copy, own vs shared image prefix), "
                  "comma-separated");
  flags.AddBool("profile", &profile,
                "run each part once more (vision: smallest image; decode: "
                "one step) and time every top-level ATen op");
  flags.AddBool("shared-prefix", &shared_prefix,
                "decode in the engine's cache layout: the slots hold the "
                "positions after the image prefix, which every sequence reads "
                "from one shared tensor (the engine's streams on one image)");
  flags.AddString("json", &json_path, "also write the numbers to this file");
  RETURN_IF_ERROR(flags.Parse(args));
  if (flags.help_requested()) {
    std::printf("%s", flags.Usage().c_str());
    return absl::OkStatus();
  }

  ModelBenchOptions opts;
  ASSIGN_OR_RETURN(opts.config_names, ConfigNames(config_flag));
  ASSIGN_OR_RETURN(opts.dtypes, DTypes(dtype_flag));
  ASSIGN_OR_RETURN(opts.batch_sizes, BatchSizes(batches_flag));
  ASSIGN_OR_RETURN(opts.parts, ParseParts(parts_flag));
  opts.n_threads = n_threads;
  opts.n_reps = n_reps;
  opts.n_decode_steps = n_steps;
  opts.profile = profile;
  opts.shared_prefix = shared_prefix;
  opts.json_path = json_path;
  if (opts.n_threads < 1 || opts.n_reps < 1 || opts.n_decode_steps < 1) {
    return absl::InvalidArgumentError(
        "--threads, --reps and --steps must be >= 1");
  }
  if (!opts.json_path.empty() && !std::ofstream(opts.json_path)) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot write --json=", opts.json_path));
  }

  SetComputeThreads(opts.n_threads);
  std::printf(
      "moondream-bench model: RANDOM weights -- the numbers measure speed "
      "only; the model's outputs are meaningless.\n"
      "threads: %d (hardware concurrency %u); median of %d reps after 1 "
      "warm-up; decode: %d steps per rep\n",
      at::get_num_threads(), std::thread::hardware_concurrency(), opts.n_reps,
      opts.n_decode_steps);
  std::printf("threading env: %s\n", ThreadingEnvText().c_str());
  if (const double load = LoadAverage(); load > 0.5) {
    std::printf(
        "warning: load average %.2f before starting: other processes compete "
        "for the cores, so timings (multi-threaded ones most) will be "
        "noisy\n",
        load);
  }
  std::fflush(stdout);

  std::vector<CaseResult> cases;
  for (const std::string& config_name : opts.config_names) {
    for (at::ScalarType dtype : opts.dtypes) {
      // The model and its caches live inside RunCase, so each case frees
      // its memory before the next one allocates.
      ASSIGN_OR_RETURN(CaseResult c, RunCase(config_name, dtype, opts));
      cases.push_back(std::move(c));
      if (!opts.json_path.empty()) {
        RETURN_IF_ERROR(WriteJson(opts.json_path, opts, cases));
      }
    }
  }
  PrintSummary(opts, cases);
  if (!opts.json_path.empty())
    std::printf("wrote %s\n", opts.json_path.c_str());
  return absl::OkStatus();
}

}  // namespace md::bench
