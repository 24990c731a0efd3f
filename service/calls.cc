#include "service/calls.h"

#include "base/status_macros.h"
#include "model/skills/checks.h"

namespace md::service {

TextOptions TextOptionsOf(const TextSettings& settings) {
  TextOptions options;
  if (settings.max_tokens) options.max_tokens = *settings.max_tokens;
  if (settings.temperature)
    options.sampling.temperature = *settings.temperature;
  if (settings.top_p) options.sampling.top_p = *settings.top_p;
  if (settings.min_p) options.sampling.min_p = *settings.min_p;
  if (settings.seed) options.sampling.seed = *settings.seed;
  options.ignore_eos = settings.ignore_eos;
  return options;
}

absl::StatusOr<GazeOptions> GazeOptionsOf(const GazeCall& call) {
  if (call.prioritize_accuracy && !call.face) {
    return absl::InvalidArgumentError("prioritize_accuracy needs the face box");
  }
  GazeOptions options{
      .eye = call.eye, .seed = call.seed, .force_detect = call.force_detect};
  // A face sent without prioritize_accuracy is ignored: the eye decides.
  if (call.prioritize_accuracy) options.face = call.face;
  return options;
}

int MaxObjectsOf(const SkillCall& call) {
  return call.max_objects.value_or(limits::kDefaultMaxObjects);
}

absl::Status CheckCall(const SkillCall& call, int max_context) {
  switch (call.skill) {
    case Skill::kCaption:
    case Skill::kQuery:
      return CheckTextOptions(TextOptionsOf(call.settings), max_context);
    case Skill::kDetect:
    case Skill::kPoint:
      return CheckMaxObjects(MaxObjectsOf(call));
    case Skill::kGaze: {
      ASSIGN_OR_RETURN(GazeOptions options, GazeOptionsOf(call.gaze));
      return CheckGazeOptions(options);
    }
  }
  return absl::InvalidArgumentError("unknown skill");
}

}  // namespace md::service
