// What `moondream-bench engine` sends: query requests on images of random
// pixels, each decoding exactly its n tokens (eos ignored) after the same
// 20-token prompt, submitted straight to an Engine with a collecting sink.
#ifndef MOONDREAM_TOOLS_BENCH_ENGINE_REQUESTS_H_
#define MOONDREAM_TOOLS_BENCH_ENGINE_REQUESTS_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "model/config/config.h"
#include "model/net/moondream.h"
#include "scheduler/engine.h"
#include "scheduler/request.h"

namespace md::bench {

// How long any benchmark request may take before the run gives up.
inline constexpr absl::Duration kRequestTimeout = absl::Minutes(30);

// One image the benchmark sends (random pixels, 1x1 tiling: key by seed).
absl::StatusOr<std::shared_ptr<const scheduler::EngineImage>> BenchImage(
    const Model& model, uint64_t seed);

// The benchmark's one request shape. Specs are copied freely; each becomes
// a request (its job is not copyable) when submitted.
struct QuerySpec {
  std::shared_ptr<const scheduler::EngineImage> image;
  int n_tokens = 1;
  const MoondreamConfig* config = nullptr;  // for building the job
};
QuerySpec QueryRequest(const Model& model,
                       std::shared_ptr<const scheduler::EngineImage> image,
                       int n_tokens);

// Submits every request with a sink of its own; returns the sinks.
absl::StatusOr<std::vector<std::shared_ptr<scheduler::CollectingSink>>>
SubmitAll(scheduler::Engine& engine, const std::vector<QuerySpec>& specs);

// Submits all requests at once and waits for every one.
absl::StatusOr<std::vector<scheduler::CollectingSink::Result>> RunTogether(
    scheduler::Engine& engine, const std::vector<QuerySpec>& requests);

int64_t TokensOf(const std::vector<scheduler::CollectingSink::Result>& results);

}  // namespace md::bench

#endif  // MOONDREAM_TOOLS_BENCH_ENGINE_REQUESTS_H_
