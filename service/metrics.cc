#include "service/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <exception>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "base/log.h"
#include "base/status_macros.h"
#include "service/http/http_server.h"

namespace md::service {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

// Seconds from 5 ms to 2 minutes (latencies of a CPU-bound model).
const prometheus::Histogram::BucketBoundaries kLatencyBuckets = {
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};
const prometheus::Histogram::BucketBoundaries kBatchBuckets = {1,  2,  4,  8,
                                                               16, 32, 64, 128};

MetricFamily Single(std::string name, std::string help, MetricType type,
                    double value,
                    std::vector<prometheus::ClientMetric::Label> labels = {}) {
  ClientMetric metric;
  metric.label = std::move(labels);
  if (type == MetricType::Counter) {
    metric.counter.value = value;
  } else {
    metric.gauge.value = value;
  }
  return MetricFamily{std::move(name), std::move(help), type, {metric}};
}

double KvUsage(const scheduler::EngineStats& s) {
  return s.kv_positions_total > 0
             ? double(s.kv_positions_in_use) / s.kv_positions_total
             : 0;
}

// The engine's gauges and counters under their original names.
std::vector<MetricFamily> EngineFamilies(const scheduler::EngineStats& s) {
  std::vector<MetricFamily> out = {
      Single("moondream_queue_length", "Requests waiting for a slot.",
             MetricType::Gauge, s.queue_length),
      Single("moondream_running_slots", "Slots holding a request.",
             MetricType::Gauge, s.slots_in_use),
      Single("moondream_slots", "Slots of the engine.", MetricType::Gauge,
             s.n_slots),
      Single("moondream_kv_usage_ratio",
             "KV cache positions in use over positions allocated.",
             MetricType::Gauge, KvUsage(s)),
      Single("moondream_batch_size", "Sequences fed in the last step.",
             MetricType::Gauge, s.last_batch_size),
      Single("moondream_image_cache_bytes",
             "Bytes of image prefix KV in the cache.", MetricType::Gauge,
             s.cache_bytes),
      Single("moondream_image_cache_entries", "Image prefixes in the cache.",
             MetricType::Gauge, s.cache_entries),
      Single("moondream_image_cache_pinned_entries",
             "Cached image prefixes that running sequences read now (never "
             "evicted while read).",
             MetricType::Gauge, s.cache_pinned_entries),
      Single("moondream_tokens_in_total",
             "Prompt tokens prefilled (after the image prefix).",
             MetricType::Counter, s.tokens_in),
      Single("moondream_tokens_out_total",
             "Tokens, coordinates and sizes decoded.", MetricType::Counter,
             s.tokens_out),
      Single("moondream_image_cache_hits_total",
             "Images served from the prefix cache.", MetricType::Counter,
             s.cache_hits),
      Single("moondream_image_cache_misses_total",
             "Images that had to be encoded.", MetricType::Counter,
             s.cache_misses),
      Single("moondream_image_cache_evictions_total",
             "Prefix cache entries evicted under the byte budget.",
             MetricType::Counter, s.cache_evictions),
      Single("moondream_images_encoded_total",
             "Vision encoder runs (one per image).", MetricType::Counter,
             s.images_encoded),
      Single("moondream_engine_steps_total", "Engine steps run.",
             MetricType::Counter, s.steps),
  };
  MetricFamily rejections{"moondream_rejections_total",
                          "Requests the engine refused or ended early, by "
                          "reason.",
                          MetricType::Counter,
                          {}};
  for (auto [reason, value] :
       {std::pair{"queue_full", s.rejected_queue_full},
        std::pair{"tenant_limit", s.rejected_tenant_limit},
        std::pair{"too_long", s.rejected_too_long},
        std::pair{"invalid", s.rejected_invalid},
        std::pair{"unavailable", s.rejected_unavailable},
        std::pair{"expired_queued", s.expired_queued},
        std::pair{"expired_running", s.expired_running},
        std::pair{"cancelled", s.cancelled}, std::pair{"failed", s.failed}}) {
    ClientMetric metric;
    metric.label = {{"reason", reason}};
    metric.counter.value = static_cast<double>(value);
    rejections.metric.push_back(std::move(metric));
  }
  out.push_back(std::move(rejections));
  return out;
}

// The load an LLM router or autoscaler balances on, named as the Gateway
// API Inference Extension's endpoint picker expects (queued requests,
// running requests, KV cache use 0-1). Requests, not slots: a request of
// several sequences holds several slots but is one request to route.
void AppendLoadFamilies(const scheduler::EngineStats& s,
                        std::vector<MetricFamily>& out) {
  out.push_back(Single("moondream_num_requests_waiting",
                       "Requests waiting for a slot.", MetricType::Gauge,
                       s.queue_length));
  out.push_back(Single("moondream_num_requests_running",
                       "Requests holding slots.", MetricType::Gauge,
                       s.running_requests));
  out.push_back(Single("moondream_kv_cache_usage_perc",
                       "KV cache positions in use over positions allocated "
                       "(0-1; 1 is full).",
                       MetricType::Gauge, KvUsage(s)));
}

// The same values under vLLM's names and model_name label, which routers
// built for vLLM (its production stack router, the inference extension's
// defaults) read without configuration. gpu_cache_usage_perc is vLLM's
// older name for kv_cache_usage_perc; routers still read it.
void AppendVllmFamilies(const scheduler::EngineStats& s,
                        const std::string& model_name,
                        std::vector<MetricFamily>& out) {
  const std::vector<ClientMetric::Label> labels = {{"model_name", model_name}};
  out.push_back(Single("vllm:num_requests_waiting",
                       "Number of requests waiting to be processed.",
                       MetricType::Gauge, s.queue_length, labels));
  out.push_back(Single("vllm:num_requests_running",
                       "Number of requests in model execution batches.",
                       MetricType::Gauge, s.running_requests, labels));
  out.push_back(Single("vllm:kv_cache_usage_perc",
                       "KV-cache usage. 1 means 100 percent usage.",
                       MetricType::Gauge, KvUsage(s), labels));
  out.push_back(Single("vllm:gpu_cache_usage_perc",
                       "GPU KV-cache usage. 1 means 100 percent usage.",
                       MetricType::Gauge, KvUsage(s), labels));
}

// Waiting and running requests per tenant, for every tenant in `tenants`
// (zero when the engine has none of theirs).
void AppendTenantFamilies(const scheduler::EngineStats& s,
                          const std::set<std::string>& tenants,
                          std::vector<MetricFamily>& out) {
  MetricFamily waiting{"moondream_tenant_requests_waiting",
                       "Requests of a tenant waiting for a slot.",
                       MetricType::Gauge,
                       {}};
  MetricFamily running{"moondream_tenant_requests_running",
                       "Requests of a tenant holding slots.",
                       MetricType::Gauge,
                       {}};
  for (const std::string& tenant : tenants) {
    auto it = s.tenants.find(tenant);
    const scheduler::TenantLoad load =
        it == s.tenants.end() ? scheduler::TenantLoad{} : it->second;
    for (auto [family, value] : {std::pair{&waiting, load.waiting},
                                 std::pair{&running, load.running}}) {
      ClientMetric metric;
      metric.label = {{"tenant", tenant}};
      metric.gauge.value = static_cast<double>(value);
      family->metric.push_back(std::move(metric));
    }
  }
  out.push_back(std::move(waiting));
  out.push_back(std::move(running));
}

// The engine's own counters and gauges, read at scrape time.
// The engine may go away while a scrape runs (shutdown): Attach(nullptr)
// waits for a scrape in progress, and no scrape reads the engine after it.
class EngineCollector final : public prometheus::Collectable {
 public:
  explicit EngineCollector(MetricsOptions options)
      : options_(std::move(options)),
        tenants_(options_.tenants.begin(), options_.tenants.end()) {}

  void Attach(const scheduler::Engine* engine, std::function<int()> preparing) {
    absl::MutexLock lock(&mu_);
    engine_ = engine;
    preparing_ = std::move(preparing);
  }

  std::vector<MetricFamily> Collect() const override {
    scheduler::EngineStats s;
    std::set<std::string> tenants;
    int preparing = 0;
    {
      absl::MutexLock lock(&mu_);
      if (engine_ == nullptr) return {};
      s = engine_->Stats();
      if (preparing_) preparing = preparing_();
      // Once seen, a tenant's series stays (at zero when idle). The engine
      // only sees authenticated tenants, so this grows no larger than the
      // API keys file.
      for (const auto& [tenant, load] : s.tenants) tenants_.insert(tenant);
      tenants = tenants_;
    }
    std::vector<MetricFamily> out = EngineFamilies(s);
    // The routing gauges count requests still decoding as waiting; the
    // engine's own families (and the per-tenant ones) stay the engine's.
    scheduler::EngineStats load = s;
    load.queue_length += preparing;
    AppendLoadFamilies(load, out);
    AppendTenantFamilies(s, tenants, out);
    if (options_.compat == MetricsCompat::kVllm) {
      AppendVllmFamilies(load, options_.model_name, out);
    }
    return out;
  }

 private:
  const MetricsOptions options_;
  mutable absl::Mutex mu_;
  const scheduler::Engine* engine_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::function<int()> preparing_ ABSL_GUARDED_BY(mu_);
  mutable std::set<std::string> tenants_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

std::string StatusLabel(const absl::Status& status) {
  return absl::AsciiStrToLower(absl::StatusCodeToString(status.code()));
}

absl::StatusOr<MetricsCompat> ParseMetricsCompat(absl::string_view name) {
  if (name.empty()) return MetricsCompat::kNone;
  if (name == "vllm") return MetricsCompat::kVllm;
  return absl::InvalidArgumentError(absl::StrCat(
      "--metrics_compat must be empty or 'vllm', not '", name, "'"));
}

class Metrics::Impl {
 public:
  explicit Impl(MetricsOptions options)
      : registry(std::make_shared<prometheus::Registry>()),
        collector(std::make_shared<EngineCollector>(std::move(options))),
        requests(prometheus::BuildCounter()
                     .Name("moondream_requests_total")
                     .Help("Requests ended, by skill, status and tenant.")
                     .Register(*registry)),
        queue(prometheus::BuildHistogram()
                  .Name("moondream_queue_seconds")
                  .Help("Time from submission to a slot.")
                  .Register(*registry)
                  .Add({}, kLatencyBuckets)),
        ttft(prometheus::BuildHistogram()
                 .Name("moondream_time_to_first_token_seconds")
                 .Help("Time from the request's arrival (before its image is "
                       "decoded) to the first output.")
                 .Register(*registry)
                 .Add({}, kLatencyBuckets)),
        itl(prometheus::BuildHistogram()
                .Name("moondream_inter_token_latency_seconds")
                .Help("Time between two streamed outputs of a request.")
                .Register(*registry)
                .Add({}, kLatencyBuckets)),
        duration(
            prometheus::BuildHistogram()
                .Name("moondream_request_duration_seconds")
                .Help(
                    "Time from arrival to the end, of requests the engine ran.")
                .Register(*registry)
                .Add({}, kLatencyBuckets)),
        step(prometheus::BuildHistogram()
                 .Name("moondream_step_seconds")
                 .Help("Wall time of one engine step.")
                 .Register(*registry)
                 .Add({}, kLatencyBuckets)),
        batch(prometheus::BuildHistogram()
                  .Name("moondream_step_batch_size")
                  .Help("Sequences fed per engine step.")
                  .Register(*registry)
                  .Add({}, kBatchBuckets)) {}

  std::shared_ptr<prometheus::Registry> registry;
  std::shared_ptr<EngineCollector> collector;
  prometheus::Family<prometheus::Counter>& requests;
  prometheus::Histogram& queue;
  prometheus::Histogram& ttft;
  prometheus::Histogram& itl;
  prometheus::Histogram& duration;
  prometheus::Histogram& step;
  prometheus::Histogram& batch;
  std::unique_ptr<http::HttpServer> http;
};

Metrics::Metrics() : Metrics(MetricsOptions{}) {}
Metrics::Metrics(MetricsOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {}
Metrics::~Metrics() = default;

void Metrics::AttachEngine(const scheduler::Engine* engine,
                           std::function<int()> preparing) {
  impl_->collector->Attach(engine, std::move(preparing));
}

void Metrics::OnStep(const scheduler::StepReport& report) {
  impl_->step.Observe(report.step_seconds);
  impl_->batch.Observe(report.batch_size);
}

void Metrics::OnRequestDone(absl::string_view skill, absl::string_view tenant,
                            const absl::Status& status,
                            const scheduler::RequestSummary& summary,
                            bool reached_engine) {
  impl_->requests
      .Add({{"skill", std::string(skill)},
            {"status", StatusLabel(status)},
            {"tenant", std::string(tenant)}})
      .Increment();
  if (!reached_engine) {
    // The engine logs what it ran; refusals at the boundary are logged here
    // so an operator sees why a client got an error.
    LogEvent(LogLevel::kInfo, "request_refused",
             {{"tenant", tenant},
              {"skill", skill},
              {"status", absl::StatusCodeToString(status.code())},
              {"error", status.message()}});
    return;
  }
  impl_->queue.Observe(absl::ToDoubleSeconds(summary.queued));
  if (summary.time_to_first > absl::ZeroDuration()) {
    impl_->ttft.Observe(absl::ToDoubleSeconds(summary.time_to_first));
  }
  impl_->duration.Observe(absl::ToDoubleSeconds(summary.total));
}

void Metrics::OnInterTokenGap(absl::Duration gap) {
  impl_->itl.Observe(absl::ToDoubleSeconds(gap));
}

absl::Status Metrics::Serve(const std::string& host, int port) {
  http::ServerOptions options;
  options.host = host;
  options.port = port;
  options.workers = 2;  // Scrapes are short; a few at a time is plenty.
  options.limits.max_body_bytes = 0;
  auto server = std::make_unique<http::HttpServer>(options);
  server->Route("GET", "/metrics", [this](http::Exchange& exchange) {
    exchange.Respond(200, "text/plain; version=0.0.4; charset=utf-8", Scrape());
  });
  RETURN_IF_ERROR(server->Start());
  impl_->http = std::move(server);
  return absl::OkStatus();
}

int Metrics::port() const {
  return impl_->http == nullptr ? 0 : impl_->http->port();
}

std::string Metrics::Scrape() const {
  std::vector<MetricFamily> families = impl_->registry->Collect();
  for (MetricFamily& f : impl_->collector->Collect()) {
    families.push_back(std::move(f));
  }
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, families);
  return out.str();
}

}  // namespace md::service
