// `moondream-bench train`: trains a tiny Moondream on synthetic scenes
// (issue 14; tools/train/trainer.h) and writes a model directory the server
// and `moondream-bench scenes-eval` load.
#ifndef MOONDREAM_TOOLS_BENCH_TRAIN_H_
#define MOONDREAM_TOOLS_BENCH_TRAIN_H_

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace md::bench {

absl::Status RunTrain(const std::vector<std::string>& args);

// `moondream-bench feature-probe`: linear probes of each shape's box on a
// model's image features (tools/train/feature_probe.h), a training
// diagnostic.
absl::Status RunFeatureProbe(const std::vector<std::string>& args);

}  // namespace md::bench

#endif  // MOONDREAM_TOOLS_BENCH_TRAIN_H_
