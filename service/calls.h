// A skill request as the transports parse it, before the service builds an
// engine request from it (service.h): the same struct whether it came as
// gRPC (grpc_calls.h) or as HTTP JSON (http_api.h). Plain C++, no LibTorch,
// so that the parsing and the checks below are fuzzed on their own.
#ifndef MOONDREAM_SERVICE_CALLS_H_
#define MOONDREAM_SERVICE_CALLS_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "model/skills/skill_table.h"
#include "model/skills/skill_types.h"

namespace md::service {

// Either bytes or a handle (exactly one), sent by `tenant`: handles and
// cached image prefixes belong to the tenant that made them.
struct ImageRef {
  std::string bytes;
  std::string handle;
  std::string tenant;
};

// Optional fields take the skill's defaults.
struct TextSettings {
  std::optional<int> max_tokens;
  std::optional<float> temperature;
  std::optional<float> top_p;
  std::optional<float> min_p;
  std::optional<uint64_t> seed;
  bool ignore_eos = false;
};

struct GazeCall {
  Point eye;
  std::optional<FaceBox> face;
  bool prioritize_accuracy = false;
  uint64_t seed = 0;
  bool force_detect = false;
};

// One skill request; the fields a skill does not take stay at their
// defaults.
struct SkillCall {
  Skill skill = Skill::kCaption;
  ImageRef image;
  // The question (query) or the object (detect, point); checked and
  // tokenized by the service.
  std::string text;
  CaptionLength length = CaptionLength::kNormal;  // Caption.
  TextSettings settings;                          // Caption, query.
  std::optional<int> max_objects;                 // Detect, point.
  GazeCall gaze;                                  // Gaze.
};

// The wire's optional settings over the skill's defaults (limits:: table);
// the job factories check the values.
TextOptions TextOptionsOf(const TextSettings& settings);
// The gaze job's options; prioritize_accuracy without a face box is refused.
absl::StatusOr<GazeOptions> GazeOptionsOf(const GazeCall& call);
// detect and point: max_objects, or the default.
int MaxObjectsOf(const SkillCall& call);

// The skill fields of `call` under the rules its job factory applies
// (model/skills/checks.h), with `max_context` the model's context: what the
// service would refuse of these fields, without the model. The text, the
// image and the prompt it makes are the service's to check.
absl::Status CheckCall(const SkillCall& call, int max_context);

// A status payload naming the HTTP status that fits better than the code's
// usual one (413 for an image over the size limits, 415 for a body that is
// not JSON).
inline constexpr char kHttpStatusPayload[] = "moondream/http-status";

}  // namespace md::service

#endif  // MOONDREAM_SERVICE_CALLS_H_
