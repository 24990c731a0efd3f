// Drives skill runs through the decoder: one step feeds every unfinished
// run's next input in one batched forward, evaluates the requested heads in
// one batch per head, and hands each run its rows. The single-request skills
// use it with one run (or 20 gaze probes); the engine with many.
#ifndef MOONDREAM_MODEL_SKILLS_STEP_H_
#define MOONDREAM_MODEL_SKILLS_STEP_H_

#include <functional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "model/net/feeds.h"
#include "model/net/kv_cache.h"
#include "model/net/moondream.h"
#include "model/skills/runs.h"

namespace md {

struct ActiveRun {
  SkillRun* run = nullptr;
  int slot = 0;
  int pos = 0;  // next position to write in the slot
};

// Sees every run's head outputs after each step (tests compare them with the
// reference's logits); index is into the span given to StepRuns.
using StepObserver = std::function<void(size_t index, const StepOutput& out)>;

// One decoder step for every run that is not done.
absl::Status StepRuns(const Model& model, KvCache& cache,
                      absl::Span<ActiveRun> runs,
                      const StepObserver& observe = {});

// Steps until every run is done.
absl::Status RunToCompletion(const Model& model, KvCache& cache,
                             absl::Span<ActiveRun> runs,
                             const StepObserver& observe = {});

}  // namespace md

#endif  // MOONDREAM_MODEL_SKILLS_STEP_H_
