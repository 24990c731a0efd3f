#include "tools/bench/serve/metrics.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace md::bench::serve {
namespace {

constexpr double kMsPerS = 1000.0;

double TtftMs(const RequestRecord& r) {
  return (r.chunks.front().at_s - r.send_s) * kMsPerS;
}

double E2elMs(const RequestRecord& r) { return (r.end_s - r.send_s) * kMsPerS; }

bool HasTtft(const RequestRecord& r) { return r.streamed && !r.chunks.empty(); }

bool HasTpot(const RequestRecord& r) {
  return HasTtft(r) && r.output_tokens > 1;
}

double TpotMs(const RequestRecord& r) {
  return (E2elMs(r) - TtftMs(r)) / (r.output_tokens - 1);
}

// The 1-second bucket of a time on the run's clock.
int64_t Bucket(double at_s) {
  return static_cast<int64_t>(std::floor(std::max(at_s, 0.0)));
}

// Output tokens that arrived in each second (streamed chunks when they came;
// a whole answer when it came).
double PeakOutputTokensPerSecond(absl::Span<const RequestRecord> records) {
  std::map<int64_t, double> tokens;
  for (const RequestRecord& r : records) {
    if (!r.ok) continue;
    if (r.streamed && !r.chunks.empty()) {
      for (const Chunk& c : r.chunks) tokens[Bucket(c.at_s)] += c.tokens;
    } else {
      tokens[Bucket(r.end_s)] += r.output_tokens;
    }
  }
  double peak = 0;
  for (const auto& [bucket, n] : tokens) peak = std::max(peak, n);
  return peak;
}

// Requests in flight at some point of each second, sent to answered.
int PeakConcurrency(absl::Span<const RequestRecord> records) {
  std::map<int64_t, int> active;
  for (const RequestRecord& r : records) {
    for (int64_t b = Bucket(r.send_s); b <= Bucket(r.end_s); ++b) ++active[b];
  }
  int peak = 0;
  for (const auto& [bucket, n] : active) peak = std::max(peak, n);
  return peak;
}

}  // namespace

// (n - 1) / (last - first): events per second across their own span.
double SpanRate(absl::Span<const double> times) {
  if (times.size() < 2) return 0;
  const auto [first, last] = std::minmax_element(times.begin(), times.end());
  return *last > *first ? (times.size() - 1) / (*last - *first) : 0;
}

double Percentile(absl::Span<const double> sorted, double p) {
  if (sorted.empty()) return 0;
  const double rank = std::clamp(p, 0.0, 100.0) / 100.0 * (sorted.size() - 1);
  const size_t below = static_cast<size_t>(std::floor(rank));
  const size_t above = std::min(below + 1, sorted.size() - 1);
  const double frac = rank - below;
  return sorted[below] + (sorted[above] - sorted[below]) * frac;
}

Distribution Describe(std::vector<double> values, absl::Span<const double> ps) {
  Distribution d;
  d.count = static_cast<int>(values.size());
  if (values.empty()) {
    for (double p : ps) d.percentiles[p] = 0;
    return d;
  }
  std::sort(values.begin(), values.end());
  d.mean = std::accumulate(values.begin(), values.end(), 0.0) / values.size();
  double squares = 0;
  for (double v : values) squares += (v - d.mean) * (v - d.mean);
  d.std = std::sqrt(squares / values.size());
  d.median = Percentile(values, 50);
  for (double p : ps) d.percentiles[p] = Percentile(values, p);
  return d;
}

bool MeetsSlo(const RequestRecord& r, const Slo& slo) {
  if (!r.ok) return false;
  // A metric a request does not have (TTFT of a detect, TPOT of a one-token
  // answer) cannot fail its SLO, as in vLLM.
  if (slo.ttft_ms && HasTtft(r) && TtftMs(r) > *slo.ttft_ms) return false;
  if (slo.tpot_ms && HasTpot(r) && TpotMs(r) > *slo.tpot_ms) return false;
  if (slo.e2el_ms && E2elMs(r) > *slo.e2el_ms) return false;
  return true;
}

Summary Summarize(absl::Span<const RequestRecord> records, double duration_s,
                  const Slo& slo, absl::Span<const double> percentiles) {
  Summary s;
  s.duration_s = duration_s;
  std::vector<double> ttft, tpot, itl, e2el, sends, completions;
  int good = 0;
  for (const RequestRecord& r : records) {
    sends.push_back(r.send_s);
    if (r.cancelled) {
      ++s.cancelled;
      continue;
    }
    if (!r.ok) {
      ++s.failed;
      ++s.errors_by_code[r.error.empty() ? "UNKNOWN" : r.error];
      continue;
    }
    ++s.completed;
    completions.push_back(r.end_s);
    s.total_input_tokens += r.input_tokens;
    s.total_output_tokens += r.output_tokens;
    e2el.push_back(E2elMs(r));
    if (HasTtft(r)) {
      ttft.push_back(TtftMs(r));
      for (size_t i = 1; i < r.chunks.size(); ++i) {
        itl.push_back((r.chunks[i].at_s - r.chunks[i - 1].at_s) * kMsPerS);
      }
    }
    if (HasTpot(r)) tpot.push_back(TpotMs(r));
    if (MeetsSlo(r, slo)) ++good;
  }
  if (duration_s > 0) {
    s.request_throughput = s.completed / duration_s;
    s.output_throughput = s.total_output_tokens / duration_s;
    s.total_token_throughput =
        (s.total_input_tokens + s.total_output_tokens) / duration_s;
    if (!slo.empty()) s.request_goodput = good / duration_s;
  }
  s.ttft_ms = Describe(std::move(ttft), percentiles);
  s.tpot_ms = Describe(std::move(tpot), percentiles);
  s.itl_ms = Describe(std::move(itl), percentiles);
  s.e2el_ms = Describe(std::move(e2el), percentiles);
  s.max_output_tokens_per_s = PeakOutputTokensPerSecond(records);
  s.max_concurrent_requests = PeakConcurrency(records);
  s.send_rate = SpanRate(sends);
  s.completion_rate = SpanRate(completions);
  return s;
}

double JainIndex(absl::Span<const double> values) {
  double sum = 0, squares = 0;
  for (double v : values) {
    sum += v;
    squares += v * v;
  }
  if (values.empty() || squares == 0) return 1;
  return sum * sum / (values.size() * squares);
}

TenantReport SummarizeTenants(absl::Span<const RequestRecord> records,
                              double duration_s, const Slo& slo,
                              absl::Span<const double> percentiles) {
  std::map<std::string, std::vector<RequestRecord>> by_tenant;
  int completed = 0;
  int64_t output_tokens = 0;
  for (const RequestRecord& r : records) {
    by_tenant[r.tenant].push_back(r);
    if (r.ok) {
      ++completed;
      output_tokens += r.output_tokens;
    }
  }
  TenantReport report;
  std::vector<double> served;
  for (const auto& [tenant, own] : by_tenant) {
    TenantSummary t;
    t.tenant = tenant;
    t.summary = Summarize(own, duration_s, slo, percentiles);
    t.sent = static_cast<int>(own.size());
    if (completed > 0) {
      t.share_of_completed =
          static_cast<double>(t.summary.completed) / completed;
    }
    if (output_tokens > 0) {
      t.share_of_output_tokens =
          static_cast<double>(t.summary.total_output_tokens) / output_tokens;
    }
    const int wanted = t.sent - t.summary.cancelled;
    t.served_fraction =
        wanted > 0 ? static_cast<double>(t.summary.completed) / wanted : 0;
    served.push_back(t.served_fraction);
    report.tenants.push_back(std::move(t));
  }
  report.fairness = JainIndex(served);
  return report;
}

}  // namespace md::bench::serve
