// The plain values a skill request carries and a skill answers with:
// coordinates, the caption length, sampling and the per-skill options. No
// LibTorch here, so the transports' request parsing (and its fuzzers) can
// use them without the model.
#ifndef MOONDREAM_MODEL_SKILLS_SKILL_TYPES_H_
#define MOONDREAM_MODEL_SKILLS_SKILL_TYPES_H_

#include <cstdint>
#include <optional>

#include "model/skills/skill_table.h"

namespace md {

// Coordinates are fractions of the image's width and height.
struct Box {
  double x_min = 0, y_min = 0, x_max = 0, y_max = 0;
};
struct Point {
  double x = 0, y = 0;
};
struct FaceBox {
  double x_min = 0, y_min = 0, x_max = 0, y_max = 0;
};

enum class CaptionLength { kShort, kNormal };

struct SamplingParams {
  // 0 is greedy (the first maximum); the other fields are then ignored.
  float temperature = 0.0f;
  // Keep the smallest set of most likely tokens whose probability sums to at
  // least top_p (1 keeps all).
  float top_p = 1.0f;
  // Drop tokens less likely than min_p × the most likely one (0 keeps all).
  float min_p = 0.0f;
  uint64_t seed = 0;
};

// Caption and query.
struct TextOptions {
  int max_tokens = limits::kDefaultMaxTokens;
  SamplingParams sampling;
  // Generate exactly max_tokens, eos or not (load tests, as vLLM's).
  bool ignore_eos = false;
};

struct GazeOptions {
  Point eye;                      // Where the eye is (one probe).
  std::optional<FaceBox> face{};  // Set: prioritize_accuracy (20 probes).
  uint64_t seed = 0;              // For the accurate probes' eye positions.
  bool force_detect = false;
};

}  // namespace md

#endif  // MOONDREAM_MODEL_SKILLS_SKILL_TYPES_H_
