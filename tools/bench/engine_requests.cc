#include "tools/bench/engine_requests.h"

#include <iterator>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "model/skills/jobs.h"
#include "tools/bench/workload.h"

namespace md::bench {

using scheduler::CollectingSink;
using scheduler::Engine;
using scheduler::EngineImage;
using scheduler::Request;

absl::StatusOr<std::shared_ptr<const EngineImage>> BenchImage(
    const Model& model, uint64_t seed) {
  auto image = std::make_shared<EngineImage>();
  image->key = absl::StrCat("bench-image-", seed);
  ASSIGN_OR_RETURN(image->crops,
                   RandomCrops(model.config().vision, Tiling{1, 1}, seed));
  return std::shared_ptr<const EngineImage>(std::move(image));
}

QuerySpec QueryRequest(const Model& model,
                       std::shared_ptr<const EngineImage> image, int n_tokens) {
  return {std::move(image), n_tokens, &model.config()};
}

namespace {

absl::StatusOr<Request> ToRequest(const QuerySpec& spec) {
  Request r;
  r.image = spec.image;
  TextOptions options;
  options.max_tokens = spec.n_tokens;
  options.ignore_eos = true;  // Every stream decodes exactly n_tokens.
  ASSIGN_OR_RETURN(r.job,
                   MakeTextJob(*spec.config, Skill::kQuery,
                               {std::begin(kPromptIds), std::end(kPromptIds)},
                               options, /*tokenizer=*/nullptr));
  return r;
}

}  // namespace

absl::StatusOr<std::vector<std::shared_ptr<CollectingSink>>> SubmitAll(
    Engine& engine, const std::vector<QuerySpec>& specs) {
  std::vector<std::shared_ptr<CollectingSink>> sinks;
  for (const QuerySpec& spec : specs) {
    ASSIGN_OR_RETURN(Request r, ToRequest(spec));
    auto sink = std::make_shared<CollectingSink>();
    r.sink = sink;
    RETURN_IF_ERROR(engine.Submit(std::move(r)).status());
    sinks.push_back(std::move(sink));
  }
  return sinks;
}

absl::StatusOr<std::vector<CollectingSink::Result>> RunTogether(
    Engine& engine, const std::vector<QuerySpec>& requests) {
  ASSIGN_OR_RETURN(auto sinks, SubmitAll(engine, requests));
  std::vector<CollectingSink::Result> results;
  for (auto& sink : sinks) {
    if (!sink->WaitDone(kRequestTimeout)) {
      return absl::DeadlineExceededError("a benchmark request never ended");
    }
    results.push_back(sink->result());
    RETURN_IF_ERROR(results.back().status);
  }
  return results;
}

int64_t TokensOf(const std::vector<CollectingSink::Result>& results) {
  int64_t n = 0;
  for (const auto& r : results) n += static_cast<int64_t>(r.tokens.size());
  return n;
}

}  // namespace md::bench
