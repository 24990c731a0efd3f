// The load generator's arithmetic on a hand-made trace whose answers were
// worked out by hand (vLLM's definitions; see tools/bench/serve/metrics.h).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tools/bench/serve/metrics.h"

namespace md::bench::serve {
namespace {

using ::testing::ElementsAre;
using ::testing::Pair;

constexpr double kTol = 1e-9;

RequestRecord Streamed(std::string tenant, double send, std::vector<Chunk> c,
                       int input, int output) {
  RequestRecord r;
  r.tenant = std::move(tenant);
  r.skill = "query";
  r.send_s = send;
  r.chunks = std::move(c);
  r.end_s = r.chunks.back().at_s;
  r.input_tokens = input;
  r.output_tokens = output;
  r.ok = true;
  return r;
}

// A: 3 chunks, 4 tokens (TTFT 200, TPOT 100, ITL 100 and 200, E2EL 500).
// B: one token (TTFT 400, E2EL 400, no TPOT or ITL).
// C: a detect, not streamed (E2EL 1200 only).
// D: refused for overload.
std::vector<RequestRecord> Trace() {
  RequestRecord detect;
  detect.tenant = "b";
  detect.skill = "detect";
  detect.streamed = false;
  detect.send_s = 0.5;
  detect.end_s = 1.7;
  detect.input_tokens = 5;
  detect.output_tokens = 6;
  detect.ok = true;
  RequestRecord refused;
  refused.tenant = "b";
  refused.send_s = 1.2;
  refused.end_s = 1.25;
  refused.error = "RESOURCE_EXHAUSTED";
  return {Streamed("a", 0.0, {{0.2, 1}, {0.3, 1}, {0.5, 2}}, 10, 4),
          Streamed("a", 1.0, {{1.4, 1}}, 20, 1), detect, refused};
}

const std::vector<double> kPercentiles = {50, 90, 99};

TEST(ServeMetricsTest, CountsAndThroughputs) {
  const Summary s = Summarize(Trace(), 2.0, {}, kPercentiles);
  EXPECT_EQ(s.completed, 3);
  EXPECT_EQ(s.failed, 1);
  EXPECT_EQ(s.total_input_tokens, 35);
  EXPECT_EQ(s.total_output_tokens, 11);
  EXPECT_NEAR(s.request_throughput, 1.5, kTol);
  EXPECT_NEAR(s.output_throughput, 5.5, kTol);
  EXPECT_NEAR(s.total_token_throughput, 23.0, kTol);
  EXPECT_FALSE(s.request_goodput.has_value());
  EXPECT_THAT(s.errors_by_code, ElementsAre(Pair("RESOURCE_EXHAUSTED", 1)));
  // Sent at 0, 0.5, 1.0, 1.2: 3 gaps in 1.2 s. Completed at 0.5, 1.4, 1.7
  // (the refusal is no completion): 2 gaps in 1.2 s.
  EXPECT_NEAR(s.send_rate, 2.5, kTol);
  EXPECT_NEAR(s.completion_rate, 2 / 1.2, kTol);
}

TEST(ServeMetricsTest, LatencyDistributions) {
  const Summary s = Summarize(Trace(), 2.0, {}, kPercentiles);
  // TTFT: streamed answers only (A 200, B 400).
  EXPECT_EQ(s.ttft_ms.count, 2);
  EXPECT_NEAR(s.ttft_ms.mean, 300, kTol);
  EXPECT_NEAR(s.ttft_ms.median, 300, kTol);
  EXPECT_NEAR(s.ttft_ms.std, 100, kTol);
  EXPECT_NEAR(s.ttft_ms.percentiles.at(99), 398, kTol);
  // TPOT excludes the first token and one-token answers: A only.
  EXPECT_EQ(s.tpot_ms.count, 1);
  EXPECT_NEAR(s.tpot_ms.mean, 100, kTol);
  // ITL pools every gap between chunks: A's 100 and 200.
  EXPECT_EQ(s.itl_ms.count, 2);
  EXPECT_NEAR(s.itl_ms.mean, 150, kTol);
  EXPECT_NEAR(s.itl_ms.std, 50, kTol);
  // E2EL covers every completed request, the detect too (400, 500, 1200).
  EXPECT_EQ(s.e2el_ms.count, 3);
  EXPECT_NEAR(s.e2el_ms.mean, 700, kTol);
  EXPECT_NEAR(s.e2el_ms.median, 500, kTol);
  EXPECT_NEAR(s.e2el_ms.std, 355.90260840104371, 1e-9);
  EXPECT_NEAR(s.e2el_ms.percentiles.at(90), 1060, kTol);
}

TEST(ServeMetricsTest, PeaksPerSecond) {
  const Summary s = Summarize(Trace(), 2.0, {}, kPercentiles);
  // Second 0: A's 4 tokens; second 1: B's 1 and the detect's 6.
  EXPECT_NEAR(s.max_output_tokens_per_s, 7, kTol);
  // Second 1: B, the detect and the refused request.
  EXPECT_EQ(s.max_concurrent_requests, 3);
}

TEST(ServeMetricsTest, GoodputCountsRequestsMeetingEverySlo) {
  Slo slo;
  slo.ttft_ms = 300;
  slo.e2el_ms = 1000;
  // A meets both; B's TTFT and the detect's E2EL miss.
  EXPECT_NEAR(*Summarize(Trace(), 2.0, slo, kPercentiles).request_goodput, 0.5,
              kTol);
  Slo tpot;
  tpot.tpot_ms = 50;
  // Only A has a TPOT (100), and it misses; B and the detect have none.
  EXPECT_NEAR(*Summarize(Trace(), 2.0, tpot, kPercentiles).request_goodput, 1.0,
              kTol);
}

TEST(ServeMetricsTest, PercentilesInterpolateLinearly) {
  const std::vector<double> sorted = {1, 2, 3, 4};
  EXPECT_NEAR(Percentile(sorted, 0), 1, kTol);
  EXPECT_NEAR(Percentile(sorted, 50), 2.5, kTol);
  EXPECT_NEAR(Percentile(sorted, 75), 3.25, kTol);
  EXPECT_NEAR(Percentile(sorted, 100), 4, kTol);
  EXPECT_EQ(Percentile({}, 50), 0);
  EXPECT_EQ(Describe({}, kPercentiles).count, 0);
}

TEST(ServeMetricsTest, JainIndex) {
  EXPECT_NEAR(JainIndex({1, 1, 1, 1}), 1, kTol);
  EXPECT_NEAR(JainIndex({1, 0, 0, 0}), 0.25, kTol);
  EXPECT_NEAR(JainIndex({1, 0.5}), 0.9, kTol);
  EXPECT_NEAR(JainIndex({}), 1, kTol);
}

TEST(ServeMetricsTest, PerTenantSharesAndFairness) {
  const TenantReport r = SummarizeTenants(Trace(), 2.0, {}, kPercentiles);
  ASSERT_EQ(r.tenants.size(), 2u);
  const TenantSummary& a = r.tenants[0];
  const TenantSummary& b = r.tenants[1];
  EXPECT_EQ(a.tenant, "a");
  EXPECT_EQ(a.sent, 2);
  EXPECT_EQ(a.summary.completed, 2);
  EXPECT_NEAR(a.served_fraction, 1.0, kTol);
  EXPECT_NEAR(a.share_of_completed, 2.0 / 3, kTol);
  EXPECT_NEAR(a.share_of_output_tokens, 5.0 / 11, kTol);
  EXPECT_NEAR(a.summary.ttft_ms.mean, 300, kTol);
  EXPECT_EQ(b.tenant, "b");
  EXPECT_NEAR(b.served_fraction, 0.5, kTol);
  EXPECT_NEAR(b.share_of_output_tokens, 6.0 / 11, kTol);
  EXPECT_THAT(b.summary.errors_by_code,
              ElementsAre(Pair("RESOURCE_EXHAUSTED", 1)));
  // Served fractions 1 and 0.5.
  EXPECT_NEAR(r.fairness, 0.9, kTol);
}

// A stream the client abandoned on purpose is neither completed nor failed,
// adds nothing to the latencies, and does not count against its tenant's
// served fraction.
TEST(ServeMetricsTest, ClientCancellationsStandApart) {
  std::vector<RequestRecord> trace = Trace();
  RequestRecord abandoned = Streamed("a", 0.1, {{0.15, 1}, {0.2, 1}}, 10, 0);
  abandoned.ok = false;
  abandoned.cancelled = true;
  abandoned.error = "CANCELLED";
  trace.push_back(abandoned);
  const Summary s = Summarize(trace, 2.0, {}, kPercentiles);
  EXPECT_EQ(s.completed, 3);
  EXPECT_EQ(s.failed, 1);
  EXPECT_EQ(s.cancelled, 1);
  EXPECT_THAT(s.errors_by_code, ElementsAre(Pair("RESOURCE_EXHAUSTED", 1)));
  EXPECT_EQ(s.ttft_ms.count, 2);
  EXPECT_NEAR(s.ttft_ms.mean, 300, kTol);
  const TenantReport r = SummarizeTenants(trace, 2.0, {}, kPercentiles);
  ASSERT_EQ(r.tenants.size(), 2u);
  EXPECT_EQ(r.tenants[0].sent, 3);
  EXPECT_NEAR(r.tenants[0].served_fraction, 1.0, kTol);
  EXPECT_NEAR(r.fairness, 0.9, kTol);
}

}  // namespace
}  // namespace md::bench::serve
