// A model directory as users hand it to the tools and the server:
// model.safetensors (either layout), optional config.json, tokenizer.json,
// an optional RANDOM-WEIGHTS marker for test models whose answers are
// meaningless, and an optional DEMO-MODEL file saying what a demo model
// (trained here, not Moondream's weights) can answer. Random-weight directories
// in the real shapes are written here too (moondream-bench make-model), for
// load tests without downloads.
#ifndef MOONDREAM_MODEL_BUNDLE_H_
#define MOONDREAM_MODEL_BUNDLE_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "model/config/config.h"
#include "model/io/weights.h"
#include "model/net/moondream.h"
#include "model/skills/skills.h"
#include "model/tokenizer/tokenizer.h"

namespace md {

inline constexpr char kRandomWeightsMarker[] = "RANDOM-WEIGHTS";
inline constexpr char kDemoModelMarker[] = "DEMO-MODEL";

struct ModelBundle {
  std::string dir;
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tokenizer;
  GazePromptIds gaze_ids;  // "\n\nPoint:" and " gaze\n\n" in this tokenizer
  // The directory says its weights are random: answers are meaningless.
  bool random_weights = false;
  // The DEMO-MODEL file's text (what the model is and what it can answer);
  // empty for other models.
  std::string demo_description;
  // The config matches a released Moondream size (moondream2 or 0.5B).
  bool released_shape = false;
};

// `preset` ("moondream2", "moondream-0.5b") gives the defaults that a
// config.json in the directory overrides.
absl::StatusOr<ModelBundle> LoadModelBundle(const std::string& dir,
                                            const std::string& preset,
                                            const ModelOptions& options);

// Writes a model directory that LoadModelBundle loads, flagged random: the
// RANDOM-WEIGHTS marker holding `marker_text` (written first, so even a run
// that stops halfway leaves the directory flagged), config.json for
// `config`, tokenizer.json copied from `tokenizer_path`, and
// model.safetensors with `weights` in the Hugging Face layout and their own
// dtype. Creates `dir` when needed; refuses one that holds anything but an
// earlier random-weights model, so real weights are never overwritten.
absl::Status WriteRandomModelDirectory(const std::string& dir,
                                       const MoondreamConfig& config,
                                       const Weights& weights,
                                       const std::string& tokenizer_path,
                                       const std::string& marker_text);

// One line for logs and start-up banners, with a plain warning when the
// answers cannot mean anything.
std::string DescribeBundle(const ModelBundle& bundle);

}  // namespace md

#endif  // MOONDREAM_MODEL_BUNDLE_H_
