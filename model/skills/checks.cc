#include "model/skills/checks.h"

#include <cmath>
#include <initializer_list>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace md {
namespace {

bool InUnitRange(double v) { return std::isfinite(v) && v >= 0 && v <= 1; }

// "eye.x must be a number in [0, 1], got 1.5" for the first bad field.
absl::Status CheckUnitFields(
    std::initializer_list<std::pair<const char*, double>> fields) {
  for (const auto& [name, value] : fields) {
    if (!InUnitRange(value)) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, " must be a number in [0, 1], got ", value));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckMaxTokens(int max_tokens, int room) {
  if (max_tokens < 1 || max_tokens > room) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_tokens must be in [1, ", room, "], got ", max_tokens));
  }
  return absl::OkStatus();
}

absl::Status CheckSampling(const SamplingParams& params) {
  if (!std::isfinite(params.temperature) || params.temperature < 0 ||
      params.temperature > limits::kMaxTemperature) {
    return absl::InvalidArgumentError(
        absl::StrCat("temperature must be in [0, ", limits::kMaxTemperature,
                     "], got ", params.temperature));
  }
  // Written so that NaN fails too.
  if (!(params.top_p > 0 && params.top_p <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_p must be in (0, 1], got ", params.top_p));
  }
  if (!(params.min_p >= 0 && params.min_p <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("min_p must be in [0, 1], got ", params.min_p));
  }
  return absl::OkStatus();
}

absl::Status CheckMaxObjects(int max_objects) {
  if (max_objects < 1 || max_objects > limits::kMaxObjects) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_objects must be in [1, ", limits::kMaxObjects,
                     "], got ", max_objects));
  }
  return absl::OkStatus();
}

absl::Status CheckEye(Point eye) {
  return CheckUnitFields({{"eye.x", eye.x}, {"eye.y", eye.y}});
}

absl::Status CheckFace(const FaceBox& face) {
  RETURN_IF_ERROR(CheckUnitFields({{"face.x_min", face.x_min},
                                   {"face.y_min", face.y_min},
                                   {"face.x_max", face.x_max},
                                   {"face.y_max", face.y_max}}));
  if (face.x_min > face.x_max || face.y_min > face.y_max) {
    return absl::InvalidArgumentError(
        "face must have x_min <= x_max and y_min <= y_max");
  }
  return absl::OkStatus();
}

absl::Status CheckTextOptions(const TextOptions& options, int room) {
  RETURN_IF_ERROR(CheckMaxTokens(options.max_tokens, room));
  return CheckSampling(options.sampling);
}

absl::Status CheckGazeOptions(const GazeOptions& options) {
  if (options.face.has_value()) return CheckFace(*options.face);
  return CheckEye(options.eye);
}

}  // namespace md
