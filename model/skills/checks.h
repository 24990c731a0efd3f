// The rules a request's skill fields must meet, against skill_table.h's
// limits. The job factories (jobs.h) apply them, so a job that exists is
// valid; they live apart from the jobs, without LibTorch, so that the
// transports' fuzzers can ask the same questions of what they parse.
//
// Each check is InvalidArgument naming the field and the allowed range.
#ifndef MOONDREAM_MODEL_SKILLS_CHECKS_H_
#define MOONDREAM_MODEL_SKILLS_CHECKS_H_

#include "absl/status/status.h"
#include "model/skills/skill_types.h"

namespace md {

// max_tokens in [1, room], room being the positions a request may use.
absl::Status CheckMaxTokens(int max_tokens, int room);
// Finite temperature in [0, limits::kMaxTemperature], top_p in (0, 1],
// min_p in [0, 1].
absl::Status CheckSampling(const SamplingParams& params);
// max_objects in [1, limits::kMaxObjects].
absl::Status CheckMaxObjects(int max_objects);
// x and y finite, in [0, 1].
absl::Status CheckEye(Point eye);
// Every edge finite, in [0, 1], and x_min <= x_max, y_min <= y_max.
absl::Status CheckFace(const FaceBox& face);

// What a caption or query job checks: CheckMaxTokens, then CheckSampling.
absl::Status CheckTextOptions(const TextOptions& options, int room);
// What a gaze job checks: the face when one is set (the eye is then
// unused), else the eye.
absl::Status CheckGazeOptions(const GazeOptions& options);

}  // namespace md

#endif  // MOONDREAM_MODEL_SKILLS_CHECKS_H_
