// Latency under the engine: time to first token with an image cache miss
// and hit, and inter-token gaps of decoding streams, alone and while
// requests on new images arrive (their encode runs beside the streams).
#ifndef MOONDREAM_TOOLS_BENCH_ENGINE_LATENCY_H_
#define MOONDREAM_TOOLS_BENCH_ENGINE_LATENCY_H_

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <vector>

#include "absl/status/statusor.h"
#include "model/net/moondream.h"
#include "scheduler/engine.h"

namespace md::bench {

struct Ttft {
  std::vector<double> miss_ms;
  std::vector<double> hit_ms;
};

// Alternates a request on a never-seen image (miss: vision encode + prefix
// prefill) with one on the same image again (hit: a KV copy).
absl::StatusOr<Ttft> MeasureTtft(scheduler::Engine& engine, const Model& model,
                                 int n_reps, uint64_t first_seed);

struct ItlPlan {
  int n_streams = 0;
  int n_tokens = 0;  // per stream
  int n_images = 0;
  int interval_ms = 0;  // between new images
};

struct Itl {
  std::vector<double> quiet_ms;     // Streams alone.
  std::vector<double> arrivals_ms;  // While new images arrive.
  int images_arrived = 0;
};

// `n_streams` streams of `n_tokens` decode alone; then again while a request
// on a new image arrives every `interval_ms`.
absl::StatusOr<Itl> MeasureItl(
    scheduler::Engine& engine, const Model& model,
    std::shared_ptr<const scheduler::EngineImage> warm, const ItlPlan& plan,
    uint64_t first_seed);

// n, p50, p90, p99 and max of latencies in ms.
nlohmann::json LatencyJson(const std::vector<double>& ms);

}  // namespace md::bench

#endif  // MOONDREAM_TOOLS_BENCH_ENGINE_LATENCY_H_
