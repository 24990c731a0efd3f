// Prometheus metrics (prometheus-cpp), named by Prometheus conventions with
// a moondream_ prefix:
//
//   histograms  moondream_queue_seconds, moondream_time_to_first_token_seconds,
//               moondream_inter_token_latency_seconds,
//               moondream_request_duration_seconds (end to end),
//               moondream_step_seconds, moondream_step_batch_size
//   counters    moondream_requests_total{skill,status,tenant},
//               moondream_tokens_in_total, moondream_tokens_out_total,
//               moondream_image_cache_hits_total,
//               moondream_image_cache_misses_total,
//               moondream_image_cache_evictions_total,
//               moondream_rejections_total{reason}
//   gauges      moondream_queue_length, moondream_running_slots,
//               moondream_kv_usage_ratio, moondream_batch_size,
//               moondream_image_cache_bytes
//   load        moondream_num_requests_waiting, moondream_num_requests_running,
//               moondream_kv_cache_usage_perc (0-1),
//               moondream_tenant_requests_waiting{tenant},
//               moondream_tenant_requests_running{tenant}
//   vllm compat vllm:num_requests_waiting, vllm:num_requests_running,
//               vllm:kv_cache_usage_perc, vllm:gpu_cache_usage_perc
//               {model_name} (MetricsCompat::kVllm only)
//
// The load gauges carry the names that LLM routers and autoscalers read
// (the Gateway API Inference Extension's endpoint picker, vLLM's production
// stack router); the vllm: names are the same values under vLLM's own names,
// for tools that cannot be told another name.
//
// The engine's counters and gauges are read when scraped; the histograms and
// the per-request counters are fed by the transports (RequestObserver) and
// the engine's step callback.
#ifndef MOONDREAM_SERVICE_METRICS_H_
#define MOONDREAM_SERVICE_METRICS_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "scheduler/engine.h"
#include "service/observer.h"

namespace md::service {

// Other servers' metric names exported as well as ours.
enum class MetricsCompat {
  kNone,
  kVllm,  // vllm:num_requests_waiting and the rest (see above).
};

// "" → kNone, "vllm" → kVllm; anything else is InvalidArgument.
absl::StatusOr<MetricsCompat> ParseMetricsCompat(absl::string_view name);

struct MetricsOptions {
  MetricsCompat compat = MetricsCompat::kNone;
  // The model_name label of the vllm: names (vLLM labels them with the
  // served model's name).
  std::string model_name;
  // Tenants whose gauges are exported from the start, at zero while they
  // have nothing waiting or running: a series that vanishes reads as "no
  // data" to an autoscaler, not as zero. Tenants seen later are added.
  std::vector<std::string> tenants;
};

class Metrics final : public RequestObserver {
 public:
  Metrics();
  explicit Metrics(MetricsOptions options);
  ~Metrics() override;

  // Engine counters and gauges come from `engine` from now on; nullptr
  // detaches (waiting for a scrape in progress: after it returns, no scrape
  // reads the old engine). Detach before the engine is destroyed.
  // `preparing` (optional) counts requests admitted but not yet in the
  // engine (decoding their images): the waiting gauges include them, since
  // a router should see that load as soon as it arrives.
  void AttachEngine(const scheduler::Engine* engine,
                    std::function<int()> preparing = {});
  // For EngineOptions' step callback.
  void OnStep(const scheduler::StepReport& report);

  void OnRequestDone(absl::string_view skill, absl::string_view tenant,
                     const absl::Status& status,
                     const scheduler::RequestSummary& summary,
                     bool reached_engine) override;
  void OnInterTokenGap(absl::Duration gap) override;

  // Serves GET /metrics on host:port (port 0 picks a free one).
  absl::Status Serve(const std::string& host, int port);
  int port() const;
  // The current scrape, in the Prometheus text format.
  std::string Scrape() const;

  class Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// "OK" → "ok", "DEADLINE_EXCEEDED" → "deadline_exceeded".
std::string StatusLabel(const absl::Status& status);

}  // namespace md::service

#endif  // MOONDREAM_SERVICE_METRICS_H_
