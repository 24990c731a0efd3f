// The load generator's arithmetic (moondream-bench serve), defined exactly as
// vLLM's `vllm bench serve` defines it, so our numbers read like theirs:
//
//   TTFT   first streamed chunk with content - send time
//   E2EL   last message received - send time
//   TPOT   per request, (E2EL - TTFT) / (output tokens - 1); only requests
//          with more than one output token
//   ITL    every gap between consecutive streamed chunks, pooled over all
//          requests
//   stats  mean, median, population std, percentiles by linear
//          interpolation (numpy's default), in milliseconds
//   rates  completed / duration, output tokens / duration, (input + output)
//          tokens / duration; the duration runs from before the first send
//          to after the last answer
//   goodput  requests per second whose every given SLO (ttft, tpot, e2el in
//          ms) holds
//   peaks  the most output tokens in one 1-second bucket, and the most
//          requests in flight in one bucket
//   spans  (ours) send and completion rates, (n - 1) / (last - first), for
//          telling whether a server kept up with a finite run
//
// Skills that do not stream (detect, point, gaze) have an E2EL only: they add
// nothing to TTFT, TPOT or ITL. Per tenant, the same summary over that
// tenant's requests, plus its share of the completed work; across tenants,
// Jain's fairness index of how much of its offered load each was served.
#ifndef MOONDREAM_TOOLS_BENCH_SERVE_METRICS_H_
#define MOONDREAM_TOOLS_BENCH_SERVE_METRICS_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/types/span.h"

namespace md::bench::serve {

// One streamed message with content: when it came (seconds on the run's
// clock) and how many output tokens it carried.
struct Chunk {
  double at_s = 0;
  int tokens = 1;
};

// One request as the load generator saw it.
struct RequestRecord {
  std::string tenant;
  std::string skill;
  bool streamed = true;  // false: an E2EL only
  double send_s = 0;
  double end_s = 0;  // the last message (or the error) arrived
  std::vector<Chunk> chunks;
  int input_tokens = 0;
  int output_tokens = 0;
  bool ok = false;
  // The client abandoned it on purpose (--cancel_fraction): neither a
  // completion nor a failure.
  bool cancelled = false;
  // For failures: the gRPC code name or the HTTP status ("429").
  std::string error;
};

// A distribution in milliseconds.
struct Distribution {
  int count = 0;
  double mean = 0;
  double median = 0;
  double std = 0;                        // population
  std::map<double, double> percentiles;  // percentile (e.g. 99) -> value
};

// Service-level objectives for goodput, in milliseconds; unset ones do not
// count.
struct Slo {
  std::optional<double> ttft_ms;
  std::optional<double> tpot_ms;
  std::optional<double> e2el_ms;
  bool empty() const { return !ttft_ms && !tpot_ms && !e2el_ms; }
};

struct Summary {
  int completed = 0;
  int failed = 0;
  int cancelled = 0;  // by the client, on purpose
  double duration_s = 0;
  int64_t total_input_tokens = 0;
  int64_t total_output_tokens = 0;
  double request_throughput = 0;
  double output_throughput = 0;
  double total_token_throughput = 0;
  std::optional<double> request_goodput;  // only with an SLO
  Distribution ttft_ms;
  Distribution tpot_ms;
  Distribution itl_ms;
  Distribution e2el_ms;
  double max_output_tokens_per_s = 0;
  int max_concurrent_requests = 0;
  // Rates between the first and last event of their kind, (n - 1) / span:
  // how fast requests were sent and how fast they completed. Unlike
  // request_throughput they leave out the run's fixed start and drain, so
  // a server that keeps up completes at the rate it was sent to.
  double send_rate = 0;
  double completion_rate = 0;
  // Failures by gRPC code name or HTTP status.
  std::map<std::string, int> errors_by_code;
};

// Mean, median, population std and the given percentiles of `values`.
Distribution Describe(std::vector<double> values, absl::Span<const double> ps);

// The percentile `p` (0..100) of sorted values, interpolated linearly
// between closest ranks (numpy's default); 0 when empty.
double Percentile(absl::Span<const double> sorted, double p);

// The summary of `records` over a run of `duration_s` seconds.
Summary Summarize(absl::Span<const RequestRecord> records, double duration_s,
                  const Slo& slo, absl::Span<const double> percentiles);

// Whether a completed request meets every SLO that is set.
bool MeetsSlo(const RequestRecord& record, const Slo& slo);

// Jain's fairness index, (sum x)^2 / (n * sum x^2): 1 when all are equal,
// 1/n when one gets everything; 1 for no values or all zeros.
double JainIndex(absl::Span<const double> values);

struct TenantSummary {
  std::string tenant;
  Summary summary;
  int sent = 0;
  // Its fraction of all completed requests, and of all output tokens.
  double share_of_completed = 0;
  double share_of_output_tokens = 0;
  // completed / (sent - cancelled): how much of its own offered load it
  // was served.
  double served_fraction = 0;
};

struct TenantReport {
  std::vector<TenantSummary> tenants;  // by name
  // JainIndex of the tenants' served_fraction.
  double fairness = 1;
};

TenantReport SummarizeTenants(absl::Span<const RequestRecord> records,
                              double duration_s, const Slo& slo,
                              absl::Span<const double> percentiles);

}  // namespace md::bench::serve

#endif  // MOONDREAM_TOOLS_BENCH_SERVE_METRICS_H_
