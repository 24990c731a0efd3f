// A quick held-out check during training: a model directory loaded the way
// the server loads it, asked every question of a few scenes through the
// served skills (greedy), scored with scenes-eval's metrics
// (tools/scenes/metrics.h). `moondream-bench scenes-eval` is the full one.
#ifndef MOONDREAM_TOOLS_TRAIN_SKILL_EVAL_H_
#define MOONDREAM_TOOLS_TRAIN_SKILL_EVAL_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "model/bundle.h"
#include "tools/scenes/metrics.h"

namespace md::train {

struct SkillEval {
  scenes::EvalTally tally;
  int questions = 0;
  int all_right = 0;  // questions answered entirely right
};

// Scenes SceneSeed(base_seed, 0 .. count−1).
absl::StatusOr<SkillEval> EvaluateSkills(const ModelBundle& bundle,
                                         uint64_t base_seed, int count,
                                         int max_tokens);

}  // namespace md::train

#endif  // MOONDREAM_TOOLS_TRAIN_SKILL_EVAL_H_
