// What must hold of a SkillCall (service/calls.h) that a transport parsed,
// for the request fuzzers (http_request_fuzz, grpc_request_fuzz). The limits
// are restated here from skill_table.h's table, not taken from checks.cc, so
// that a check that lets a bad value through is caught.
#ifndef MOONDREAM_TESTS_FUZZ_CALL_INVARIANTS_H_
#define MOONDREAM_TESTS_FUZZ_CALL_INVARIANTS_H_

#include <cmath>

#include "absl/status/status.h"
#include "model/skills/skill_table.h"
#include "service/calls.h"
#include "tests/fuzz/fuzz_check.h"

namespace md::fuzz {

// The context CheckCall is asked about (moondream2's).
inline constexpr int kMaxContext = 2048;

inline bool InUnitRange(double v) {
  return std::isfinite(v) && v >= 0 && v <= 1;
}

// A refusal of what a client sent: InvalidArgument, saying why.
inline void CheckRefusal(const absl::Status& status) {
  FUZZ_CHECK_MSG(status.code() == absl::StatusCode::kInvalidArgument,
                 status.ToString());
  FUZZ_CHECK(!status.message().empty());
}

inline void CheckTextValues(const service::SkillCall& call) {
  const TextOptions options = service::TextOptionsOf(call.settings);
  FUZZ_CHECK(options.max_tokens >= 1 && options.max_tokens <= kMaxContext);
  if (!call.settings.max_tokens.has_value()) {
    FUZZ_CHECK(options.max_tokens == limits::kDefaultMaxTokens);
  }
  const SamplingParams& s = options.sampling;
  FUZZ_CHECK(std::isfinite(s.temperature) && s.temperature >= 0 &&
             s.temperature <= limits::kMaxTemperature);
  FUZZ_CHECK(s.top_p > 0 && s.top_p <= 1);
  FUZZ_CHECK(s.min_p >= 0 && s.min_p <= 1);
}

inline void CheckGazeValues(const service::GazeCall& gaze) {
  if (gaze.prioritize_accuracy) {
    FUZZ_CHECK(gaze.face.has_value());
    const FaceBox& f = *gaze.face;
    FUZZ_CHECK(InUnitRange(f.x_min) && InUnitRange(f.y_min) &&
               InUnitRange(f.x_max) && InUnitRange(f.y_max));
    FUZZ_CHECK(f.x_min <= f.x_max && f.y_min <= f.y_max);
  } else {
    FUZZ_CHECK(InUnitRange(gaze.eye.x) && InUnitRange(gaze.eye.y));
  }
}

// `call` as a transport hands it to the service: at most one image source
// and no tenant yet; if CheckCall accepts its skill fields, they are within
// the limits, and if it refuses them, it says why.
inline void CheckParsedCall(const service::SkillCall& call) {
  FUZZ_CHECK(call.image.bytes.empty() || call.image.handle.empty());
  FUZZ_CHECK(call.image.tenant.empty());
  const absl::Status status = service::CheckCall(call, kMaxContext);
  if (!status.ok()) {
    CheckRefusal(status);
    return;
  }
  switch (call.skill) {
    case Skill::kCaption:
    case Skill::kQuery:
      CheckTextValues(call);
      break;
    case Skill::kDetect:
    case Skill::kPoint: {
      const int max_objects = service::MaxObjectsOf(call);
      FUZZ_CHECK(max_objects >= 1 && max_objects <= limits::kMaxObjects);
      break;
    }
    case Skill::kGaze:
      CheckGazeValues(call.gaze);
      break;
  }
}

}  // namespace md::fuzz

#endif  // MOONDREAM_TESTS_FUZZ_CALL_INVARIANTS_H_
