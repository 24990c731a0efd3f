// `moondream-bench feature-probe`: what a model's vision tower tells the
// decoder about each shape's box, as linear probes on held-out scenes
// (tools/train/feature_probe.h). A diagnostic for training, not a benchmark.
#include "tools/train/feature_probe.h"

#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "base/paths.h"
#include "base/status_macros.h"
#include "model/bundle.h"
#include "model/net/dtype_choice.h"
#include "tools/bench/flags.h"
#include "tools/bench/json_report.h"
#include "tools/bench/train.h"

namespace md::bench {
namespace {

constexpr char kDefaultModel[] = "models/scenes-demo";

struct ProbeFlags {
  std::string model_dir = kDefaultModel;
  std::string preset = "moondream2";
  std::string dtype_name = "fp32";
  int count = 600;
  int seed = 1;
  int n_threads = static_cast<int>(std::thread::hardware_concurrency());
  std::string json_path;
};

absl::StatusOr<ProbeFlags> ParseProbeFlags(const std::vector<std::string>& args,
                                           bool* help) {
  ProbeFlags f;
  FlagParser flags(
      "feature-probe",
      "Encodes fresh synthetic scenes at full size with a model's vision\n"
      "tower and fits linear probes (ridge, on even scenes; R² on odd ones)\n"
      "that read each shape's box (centre, width, height, log aspect, in the\n"
      "image's fractions) from: the cells the shape covers (the grid's own\n"
      "limit), each covered cell's prefix token, the mean of those tokens,\n"
      "and the mean of the global and local crops' features before the\n"
      "projection. Changes nothing; answers whether a box is in the features\n"
      "the decoder reads.");
  flags.AddString("model", &f.model_dir,
                  "model directory (default: the shipped demo model)");
  flags.AddString("preset", &f.preset,
                  "built-in config a config.json in the directory overrides");
  flags.AddString("dtype", &f.dtype_name, "fp32 (default) | bf16 | auto");
  flags.AddInt("threads", &f.n_threads, "intra-op compute threads");
  flags.AddInt("count", &f.count,
               "how many scenes (>= 8; half fit, half score)");
  flags.AddInt("seed", &f.seed, "the scene set's seed (>= 0)");
  flags.AddString("json", &f.json_path,
                  "also write the report as JSON to this file (- for stdout)");
  RETURN_IF_ERROR(flags.Parse(args));
  *help = flags.help_requested();
  if (*help) {
    std::printf("%s", flags.Usage().c_str());
    return f;
  }
  if (f.count < 8 || f.seed < 0 || f.n_threads < 1) {
    return absl::InvalidArgumentError(
        "--count must be >= 8, --threads >= 1 and --seed >= 0");
  }
  f.model_dir = ResolveModelFlag(f.model_dir, kDefaultModel);
  f.json_path = JsonReportPath(f.json_path);
  return f;
}

nlohmann::ordered_json FocusMassJson(
    const train::FeatureProbeReport::FocusMass& m) {
  return {{"shape", m.shape},
          {"other_answers", m.other_answers},
          {"answered", m.answered},
          {"other_shapes", m.other_shapes},
          {"image_rest", m.image_rest},
          {"bos", m.bos},
          {"text", m.text}};
}

nlohmann::ordered_json ProbeJson(const train::FeatureProbeReport& report,
                                 const ProbeFlags& f) {
  nlohmann::ordered_json readouts = nlohmann::ordered_json::array();
  for (const train::FeatureReadout& r : report.readouts) {
    nlohmann::ordered_json r2;
    for (int t = 0; t < train::kProbeTargets; ++t) {
      r2[train::kProbeTargetNames[t]] = r.r2[t];
    }
    readouts.push_back({{"readout", r.name}, {"rows", r.rows}, {"r2", r2}});
  }
  return {{"model", f.model_dir},
          {"scenes", report.scenes},
          {"seed", f.seed},
          {"shapes", report.shapes},
          {"shapes_without_cells", report.shapes_without_cells},
          {"shape_cells", report.shape_cells},
          {"x_row_focus", FocusMassJson(report.x_row_focus)},
          {"focus_rows", report.focus_rows},
          {"later_x_row_focus", FocusMassJson(report.later_x_row_focus)},
          {"later_focus_rows", report.later_focus_rows},
          {"readouts", std::move(readouts)}};
}

}  // namespace

absl::Status RunFeatureProbe(const std::vector<std::string>& args) {
  bool help = false;
  ASSIGN_OR_RETURN(ProbeFlags f, ParseProbeFlags(args, &help));
  if (help) return absl::OkStatus();
  ModelOptions model_options;
  ASSIGN_OR_RETURN(const DTypeChoice dtype,
                   ChooseDType(f.dtype_name, model_options.device));
  model_options.dtype = dtype.dtype;
  SetComputeThreads(f.n_threads);
  ASSIGN_OR_RETURN(ModelBundle bundle,
                   LoadModelBundle(f.model_dir, f.preset, model_options));
  std::fprintf(stderr, "%s\n", DescribeBundle(bundle).c_str());
  const auto start = std::chrono::steady_clock::now();
  ASSIGN_OR_RETURN(
      const train::FeatureProbeReport report,
      train::ProbeImageFeatures(*bundle.model, bundle.tokenizer.get(),
                                static_cast<uint64_t>(f.seed), f.count));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  std::printf("%s(seed %d, %.1f s)\n",
              train::FormatFeatureProbe(report).c_str(), f.seed, seconds);
  if (f.json_path.empty()) return absl::OkStatus();
  return WriteJsonReport(ProbeJson(report, f), f.json_path);
}

}  // namespace md::bench
