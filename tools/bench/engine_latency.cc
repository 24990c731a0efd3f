#include "tools/bench/engine_latency.h"

#include <utility>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/status_macros.h"
#include "tools/bench/engine_requests.h"
#include "tools/bench/stats.h"

namespace md::bench {

using scheduler::CollectingSink;
using scheduler::Engine;
using scheduler::EngineImage;

absl::StatusOr<Ttft> MeasureTtft(Engine& engine, const Model& model, int n_reps,
                                 uint64_t first_seed) {
  Ttft t;
  for (int rep = 0; rep < n_reps; ++rep) {
    ASSIGN_OR_RETURN(auto image, BenchImage(model, first_seed + rep));
    for (bool hit : {false, true}) {
      ASSIGN_OR_RETURN(auto results,
                       RunTogether(engine, {QueryRequest(model, image, 1)}));
      if (results[0].summary.image_cache_hit != hit) {
        return absl::InternalError("unexpected image cache outcome");
      }
      const double ms =
          absl::ToDoubleMilliseconds(results[0].summary.time_to_first);
      (hit ? t.hit_ms : t.miss_ms).push_back(ms);
    }
  }
  return t;
}

namespace {

std::vector<double> InterTokenGapsMs(
    const std::vector<CollectingSink::Result>& results) {
  std::vector<double> gaps;
  for (const auto& r : results) {
    for (size_t i = 1; i < r.token_times.size(); ++i) {
      gaps.push_back(
          absl::ToDoubleMilliseconds(r.token_times[i] - r.token_times[i - 1]));
    }
  }
  return gaps;
}

}  // namespace

// Their vision encode and prefix prefill run beside the streams.
absl::StatusOr<Itl> MeasureItl(Engine& engine, const Model& model,
                               std::shared_ptr<const EngineImage> warm,
                               const ItlPlan& plan, uint64_t first_seed) {
  Itl itl;
  std::vector<QuerySpec> streams(plan.n_streams,
                                 QueryRequest(model, warm, plan.n_tokens));
  ASSIGN_OR_RETURN(auto quiet, RunTogether(engine, streams));
  itl.quiet_ms = InterTokenGapsMs(quiet);

  std::vector<std::shared_ptr<const EngineImage>> images;
  for (int i = 0; i < plan.n_images; ++i) {
    ASSIGN_OR_RETURN(auto image, BenchImage(model, first_seed + i));
    images.push_back(std::move(image));
  }
  ASSIGN_OR_RETURN(auto sinks, SubmitAll(engine, streams));
  sinks[0]->WaitFirstOutput(kRequestTimeout);
  std::vector<std::shared_ptr<CollectingSink>> arrivals;
  for (auto& image : images) {
    absl::SleepFor(absl::Milliseconds(plan.interval_ms));
    if (sinks[0]->result().done) break;
    ASSIGN_OR_RETURN(auto arrived,
                     SubmitAll(engine, {QueryRequest(model, image, 1)}));
    arrivals.push_back(std::move(arrived[0]));
  }
  std::vector<CollectingSink::Result> results;
  for (auto& sink : sinks) {
    sink->WaitDone(kRequestTimeout);
    results.push_back(sink->result());
    RETURN_IF_ERROR(results.back().status);
  }
  const absl::Time streams_end = results[0].token_times.back();
  for (auto& sink : arrivals) {
    sink->WaitDone(kRequestTimeout);
    const CollectingSink::Result r = sink->result();
    RETURN_IF_ERROR(r.status);
    // Encoded while the streams ran: its first token came before their end.
    if (!r.token_times.empty() && r.token_times[0] < streams_end) {
      ++itl.images_arrived;
    }
  }
  itl.arrivals_ms = InterTokenGapsMs(results);
  return itl;
}

nlohmann::json LatencyJson(const std::vector<double>& ms) {
  return {{"n", ms.size()},
          {"p50_ms", Percentile(ms, 50)},
          {"p90_ms", Percentile(ms, 90)},
          {"p99_ms", Percentile(ms, 99)},
          {"max_ms", Percentile(ms, 100)}};
}

}  // namespace md::bench
