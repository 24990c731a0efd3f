// Synthetic shape scenes for a tiny Moondream (issue 14; tools/scenes/):
//
//   moondream-bench scenes --count=N --seed=S --out=DIR
//       writes DIR/scene_NNNNN.png and DIR/truth.json
//   moondream-bench scenes-eval --model=DIR --count=200 --seed=S
//       runs the model's skills on fresh scenes and reports accuracy
//       against issue 14's targets
//
// Scene i of a set is GenerateScene(SceneSeed(S, i)) in both, so the scenes
// an evaluation got wrong can be written out and looked at.
#ifndef MOONDREAM_TOOLS_BENCH_SCENES_H_
#define MOONDREAM_TOOLS_BENCH_SCENES_H_

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace md::bench {

// `args` are the flags after the subcommand's name.
absl::Status RunScenes(const std::vector<std::string>& args);
absl::Status RunScenesEval(const std::vector<std::string>& args);

}  // namespace md::bench

#endif  // MOONDREAM_TOOLS_BENCH_SCENES_H_
