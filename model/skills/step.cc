#include "model/skills/step.h"

#include <vector>

#include "base/status_macros.h"
#include "model/io/tensor_io.h"

namespace md {

absl::Status StepRuns(const Model& model, KvCache& cache,
                      absl::Span<ActiveRun> runs, const StepObserver& observe) {
  std::vector<size_t> stepping;
  std::vector<Feed> feeds;
  for (size_t i = 0; i < runs.size(); ++i) {
    if (runs[i].run->done()) continue;
    ASSIGN_OR_RETURN(StepInput in, runs[i].run->Next(model));
    feeds.push_back({runs[i].slot, runs[i].pos, std::move(in.embeds_TC),
                     in.mask, in.heads});
    stepping.push_back(i);
  }
  if (stepping.empty()) return absl::OkStatus();
  ASSIGN_OR_RETURN(std::vector<StepOutput> outputs,
                   ForwardFeeds(model, cache, feeds));
  return CatchTorchStatus("accepting step outputs", [&] {
    for (size_t k = 0; k < stepping.size(); ++k) {
      ActiveRun& active = runs[stepping[k]];
      active.pos += static_cast<int>(feeds[k].embeds_TC.size(0));
      if (observe) observe(stepping[k], outputs[k]);
      active.run->Accept(outputs[k]);
    }
  });
}

absl::Status RunToCompletion(const Model& model, KvCache& cache,
                             absl::Span<ActiveRun> runs,
                             const StepObserver& observe) {
  auto any_running = [&] {
    for (const ActiveRun& r : runs) {
      if (!r.run->done()) return true;
    }
    return false;
  };
  while (any_running()) RETURN_IF_ERROR(StepRuns(model, cache, runs, observe));
  return absl::OkStatus();
}

}  // namespace md
