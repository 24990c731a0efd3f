#include "tools/bench/engine_bench.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
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
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/status_macros.h"
#include "model/config/config.h"
#include "model/io/tensor_io.h"
#include "model/io/weights.h"
#include "model/net/moondream.h"
#include "scheduler/engine.h"
#include "scheduler/request.h"
#include "tools/bench/compute_ceiling.h"
#include "tools/bench/engine_latency.h"
#include "tools/bench/engine_requests.h"
#include "tools/bench/environment.h"
#include "tools/bench/flags.h"
#include "tools/bench/stats.h"
#include "tools/bench/workload.h"

namespace md::bench {
namespace {

using scheduler::CollectingSink;
using scheduler::Engine;
using scheduler::EngineImage;
using scheduler::EngineOptions;
using scheduler::Request;
using scheduler::StepReport;

struct EngineBenchOptions {
  std::string config_name = "moondream-0.5b";
  at::ScalarType dtype = at::kBFloat16;
  int n_threads = 0;
  std::vector<int> streams;
  int n_tokens = 0;
  int n_serial = 0;
  int n_serial_reps = 0;
  int n_ttft_reps = 0;
  int n_itl_streams = 0;
  int n_itl_images = 0;
  int n_itl_tokens = 0;
  int itl_interval_ms = 0;
  std::string json_path;
};

// Every step's report, for the scheduler's share of each step.
class StepLog {
 public:
  void Add(const StepReport& report) {
    absl::MutexLock lock(&mu_);
    reports_.push_back(report);
  }
  std::vector<StepReport> Take() {
    absl::MutexLock lock(&mu_);
    return std::move(reports_);
  }

 private:
  absl::Mutex mu_;
  std::vector<StepReport> reports_ ABSL_GUARDED_BY(mu_);
};

struct Throughput {
  int streams = 0;
  int64_t tokens = 0;
  double seconds = 0;
  // Every stream's tokens equal the first serial request's (same request,
  // greedy): batching changed nothing.
  bool identical_to_serial = true;
  std::vector<int> first_tokens;
  double tokens_per_s() const { return seconds > 0 ? tokens / seconds : 0; }
};

// The serial baseline repeated: one Throughput per repetition. A single
// pass of a few requests moves by several percent with whatever else the
// machine does, and every speedup is divided by it.
struct SerialBaseline {
  std::vector<Throughput> reps;
  bool identical = true;  // every request's tokens equal the first one's

  std::vector<double> TokensPerS() const {
    std::vector<double> v;
    for (const Throughput& t : reps) v.push_back(t.tokens_per_s());
    return v;
  }
  double median_tokens_per_s() const { return Median(TokensPerS()); }
  double min_tokens_per_s() const {
    const std::vector<double> v = TokensPerS();
    return v.empty() ? 0 : *std::min_element(v.begin(), v.end());
  }
  double max_tokens_per_s() const {
    const std::vector<double> v = TokensPerS();
    return v.empty() ? 0 : *std::max_element(v.begin(), v.end());
  }
  // (max − min) / median of the repetitions' tokens/s.
  double spread() const {
    const double m = median_tokens_per_s();
    return m > 0 ? (max_tokens_per_s() - min_tokens_per_s()) / m : 0;
  }
  const std::vector<int>& first_tokens() const {
    return reps.front().first_tokens;
  }
};

// The compute ceiling of this run's requests (bf16 only: the peak measured
// is that of the packed linear's instruction).
std::optional<ComputeCeiling> MeasureCeiling(const Model& model,
                                             const EngineBenchOptions& opts,
                                             double serial_tokens_per_s) {
  if (opts.dtype != at::kBFloat16 || opts.n_tokens < 1) return std::nullopt;
  const PackedLinearIsa isa = PackedLinearBf16Isa();
  const std::optional<double> peak =
      MeasureBf16PeakGflops(at::get_num_threads(), /*n_reps=*/3, isa);
  if (!peak.has_value()) return std::nullopt;
  ComputeCeiling c;
  c.peak_gflops = *peak;
  c.instruction = isa == PackedLinearIsa::kAmxBf16 ? "tdpbf16ps" : "vdpbf16ps";
  c.gflop_per_token =
      RequestFlops(model.weights(), model.config().text, model.prefix_len(),
                   kPromptTokens, opts.n_tokens) /
      opts.n_tokens / 1e9;
  c.serial_tokens_per_s = serial_tokens_per_s;
  return c;
}

void PrintCeiling(const ComputeCeiling& c, double speedup_32,
                  const EngineBenchOptions& opts) {
  std::printf(
      "compute ceiling: %s peak %.0f GFLOP/s on %d threads; a request "
      "(%d prompt + %d tokens) costs %.2f GFLOP per generated token, so at "
      "most %.0f tokens/s, %.1fx serial",
      c.instruction, c.peak_gflops, at::get_num_threads(), kPromptTokens,
      opts.n_tokens, c.gflop_per_token, c.tokens_per_s(), c.speedup());
  if (speedup_32 > 0 && c.speedup() > 0) {
    std::printf("; 32 streams reach %.0f%% of it",
                100 * speedup_32 / c.speedup());
  }
  std::printf("\n");
}

// `n` requests one after another: the serial baseline.
absl::StatusOr<Throughput> MeasureSerial(Engine& engine, const Model& model,
                                         std::shared_ptr<const EngineImage> im,
                                         int n, int n_tokens) {
  Throughput t;
  t.streams = 1;
  const absl::Time start = absl::Now();
  for (int i = 0; i < n; ++i) {
    ASSIGN_OR_RETURN(auto results,
                     RunTogether(engine, {QueryRequest(model, im, n_tokens)}));
    t.tokens += TokensOf(results);
    if (i == 0) t.first_tokens = results[0].tokens;
    t.identical_to_serial &= results[0].tokens == t.first_tokens;
  }
  t.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  return t;
}

absl::StatusOr<Throughput> MeasureConcurrent(
    Engine& engine, const Model& model,
    std::shared_ptr<const EngineImage> image, int n_streams, int n_tokens,
    const std::vector<int>& serial_tokens) {
  std::vector<QuerySpec> requests(n_streams,
                                  QueryRequest(model, image, n_tokens));
  const absl::Time start = absl::Now();
  ASSIGN_OR_RETURN(auto results, RunTogether(engine, requests));
  Throughput t;
  t.streams = n_streams;
  t.tokens = TokensOf(results);
  t.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  for (const auto& r : results) {
    t.identical_to_serial &= r.tokens == serial_tokens;
  }
  return t;
}

absl::StatusOr<std::vector<int>> ParseStreams(const std::string& flag) {
  std::vector<int> streams;
  for (absl::string_view part : absl::StrSplit(flag, ',')) {
    int n = 0;
    if (!absl::SimpleAtoi(part, &n) || n < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("--streams: '", part, "' is not a positive integer"));
    }
    streams.push_back(n);
  }
  return streams;
}

absl::Status Run(const EngineBenchOptions& opts) {
  ASSIGN_OR_RETURN(MoondreamConfig config, PresetConfig(opts.config_name));
  const double load_start = LoadAverage();
  Stopwatch build;
  ASSIGN_OR_RETURN(Weights weights,
                   RandomWeights(config, {opts.dtype, at::kCPU}, kWeightSeed));
  const int64_t weight_bytes = WeightBytes(config, weights);
  ASSIGN_OR_RETURN(
      std::unique_ptr<Model> model,
      Model::Create(config, std::move(weights), {opts.dtype, at::kCPU}));
  std::printf("%s %s: weights %.0f MiB (random, built in %.1f s)\n",
              opts.config_name.c_str(), DTypeLabel(opts.dtype).data(),
              Mb(weight_bytes), build.ElapsedMs() / 1000);

  const int max_streams =
      std::max(opts.n_itl_streams + 1,
               *std::max_element(opts.streams.begin(), opts.streams.end()));
  EngineOptions engine_options;
  engine_options.n_slots = max_streams;
  engine_options.positions_per_slot =
      std::min(config.text.max_context,
               model->prefix_len() + kPromptTokens +
                   std::max(opts.n_tokens, opts.n_itl_tokens) + 1);
  engine_options.max_queue = 4 * max_streams;
  engine_options.max_admit_per_step = max_streams;
  engine_options.model_id = "bench";
  StepLog steps;
  ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine,
                   Engine::Create(*model, engine_options,
                                  [&steps](const StepReport& report) {
                                    steps.Add(report);
                                  }));

  // Warm up (and fill the cache with the image every stream uses).
  ASSIGN_OR_RETURN(auto image, BenchImage(*model, 1));
  RETURN_IF_ERROR(RunTogether(*engine, {QueryRequest(*model, image, 2),
                                        QueryRequest(*model, image, 2)})
                      .status());
  steps.Take();

  std::printf(
      "serial baseline: %d repetitions of %d requests of %d tokens, one at a "
      "time\n",
      opts.n_serial_reps, opts.n_serial, opts.n_tokens);
  std::fflush(stdout);
  SerialBaseline serial;
  for (int rep = 0; rep < opts.n_serial_reps; ++rep) {
    ASSIGN_OR_RETURN(Throughput t, MeasureSerial(*engine, *model, image,
                                                 opts.n_serial, opts.n_tokens));
    serial.identical &= t.identical_to_serial;
    if (!serial.reps.empty()) {
      serial.identical &= t.first_tokens == serial.first_tokens();
    }
    serial.reps.push_back(std::move(t));
  }
  std::printf(
      "  median %.1f tokens/s over %d repetitions (min %.1f, max %.1f, "
      "spread %.1f%%), outputs all equal: %s\n",
      serial.median_tokens_per_s(), opts.n_serial_reps,
      serial.min_tokens_per_s(), serial.max_tokens_per_s(),
      100 * serial.spread(), serial.identical ? "yes" : "NO");
  const std::optional<ComputeCeiling> ceiling =
      MeasureCeiling(*model, opts, serial.median_tokens_per_s());

  nlohmann::json concurrency = nlohmann::json::array();
  double speedup_32 = 0;
  std::pair<double, double> speedup_32_range{0, 0};  // against max, min serial
  std::vector<double> scheduler_ms, step_ms, scheduler_share;
  std::printf("%8s %12s %10s %8s %8s %14s %10s\n", "streams", "tokens/s",
              "speedup", "wall s", "batch", "decode step ms", "= serial");
  for (int n : opts.streams) {
    ASSIGN_OR_RETURN(Throughput t,
                     MeasureConcurrent(*engine, *model, image, n, opts.n_tokens,
                                       serial.first_tokens()));
    std::vector<double> batch, decode_step_ms;
    for (const StepReport& s : steps.Take()) {
      batch.push_back(s.batch_size);
      if (s.prefill_tokens == 0 && s.images_encoded == 0) {
        decode_step_ms.push_back(1000 * s.step_seconds);
      }
      const double outside_ms = 1000 * (s.step_seconds - s.model_seconds);
      scheduler_ms.push_back(outside_ms);
      step_ms.push_back(1000 * s.step_seconds);
      if (s.step_seconds > 0) {
        scheduler_share.push_back(outside_ms / (1000 * s.step_seconds));
      }
    }
    const double speedup = t.tokens_per_s() / serial.median_tokens_per_s();
    if (n == 32) {
      speedup_32 = speedup;
      speedup_32_range = {t.tokens_per_s() / serial.max_tokens_per_s(),
                          t.tokens_per_s() / serial.min_tokens_per_s()};
    }
    std::printf("%8d %12.1f %9.2fx %8.2f %8.0f %14.1f %10s\n", n,
                t.tokens_per_s(), speedup, t.seconds, Median(batch),
                Median(decode_step_ms), t.identical_to_serial ? "yes" : "NO");
    std::fflush(stdout);
    concurrency.push_back({{"streams", n},
                           {"tokens", t.tokens},
                           {"seconds", t.seconds},
                           {"tokens_per_s", t.tokens_per_s()},
                           {"speedup_vs_serial", speedup},
                           {"median_batch", Median(batch)},
                           {"median_decode_step_ms", Median(decode_step_ms)},
                           {"steps", batch.size()},
                           {"identical_to_serial", t.identical_to_serial}});
  }

  ASSIGN_OR_RETURN(Ttft ttft,
                   MeasureTtft(*engine, *model, opts.n_ttft_reps, 1000));
  const double miss = Median(ttft.miss_ms), hit = Median(ttft.hit_ms);
  std::printf("TTFT: cache miss %.0f ms, hit %.0f ms (%.1fx)\n", miss, hit,
              hit > 0 ? miss / hit : 0);
  steps.Take();

  ASSIGN_OR_RETURN(Itl itl,
                   MeasureItl(*engine, *model, image,
                              ItlPlan{opts.n_itl_streams, opts.n_itl_tokens,
                                      opts.n_itl_images, opts.itl_interval_ms},
                              2000));
  std::printf(
      "inter-token latency, %d streams: quiet p50 %.0f / p99 %.0f ms; while "
      "%d new images arrive p50 %.0f / p99 %.0f ms\n",
      opts.n_itl_streams, Percentile(itl.quiet_ms, 50),
      Percentile(itl.quiet_ms, 99), itl.images_arrived,
      Percentile(itl.arrivals_ms, 50), Percentile(itl.arrivals_ms, 99));
  steps.Take();
  std::printf(
      "scheduler time per step outside model compute: median %.2f ms, p99 "
      "%.2f ms (median %.2f%% of a step)\n",
      Median(scheduler_ms), Percentile(scheduler_ms, 99),
      100 * Median(scheduler_share));
  if (speedup_32 > 0) {
    std::printf(
        "speedup_32_vs_serial: %.2f (%.2f to %.2f over the serial "
        "repetitions)\n",
        speedup_32, speedup_32_range.first, speedup_32_range.second);
  }
  if (ceiling.has_value()) PrintCeiling(*ceiling, speedup_32, opts);

  if (opts.json_path.empty()) return absl::OkStatus();
  nlohmann::json report = {
      {"benchmark", "engine"},
      {"note", "RANDOM weights: speed only, outputs are meaningless"},
      {"config", opts.config_name},
      {"dtype", std::string(DTypeLabel(opts.dtype))},
      {"threads", at::get_num_threads()},
      {"hardware_concurrency", std::thread::hardware_concurrency()},
      {"threading_env", ThreadingEnvJson()},
      {"load_average_start", load_start},
      {"load_average_end", LoadAverage()},
      {"tokens_per_request", opts.n_tokens},
      {"prompt_tokens", kPromptTokens},
      {"engine",
       {{"slots", engine_options.n_slots},
        {"positions_per_slot", engine_options.positions_per_slot},
        {"prefill_token_budget", engine_options.prefill_token_budget},
        {"prefill_chunk_tokens", engine_options.prefill_chunk_tokens}}},
      {"serial",
       {{"requests_per_rep", opts.n_serial},
        {"reps", opts.n_serial_reps},
        {"tokens_per_s", serial.median_tokens_per_s()},
        {"statistic", "median over reps"},
        {"tokens_per_s_reps", serial.TokensPerS()},
        {"tokens_per_s_min", serial.min_tokens_per_s()},
        {"tokens_per_s_max", serial.max_tokens_per_s()},
        {"spread", serial.spread()},
        {"outputs_identical", serial.identical}}},
      {"concurrency", concurrency},
      {"speedup_32_vs_serial",
       speedup_32 > 0 ? nlohmann::json(speedup_32) : nlohmann::json(nullptr)},
      {"speedup_32_vs_serial_range",
       speedup_32 > 0
           ? nlohmann::json({speedup_32_range.first, speedup_32_range.second})
           : nlohmann::json(nullptr)},
      {"compute_ceiling",
       ceiling.has_value() ? ceiling->ToJson() : nlohmann::json(nullptr)},
      {"speedup_32_fraction_of_ceiling",
       ceiling.has_value() && speedup_32 > 0 && ceiling->speedup() > 0
           ? nlohmann::json(speedup_32 / ceiling->speedup())
           : nlohmann::json(nullptr)},
      {"ttft",
       {{"miss_ms", ttft.miss_ms},
        {"hit_ms", ttft.hit_ms},
        {"miss_median_ms", miss},
        {"hit_median_ms", hit},
        {"miss_over_hit", hit > 0 ? miss / hit : 0}}},
      {"inter_token_latency",
       {{"streams", opts.n_itl_streams},
        {"tokens_per_stream", opts.n_itl_tokens},
        {"image_interval_ms", opts.itl_interval_ms},
        {"quiet", LatencyJson(itl.quiet_ms)},
        {"while_images_arrive", LatencyJson(itl.arrivals_ms)},
        {"images_arrived_mid_stream", itl.images_arrived}}},
      {"scheduler_per_step",
       {{"median_ms", Median(scheduler_ms)},
        {"p99_ms", Percentile(scheduler_ms, 99)},
        {"median_share_of_step", Median(scheduler_share)},
        {"median_step_ms", Median(step_ms)},
        {"steps", scheduler_ms.size()}}},
  };
  std::ofstream(opts.json_path) << report.dump(2) << "\n";
  std::printf("wrote %s\n", opts.json_path.c_str());
  return absl::OkStatus();
}

}  // namespace

absl::Status RunEngineBench(const std::vector<std::string>& args) {
  EngineBenchOptions opts;
  std::string dtype_flag = "bf16";
  std::string streams_flag = "1,2,4,8,16,32,64";
  opts.n_threads = static_cast<int>(std::thread::hardware_concurrency());
  opts.n_tokens = 32;
  opts.n_serial = 4;
  opts.n_serial_reps = 5;
  opts.n_ttft_reps = 3;
  opts.n_itl_streams = 8;
  opts.n_itl_images = 3;
  opts.n_itl_tokens = 160;
  opts.itl_interval_ms = 1000;
  FlagParser flags(
      "engine",
      "Loads the continuous-batching engine with query streams on RANDOM\n"
      "weights: aggregate tokens/s at each concurrency against the same\n"
      "requests one at a time (serial), TTFT with an image cache miss and\n"
      "hit, inter-token latency while new images arrive, and the scheduler's\n"
      "time per step outside model compute. Every stream decodes exactly\n"
      "--tokens tokens (eos ignored) after a 20-token prompt on a cached "
      "image.");
  flags.AddString("config", &opts.config_name, "moondream-0.5b | moondream2");
  flags.AddString("dtype", &dtype_flag, "fp32 | bf16");
  flags.AddInt("threads", &opts.n_threads, "intra-op compute threads");
  flags.AddString("streams", &streams_flag,
                  "concurrent stream counts, comma-separated");
  flags.AddInt("tokens", &opts.n_tokens, "tokens per request");
  flags.AddInt("serial", &opts.n_serial,
               "requests per repetition of the one-at-a-time baseline");
  flags.AddInt("serial-reps", &opts.n_serial_reps,
               "repetitions of the baseline (speedups use their median)");
  flags.AddInt("ttft-reps", &opts.n_ttft_reps,
               "cache miss / hit pairs for time to first token");
  flags.AddInt("itl-streams", &opts.n_itl_streams,
               "streams decoding while new images arrive");
  flags.AddInt("itl-images", &opts.n_itl_images,
               "new images sent during those streams");
  flags.AddInt("itl-tokens", &opts.n_itl_tokens,
               "tokens per stream in the inter-token latency runs");
  flags.AddInt("itl-interval-ms", &opts.itl_interval_ms,
               "time between new images during those streams");
  flags.AddString("json", &opts.json_path, "write the report to this file");
  RETURN_IF_ERROR(flags.Parse(args));
  if (flags.help_requested()) {
    std::printf("%s", flags.Usage().c_str());
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(opts.dtype, ParseDType(dtype_flag));
  ASSIGN_OR_RETURN(opts.streams, ParseStreams(streams_flag));
  if (opts.n_threads < 1 || opts.n_tokens < 2 || opts.n_serial < 1 ||
      opts.n_serial_reps < 1 || opts.n_ttft_reps < 1 ||
      opts.n_itl_streams < 1 || opts.n_itl_images < 0 ||
      opts.n_itl_tokens < 2 || opts.itl_interval_ms < 0) {
    return absl::InvalidArgumentError(
        "--threads, --serial, --serial-reps, --ttft-reps and --itl-streams "
        "must "
        "be >= 1, "
        "--tokens and --itl-tokens >= 2, --itl-images and --itl-interval-ms "
        ">= 0");
  }
  if (!opts.json_path.empty() && !std::ofstream(opts.json_path)) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot write --json=", opts.json_path));
  }
  SetComputeThreads(opts.n_threads);
  std::printf(
      "moondream-bench engine: RANDOM weights -- speed only; outputs are "
      "meaningless.\nthreads: %d; %s\n",
      at::get_num_threads(), ThreadingEnvText().c_str());
  if (const double load = LoadAverage(); load > 0.5) {
    std::printf(
        "warning: load average %.2f before starting: timings will be "
        "noisy\n",
        load);
  }
  return Run(opts);
}

}  // namespace md::bench
