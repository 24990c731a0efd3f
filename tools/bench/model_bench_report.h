// What `moondream-bench model` measures, and how it prints and writes it.
#ifndef MOONDREAM_TOOLS_BENCH_MODEL_BENCH_REPORT_H_
#define MOONDREAM_TOOLS_BENCH_MODEL_BENCH_REPORT_H_

#include <ATen/core/ScalarType.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "model/image/tiling.h"
#include "tools/bench/model_bench_kv.h"
#include "tools/bench/model_bench_linear.h"
#include "tools/bench/op_profile.h"
#include "tools/bench/stats.h"

namespace md::bench {

// Which measurements to run.
struct Parts {
  bool vision = true;
  bool prefill = true;
  bool decode = true;
  bool linear = true;  // bf16 cases only
  bool kv = true;      // KV slot sizes in both layouts
};

struct ModelBenchOptions {
  std::vector<std::string> config_names;
  std::vector<at::ScalarType> dtypes;
  int n_threads = 0;
  int n_reps = 0;
  int n_decode_steps = 0;
  std::vector<int> batch_sizes;
  Parts parts;
  bool profile = false;
  bool shared_prefix = false;  // decode in the engine's shared-prefix cache
  std::string json_path;
};

// One run of a measured piece under an op profile.
struct OpBreakdown {
  double wall_ms = 0;
  std::vector<OpTime> ops;  // top-level ATen ops, most time first
};

struct VisionResult {
  Tiling tiling;
  int n_crops = 0;
  Timing time;
  std::optional<OpBreakdown> profile;  // one encode, with --profile
};

// One image-prefix chunk then one prompt chunk in the same slot, then the
// LM head on the prompt's last row.
struct PrefillResult {
  int n_image_tokens = 0;
  int n_prompt_tokens = 0;
  Timing image;
  Timing prompt;
  Timing lm_head;
  Timing total;
  std::optional<OpBreakdown> profile;  // the whole prefill, with --profile
};

// Each sample is one repetition's mean over its steps.
struct DecodeResult {
  int batch = 0;
  int context = 0;  // filled positions per slot before the first step
  int n_steps = 0;  // steps per repetition
  int64_t kv_bytes = 0;
  Timing step;
  std::optional<OpBreakdown> profile;  // per step, with --profile

  double tokens_per_s() const {
    const double ms = step.median_ms();
    return ms > 0 ? batch * 1000.0 / ms : 0;
  }
};

struct CaseResult {
  std::string config;
  std::string dtype;
  int64_t weight_bytes = 0;
  double build_s = 0;
  double load_start = -1;  // 1-minute load average before and after
  double load_end = -1;
  std::vector<VisionResult> vision;      // empty when not asked for
  std::optional<PrefillResult> prefill;  // likewise
  std::vector<DecodeResult> decode;
  // With decode: the bytes a step streams and how fast this machine reads
  // that many, which bounds a batch-1 step from below.
  int64_t decode_weight_bytes = 0;
  std::optional<ReadBandwidth> bandwidth;
  std::vector<LinearShape> linears;  // bf16 with --parts=linear
  std::optional<KvSlotsResult> kv;   // with --parts=kv

  // The batch-1 step time if every weight byte were read once at the
  // measured bandwidth, over the measured step time; 0 when unknown.
  double B1FloorMs() const;
  double B1FractionOfFloor() const;
};

void PrintRow(const std::string& what, double ms, const std::string& extra);
void PrintProfile(const std::string& what, const OpBreakdown& b);
void PrintVision(const VisionResult& v);
void PrintPrefill(const PrefillResult& p);
void PrintDecode(const DecodeResult& d);
void PrintDecodeFloor(const CaseResult& c);
void PrintSummary(const ModelBenchOptions& opts,
                  const std::vector<CaseResult>& cases);
absl::Status WriteJson(const std::string& path, const ModelBenchOptions& opts,
                       const std::vector<CaseResult>& cases);

}  // namespace md::bench

#endif  // MOONDREAM_TOOLS_BENCH_MODEL_BENCH_REPORT_H_
