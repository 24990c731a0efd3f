#include "tools/bench/serve/serve_bench.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "base/files.h"
#include "base/status_macros.h"
#include "tools/bench/flags.h"
#include "tools/bench/serve/client.h"
#include "tools/bench/serve/metrics.h"
#include "tools/bench/serve/server_metrics.h"
#include "tools/bench/serve/workload.h"

namespace md::bench {
namespace {

using serve::RequestRecord;
using Json = nlohmann::ordered_json;

constexpr char kSummary[] =
    "Load-tests a running moondream-server over gRPC or HTTP (SSE), like "
    "`vllm bench serve`.\n"
    "Metrics are vLLM's: TTFT = first streamed chunk - send; E2EL = last\n"
    "message - send; TPOT = (E2EL - TTFT) / (output tokens - 1), requests "
    "with\n"
    "more than one token; ITL = every gap between streamed chunks, pooled;\n"
    "population std; percentiles interpolated linearly; goodput = requests/s\n"
    "meeting every --goodput SLO. detect/point/gaze do not stream: E2EL only.";

struct ServeFlags {
  std::string target = "127.0.0.1:50051";
  std::string protocol = "grpc";
  bool tls = false;
  std::string tls_ca;
  std::string api_key;
  std::string tasks = "query:0.6,caption:0.2,detect:0.1,point:0.1";
  std::string image_buckets = "378x378:0.5,1000x700:0.5";
  std::string image_dir;
  int distinct_images = 16;
  std::string questions_file;
  int max_tokens = 64;
  bool ignore_eos = false;
  double request_rate = std::numeric_limits<double>::infinity();
  double burstiness = 1;
  int max_concurrency = 0;
  int num_prompts = 100;
  double duration = 0;
  int num_warmups = 1;
  int seed = 0;
  double ramp_up = 0;
  std::vector<std::string> tenants;
  std::string goodput;
  std::string percentiles = "50,90,99";
  std::string json;
  bool save_detailed = false;
  std::string metrics_url;
  double timeout = 600;
  int sweep = 0;
  double cancel_fraction = 0;
};

absl::Status ParseFlags(const std::vector<std::string>& args, ServeFlags& f,
                        bool& help) {
  FlagParser p("serve", kSummary);
  p.AddString("target", &f.target, "the server's gRPC or HTTP host:port");
  p.AddString("protocol", &f.protocol,
              "grpc, or http (JSON, caption and query as SSE)");
  p.AddBool("tls", &f.tls, "TLS to the server");
  p.AddString("tls_ca", &f.tls_ca, "PEM roots for --tls (default: system)");
  p.AddString("api_key", &f.api_key, "key sent when no --tenant is given");
  p.AddString("tasks", &f.tasks, "skill mix, skill:weight,...");
  p.AddString("image_buckets", &f.image_buckets,
              "synthetic image sizes, WxH:weight,...");
  p.AddString("image_dir", &f.image_dir, "send these images instead");
  p.AddInt("distinct_images", &f.distinct_images,
           "synthetic images drawn; fewer repeat more (the image cache)");
  p.AddString("questions_file", &f.questions_file,
              "questions, one per line (default: built in)");
  p.AddInt("max_tokens", &f.max_tokens, "tokens per caption or answer");
  p.AddBool("ignore_eos", &f.ignore_eos, "generate exactly --max_tokens");
  p.AddDouble("request_rate", &f.request_rate,
              "requests per second; inf sends all at once");
  p.AddDouble("burstiness", &f.burstiness,
              "gamma shape of the gaps; 1 = Poisson, lower = burstier");
  p.AddInt("max_concurrency", &f.max_concurrency,
           "most requests in flight (0: no limit)");
  p.AddInt("num_prompts", &f.num_prompts, "requests to send (0: --duration)");
  p.AddDouble("duration", &f.duration, "seconds of arrivals");
  p.AddInt("num_warmups", &f.num_warmups, "requests sent first, not measured");
  p.AddInt("seed", &f.seed, "seed of the whole workload");
  p.AddDouble("ramp_up", &f.ramp_up, "seconds over which the rate grows");
  p.AddRepeated("tenant", &f.tenants,
                "KEY, KEY:weight=W or KEY:rate=R (repeatable)");
  p.AddString("goodput", &f.goodput, "SLOs, e.g. ttft:500,tpot:50,e2el:5000");
  p.AddString("percentiles", &f.percentiles, "percentiles to report");
  p.AddString("json", &f.json, "write the results here");
  p.AddBool("save_detailed", &f.save_detailed,
            "per-request records in the JSON");
  p.AddString("metrics_url", &f.metrics_url,
              "the server's /metrics host:port, scraped before and after");
  p.AddDouble("timeout", &f.timeout, "seconds before a request is abandoned");
  p.AddDouble("cancel_fraction", &f.cancel_fraction,
              "abandon this fraction of the streams at random points");
  p.AddInt("sweep", &f.sweep,
           "N > 0: synchronous, unlimited, then N rates between them");
  RETURN_IF_ERROR(p.Parse(args));
  help = p.help_requested();
  if (help) std::printf("%s", p.Usage().c_str());
  return absl::OkStatus();
}

absl::StatusOr<serve::Slo> ParseSlo(absl::string_view spec) {
  serve::Slo slo;
  if (spec.empty()) return slo;
  ASSIGN_OR_RETURN(std::vector<serve::Weighted> parts,
                   serve::ParseWeighted(spec));
  for (const serve::Weighted& p : parts) {
    if (p.name == "ttft") {
      slo.ttft_ms = p.weight;
    } else if (p.name == "tpot") {
      slo.tpot_ms = p.weight;
    } else if (p.name == "e2el") {
      slo.e2el_ms = p.weight;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("--goodput: unknown metric '", p.name, "'"));
    }
  }
  return slo;
}

absl::StatusOr<std::vector<double>> ParsePercentiles(absl::string_view spec) {
  std::vector<double> out;
  for (absl::string_view s : absl::StrSplit(spec, ',', absl::SkipEmpty())) {
    double p = 0;
    if (!absl::SimpleAtod(s, &p) || p < 0 || p > 100) {
      return absl::InvalidArgumentError(
          absl::StrCat("--percentiles: '", s, "' is not in [0, 100]"));
    }
    out.push_back(p);
  }
  return out;
}

absl::StatusOr<serve::WorkloadOptions> WorkloadOf(const ServeFlags& f) {
  serve::WorkloadOptions w;
  ASSIGN_OR_RETURN(w.tasks, serve::ParseWeighted(f.tasks));
  for (const serve::Weighted& t : w.tasks) {
    if (t.name != "caption" && t.name != "query" && t.name != "detect" &&
        t.name != "point" && t.name != "gaze") {
      return absl::InvalidArgumentError(
          absl::StrCat("--tasks: unknown skill '", t.name,
                       "' (caption, query, detect, point, gaze)"));
    }
  }
  if (f.image_dir.empty()) {
    ASSIGN_OR_RETURN(w.buckets, serve::ParseImageBuckets(f.image_buckets));
  }
  w.image_dir = f.image_dir;
  w.distinct_images = f.distinct_images;
  if (!f.questions_file.empty()) {
    ASSIGN_OR_RETURN(std::string text, ReadFileToString(f.questions_file));
    for (absl::string_view line :
         absl::StrSplit(text, '\n', absl::SkipEmpty())) {
      w.questions.emplace_back(line);
    }
  }
  for (const std::string& t : f.tenants) {
    ASSIGN_OR_RETURN(serve::TenantSpec spec, serve::ParseTenant(t));
    w.tenants.push_back(std::move(spec));
  }
  w.request_rate = f.request_rate;
  w.burstiness = f.burstiness;
  w.ramp_up_s = f.ramp_up;
  w.num_prompts = f.num_prompts;
  w.duration_s = f.duration;
  w.seed = static_cast<uint64_t>(f.seed);
  w.cancel_fraction = f.cancel_fraction;
  w.cancel_max_chunks = f.max_tokens;
  return w;
}

// Calls in flight and their records, shared with the transport's threads.
class Collector {
 public:
  void Started() {
    absl::MutexLock lock(&mu_);
    ++in_flight_;
    peak_in_flight_ = std::max(peak_in_flight_, in_flight_);
  }
  void Done(RequestRecord record) {
    absl::MutexLock lock(&mu_);
    --in_flight_;
    if (!record.ok && !record.cancelled) ++failed_;
    records_.push_back(std::move(record));
  }
  // Waits until fewer than `limit` calls are in flight (0: no limit).
  void WaitForRoom(int limit) {
    if (limit <= 0) return;
    absl::MutexLock lock(&mu_);
    auto room = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return in_flight_ < limit;
    };
    mu_.Await(absl::Condition(&room));
  }
  void WaitForAll() {
    absl::MutexLock lock(&mu_);
    auto idle = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return in_flight_ == 0;
    };
    mu_.Await(absl::Condition(&idle));
  }
  // done, failed
  std::pair<int, int> Progress() const {
    absl::MutexLock lock(&mu_);
    return {static_cast<int>(records_.size()), failed_};
  }
  std::vector<RequestRecord> Take() {
    absl::MutexLock lock(&mu_);
    return std::move(records_);
  }

 private:
  mutable absl::Mutex mu_;
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  int peak_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  int failed_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<RequestRecord> records_ ABSL_GUARDED_BY(mu_);
};

std::string KeyOf(const serve::Workload& w, const ServeFlags& f, int tenant) {
  const std::string& key = w.tenant_keys[tenant];
  return key.empty() ? f.api_key : key;
}

// Sends the warm-ups one at a time and waits for each.
void WarmUp(serve::Client& client, const serve::Workload& w,
            const ServeFlags& f, const serve::RunClock& clock) {
  for (int i = 0; i < f.num_warmups && i < static_cast<int>(w.requests.size());
       ++i) {
    serve::PlannedRequest r = w.requests[i];
    r.cancel_after_chunks = -1;  // warm-ups run to the end
    Collector one;
    one.Started();
    client.Send(r, w.images[r.image], KeyOf(w, f, r.tenant), clock,
                [&one](RequestRecord rec) { one.Done(std::move(rec)); });
    one.WaitForAll();
  }
}

void PrintProgress(int done, int total, int failed, double elapsed_s) {
  std::fprintf(stderr, "\r%d/%d done, %.1f req/s, %d errors   ", done, total,
               elapsed_s > 0 ? done / elapsed_s : 0.0, failed);
  std::fflush(stderr);
}

Json DistributionJson(Json& out, const std::string& metric,
                      const serve::Distribution& d) {
  out[absl::StrCat("mean_", metric, "_ms")] = d.mean;
  out[absl::StrCat("median_", metric, "_ms")] = d.median;
  out[absl::StrCat("std_", metric, "_ms")] = d.std;
  for (const auto& [p, v] : d.percentiles) {
    out[absl::StrCat("p", p, "_", metric, "_ms")] = v;
  }
  return out;
}

Json SummaryJson(const serve::Summary& s) {
  Json j;
  j["duration"] = s.duration_s;
  j["completed"] = s.completed;
  j["failed"] = s.failed;
  j["cancelled"] = s.cancelled;
  j["total_input_tokens"] = s.total_input_tokens;
  j["total_output_tokens"] = s.total_output_tokens;
  j["request_throughput"] = s.request_throughput;
  if (s.request_goodput) j["request_goodput"] = *s.request_goodput;
  j["output_throughput"] = s.output_throughput;
  j["total_token_throughput"] = s.total_token_throughput;
  j["max_output_tokens_per_s"] = s.max_output_tokens_per_s;
  j["max_concurrent_requests"] = s.max_concurrent_requests;
  j["send_rate"] = s.send_rate;
  j["completion_rate"] = s.completion_rate;
  DistributionJson(j, "ttft", s.ttft_ms);
  DistributionJson(j, "tpot", s.tpot_ms);
  DistributionJson(j, "itl", s.itl_ms);
  DistributionJson(j, "e2el", s.e2el_ms);
  j["errors_by_code"] = s.errors_by_code;
  return j;
}

void PrintDistribution(const char* name, const serve::Distribution& d) {
  std::printf("%-6s %8d %10.2f %10.2f %10.2f", name, d.count, d.mean, d.median,
              d.std);
  for (const auto& [p, v] : d.percentiles) std::printf(" %10.2f", v);
  std::printf("\n");
}

void PrintSummary(const serve::Summary& s, const serve::TenantReport& t) {
  std::printf("\n============ Serving Benchmark Result ============\n");
  std::printf("%-40s %d\n", "Successful requests:", s.completed);
  std::printf("%-40s %d\n", "Failed requests:", s.failed);
  if (s.cancelled > 0) {
    std::printf("%-40s %d\n", "Cancelled by the client:", s.cancelled);
  }
  for (const auto& [code, n] : s.errors_by_code) {
    std::printf("  %-38s %d\n", code.c_str(), n);
  }
  std::printf("%-40s %.2f\n", "Benchmark duration (s):", s.duration_s);
  std::printf("%-40s %lld\n", "Total input tokens:",
              static_cast<long long>(s.total_input_tokens));
  std::printf("%-40s %lld\n", "Total generated tokens:",
              static_cast<long long>(s.total_output_tokens));
  std::printf("%-40s %.2f\n",
              "Request throughput (req/s):", s.request_throughput);
  if (s.request_goodput) {
    std::printf("%-40s %.2f\n", "Request goodput (req/s):", *s.request_goodput);
  }
  std::printf("%-40s %.2f\n",
              "Output token throughput (tok/s):", s.output_throughput);
  std::printf("%-40s %.2f\n", "Peak output token throughput (tok/s):",
              s.max_output_tokens_per_s);
  std::printf("%-40s %d\n",
              "Peak concurrent requests:", s.max_concurrent_requests);
  std::printf("\n%-6s %8s %10s %10s %10s", "ms", "count", "mean", "median",
              "std");
  for (const auto& [p, v] : s.ttft_ms.percentiles) {
    std::printf(" %10s", absl::StrCat("p", p).c_str());
  }
  std::printf("\n");
  PrintDistribution("TTFT", s.ttft_ms);
  PrintDistribution("TPOT", s.tpot_ms);
  PrintDistribution("ITL", s.itl_ms);
  PrintDistribution("E2EL", s.e2el_ms);
  if (t.tenants.size() > 1) {
    std::printf("\n%-16s %6s %9s %9s %12s %12s\n", "tenant", "sent", "done",
                "served", "mean TTFT", "p99 TTFT");
    for (const serve::TenantSummary& ts : t.tenants) {
      const auto& ttft = ts.summary.ttft_ms;
      std::printf("%-16s %6d %9d %8.0f%% %12.2f %12.2f\n", ts.tenant.c_str(),
                  ts.sent, ts.summary.completed, 100 * ts.served_fraction,
                  ttft.mean, ttft.percentiles.rbegin()->second);
    }
    std::printf("Jain's fairness index (served fractions): %.3f\n", t.fairness);
  }
  std::printf("==================================================\n");
}

}  // namespace

namespace {

// One measured run at `rate` (and `max_concurrency`), with its JSON.
struct RunResult {
  serve::Summary summary;
  serve::TenantReport tenants;
  Json json;
};

absl::StatusOr<RunResult> RunOnce(const ServeFlags& f, serve::Client& client,
                                  const serve::Slo& slo,
                                  const std::vector<double>& percentiles,
                                  double rate, int max_concurrency) {
  ASSIGN_OR_RETURN(serve::WorkloadOptions options, WorkloadOf(f));
  options.request_rate = rate;
  ASSIGN_OR_RETURN(serve::Workload w, serve::BuildWorkload(options));
  {
    serve::RunClock warm_clock;
    WarmUp(client, w, f, warm_clock);
  }
  serve::Samples metrics_before;
  if (!f.metrics_url.empty()) {
    ASSIGN_OR_RETURN(std::string text, serve::FetchMetricsText(f.metrics_url));
    metrics_before = serve::ParseExposition(text);
  }

  // Each request at its arrival time, after a free concurrency slot
  // (vLLM's semaphore: no catch-up), timed on one clock.
  Collector collector;
  const serve::RunClock clock;
  const bool tty = isatty(STDERR_FILENO);
  const int total = static_cast<int>(w.requests.size());
  std::vector<double> lateness_ms;
  double last_progress = 0;
  for (const serve::PlannedRequest& r : w.requests) {
    const double wait = r.at_s - clock.Now();
    if (wait > 0) absl::SleepFor(absl::Seconds(wait));
    collector.WaitForRoom(max_concurrency);
    lateness_ms.push_back(std::max(0.0, clock.Now() - r.at_s) * 1000);
    collector.Started();
    const std::string tenant = w.tenant_keys[r.tenant];
    client.Send(r, w.images[r.image], KeyOf(w, f, r.tenant), clock,
                [&collector, tenant](RequestRecord rec) {
                  rec.tenant = tenant.empty() ? "default" : tenant;
                  collector.Done(std::move(rec));
                });
    if (tty && clock.Now() - last_progress > 0.5) {
      last_progress = clock.Now();
      auto [done, failed] = collector.Progress();
      PrintProgress(done, total, failed, last_progress);
    }
  }
  while (tty) {
    auto [done, failed] = collector.Progress();
    PrintProgress(done, total, failed, clock.Now());
    if (done == total) break;
    absl::SleepFor(absl::Milliseconds(500));
  }
  collector.WaitForAll();
  const double duration_s = clock.Now();
  if (tty) std::fprintf(stderr, "\n");
  std::vector<RequestRecord> records = collector.Take();

  RunResult result;
  result.summary = serve::Summarize(records, duration_s, slo, percentiles);
  result.tenants =
      serve::SummarizeTenants(records, duration_s, slo, percentiles);
  // With an unlimited rate everything is due at once, so lateness only
  // means something for a finite rate.
  const serve::Distribution lateness = serve::Describe(lateness_ms, {99});
  const bool finite_rate = std::isfinite(rate);

  Json& j = result.json;
  j["date"] =
      absl::FormatTime("%Y%m%d-%H%M%S", absl::Now(), absl::UTCTimeZone());
  j["backend"] =
      f.protocol == "http" ? "moondream-serve-http" : "moondream-serve-grpc";
  j["target"] = f.target;
  j["tasks"] = f.tasks;
  j["num_prompts"] = total;
  j["request_rate"] = finite_rate ? Json(rate) : Json("inf");
  j["burstiness"] = f.burstiness;
  j["max_concurrency"] = max_concurrency;
  j["distinct_images"] = static_cast<int>(w.images.size());
  j["max_tokens"] = f.max_tokens;
  j["ignore_eos"] = f.ignore_eos;
  j["cancel_fraction"] = f.cancel_fraction;
  j.update(SummaryJson(result.summary));
  Json per_tenant = Json::object();
  for (const serve::TenantSummary& t : result.tenants.tenants) {
    Json tj = SummaryJson(t.summary);
    tj["sent"] = t.sent;
    tj["served_fraction"] = t.served_fraction;
    tj["share_of_completed"] = t.share_of_completed;
    tj["share_of_output_tokens"] = t.share_of_output_tokens;
    per_tenant[t.tenant] = tj;
  }
  j["per_tenant"] = per_tenant;
  j["fairness"] = result.tenants.fairness;
  j["p99_schedule_lateness_ms"] =
      finite_rate ? lateness.percentiles.at(99) : 0.0;
  if (finite_rate && lateness.percentiles.at(99) > 50) {
    std::printf(
        "warning: the load generator sent p99 %.0f ms after schedule; it, not "
        "the server, limited the rate\n",
        lateness.percentiles.at(99));
  }
  if (!f.metrics_url.empty()) {
    ASSIGN_OR_RETURN(std::string text, serve::FetchMetricsText(f.metrics_url));
    j["server_metrics"] =
        serve::Delta(metrics_before, serve::ParseExposition(text));
  }
  if (f.save_detailed) {
    Json details = Json::array();
    for (const RequestRecord& r : records) {
      Json chunks = Json::array();
      for (const serve::Chunk& c : r.chunks) {
        chunks.push_back({c.at_s, c.tokens});
      }
      details.push_back({{"tenant", r.tenant},
                         {"skill", r.skill},
                         {"send_s", r.send_s},
                         {"end_s", r.end_s},
                         {"ok", r.ok},
                         {"cancelled", r.cancelled},
                         {"error", r.error},
                         {"input_tokens", r.input_tokens},
                         {"output_tokens", r.output_tokens},
                         {"chunks", chunks}});
    }
    j["requests"] = details;
  }
  return result;
}

// GuideLLM's sweep: one request at a time (what one client sees), then
// all at once (capacity), then `steps` rates evenly between the two.
absl::StatusOr<Json> RunSweep(const ServeFlags& f, serve::Client& client,
                              const serve::Slo& slo,
                              const std::vector<double>& percentiles) {
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<RunResult> runs;
  std::printf("sweep: synchronous (one request at a time)\n");
  ASSIGN_OR_RETURN(RunResult sync,
                   RunOnce(f, client, slo, percentiles, inf, 1));
  std::printf("sweep: unlimited (all at once%s)\n",
              f.max_concurrency > 0 ? ", up to --max_concurrency" : "");
  ASSIGN_OR_RETURN(RunResult all, RunOnce(f, client, slo, percentiles, inf,
                                          f.max_concurrency));
  const double low = sync.summary.request_throughput;
  const double high = all.summary.request_throughput;
  runs.push_back(std::move(sync));
  runs.push_back(std::move(all));
  for (int i = 1; i <= f.sweep; ++i) {
    const double rate = low + (high - low) * i / (f.sweep + 1);
    std::printf("sweep: %.3f requests/s\n", rate);
    ASSIGN_OR_RETURN(RunResult run, RunOnce(f, client, slo, percentiles, rate,
                                            f.max_concurrency));
    runs.push_back(std::move(run));
  }

  // The table, by offered rate; saturation: the highest offered rate the
  // server still kept up with, completing requests at >= 90% of the rate
  // they were sent at (both across their own span, so a short run's fixed
  // start and drain do not count as falling behind).
  std::printf("\n%-14s %10s %8s %8s %10s %10s %10s %10s %10s %7s\n",
              "offered req/s", "req/s", "sent/s", "done/s", "out tok/s",
              "TTFT p50", "TTFT p99", "ITL p99", "E2EL p99", "errors");
  double saturation = 0;
  Json table = Json::array();
  for (const RunResult& run : runs) {
    const serve::Summary& s = run.summary;
    const Json& offered = run.json["request_rate"];
    const std::string label =
        run.json["max_concurrency"] == 1
            ? "sync"
            : (offered.is_string()
                   ? "inf"
                   : absl::StrFormat("%.3f", offered.get<double>()));
    std::printf(
        "%-14s %10.3f %8.3f %8.3f %10.2f %10.1f %10.1f %10.1f %10.1f %7d\n",
        label.c_str(), s.request_throughput, s.send_rate, s.completion_rate,
        s.output_throughput, s.ttft_ms.median,
        s.ttft_ms.percentiles.rbegin()->second,
        s.itl_ms.percentiles.rbegin()->second,
        s.e2el_ms.percentiles.rbegin()->second, s.failed);
    if (offered.is_number() && s.completion_rate >= 0.9 * s.send_rate) {
      saturation = std::max(saturation, offered.get<double>());
    }
    table.push_back(run.json);
  }
  std::printf(
      "capacity (all at once): %.3f requests/s; the server kept up with "
      "offered rates up to %.3f requests/s\n",
      high, saturation);
  Json out;
  out["sweep"] = table;
  out["capacity_request_throughput"] = high;
  out["synchronous_request_throughput"] = low;
  out["saturation_request_rate"] = saturation;
  return out;
}

}  // namespace

absl::Status RunServeBench(const std::vector<std::string>& args) {
  ServeFlags f;
  bool help = false;
  RETURN_IF_ERROR(ParseFlags(args, f, help));
  if (help) return absl::OkStatus();
  if (f.protocol != "grpc" && f.protocol != "http") {
    return absl::InvalidArgumentError(absl::StrCat(
        "--protocol: '", f.protocol, "' is neither grpc nor http"));
  }
  ASSIGN_OR_RETURN(serve::Slo slo, ParseSlo(f.goodput));
  ASSIGN_OR_RETURN(std::vector<double> percentiles,
                   ParsePercentiles(f.percentiles));
  if (percentiles.empty()) percentiles = {50, 99};
  // Refuse a bad workload before connecting.
  ASSIGN_OR_RETURN(serve::WorkloadOptions options, WorkloadOf(f));
  RETURN_IF_ERROR(serve::BuildWorkload(options).status());
  serve::ClientOptions client_options;
  client_options.target = f.target;
  client_options.tls = f.tls;
  client_options.tls_ca = f.tls_ca;
  client_options.max_tokens = f.max_tokens;
  client_options.ignore_eos = f.ignore_eos;
  client_options.timeout_s = f.timeout;
  ASSIGN_OR_RETURN(std::unique_ptr<serve::Client> client,
                   f.protocol == "http"
                       ? serve::CreateHttpClient(client_options)
                       : serve::CreateGrpcClient(client_options));

  Json out;
  if (f.sweep > 0) {
    if (f.num_prompts <= 0) {
      return absl::InvalidArgumentError("--sweep needs --num_prompts");
    }
    ASSIGN_OR_RETURN(out, RunSweep(f, *client, slo, percentiles));
  } else {
    ASSIGN_OR_RETURN(RunResult run, RunOnce(f, *client, slo, percentiles,
                                            f.request_rate, f.max_concurrency));
    PrintSummary(run.summary, run.tenants);
    out = std::move(run.json);
  }
  if (f.json.empty()) return absl::OkStatus();
  std::ofstream file(f.json);
  file << out.dump(2) << "\n";
  if (!file) return absl::InternalError(absl::StrCat("cannot write ", f.json));
  return absl::OkStatus();
}

}  // namespace md::bench
