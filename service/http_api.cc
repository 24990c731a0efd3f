#include "service/http_api.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace md::service {
namespace {

// A JSON field of the expected kind, or an error naming it; absent and null
// are the same.
absl::StatusOr<std::optional<std::string>> StringField(const Json& obj,
                                                       const char* name) {
  auto it = obj.find(name);
  if (it == obj.end() || it->is_null()) return std::nullopt;
  if (!it->is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(name, " must be a string"));
  }
  return it->get<std::string>();
}

absl::StatusOr<std::optional<double>> NumberField(const Json& obj,
                                                  const char* name) {
  auto it = obj.find(name);
  if (it == obj.end() || it->is_null()) return std::nullopt;
  if (!it->is_number()) {
    return absl::InvalidArgumentError(absl::StrCat(name, " must be a number"));
  }
  return it->get<double>();
}

absl::StatusOr<std::optional<int>> IntField(const Json& obj, const char* name) {
  ASSIGN_OR_RETURN(std::optional<double> v, NumberField(obj, name));
  if (!v) return std::nullopt;
  if (*v != std::floor(*v)) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " must be an integer"));
  }
  // Out-of-range integers saturate: the limits table then says the range.
  return static_cast<int>(std::clamp<double>(
      *v, std::numeric_limits<int>::min(), std::numeric_limits<int>::max()));
}

// Any uint64, as over gRPC.
absl::StatusOr<std::optional<uint64_t>> SeedField(const Json& obj,
                                                  const char* name,
                                                  const char* label) {
  auto it = obj.find(name);
  if (it == obj.end() || it->is_null()) return std::nullopt;
  if (!it->is_number_unsigned()) {
    return absl::InvalidArgumentError(
        absl::StrCat(label, " must be a non-negative integer"));
  }
  return it->get<uint64_t>();
}

absl::StatusOr<bool> BoolField(const Json& obj, const char* name) {
  auto it = obj.find(name);
  if (it == obj.end() || it->is_null()) return false;
  if (!it->is_boolean()) {
    return absl::InvalidArgumentError(absl::StrCat(name, " must be a boolean"));
  }
  return it->get<bool>();
}

absl::StatusOr<Json> ObjectField(const Json& obj, const char* name) {
  auto it = obj.find(name);
  if (it == obj.end() || it->is_null()) return Json::object();
  if (!it->is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(name, " must be an object"));
  }
  return *it;
}

absl::StatusOr<ImageRef> ImageOf(const Json& body) {
  ASSIGN_OR_RETURN(std::optional<std::string> url,
                   StringField(body, "image_url"));
  if (!url || url->empty()) {
    return absl::InvalidArgumentError("image_url is missing");
  }
  ImageRef ref;
  if (absl::StartsWith(*url, "handle:")) {
    ref.handle = url->substr(7);
    return ref;
  }
  ASSIGN_OR_RETURN(ref.bytes, DecodeDataUrl(*url));
  return ref;
}

absl::StatusOr<TextSettings> TextSettingsOf(const Json& body) {
  ASSIGN_OR_RETURN(Json s, ObjectField(body, "settings"));
  TextSettings out;
  ASSIGN_OR_RETURN(out.max_tokens, IntField(s, "max_tokens"));
  ASSIGN_OR_RETURN(std::optional<double> temperature,
                   NumberField(s, "temperature"));
  ASSIGN_OR_RETURN(std::optional<double> top_p, NumberField(s, "top_p"));
  ASSIGN_OR_RETURN(std::optional<double> min_p, NumberField(s, "min_p"));
  if (temperature) out.temperature = static_cast<float>(*temperature);
  if (top_p) out.top_p = static_cast<float>(*top_p);
  if (min_p) out.min_p = static_cast<float>(*min_p);
  ASSIGN_OR_RETURN(out.seed, SeedField(s, "seed", "settings.seed"));
  ASSIGN_OR_RETURN(out.ignore_eos, BoolField(s, "ignore_eos"));
  return out;
}

absl::StatusOr<Point> PointOf(const Json& body, const char* name) {
  ASSIGN_OR_RETURN(Json p, ObjectField(body, name));
  ASSIGN_OR_RETURN(std::optional<double> x, NumberField(p, "x"));
  ASSIGN_OR_RETURN(std::optional<double> y, NumberField(p, "y"));
  if (!x || !y) {
    return absl::InvalidArgumentError(absl::StrCat(name, " needs x and y"));
  }
  return Point{*x, *y};
}

// The face box of an accurate gaze call; unset unless all four edges are
// given (the service then says the box is needed).
absl::StatusOr<std::optional<FaceBox>> FaceOf(const Json& body) {
  ASSIGN_OR_RETURN(Json f, ObjectField(body, "face"));
  ASSIGN_OR_RETURN(std::optional<double> x_min, NumberField(f, "x_min"));
  ASSIGN_OR_RETURN(std::optional<double> y_min, NumberField(f, "y_min"));
  ASSIGN_OR_RETURN(std::optional<double> x_max, NumberField(f, "x_max"));
  ASSIGN_OR_RETURN(std::optional<double> y_max, NumberField(f, "y_max"));
  if (!x_min || !y_min || !x_max || !y_max) return std::nullopt;
  return FaceBox{*x_min, *y_min, *x_max, *y_max};
}

absl::StatusOr<CaptionLength> LengthOf(const Json& body) {
  ASSIGN_OR_RETURN(std::optional<std::string> length,
                   StringField(body, "length"));
  if (!length || *length == "normal") return CaptionLength::kNormal;
  if (*length == "short") return CaptionLength::kShort;
  return absl::InvalidArgumentError("length must be \"short\" or \"normal\"");
}

absl::StatusOr<GazeCall> GazeCallOf(const Json& body) {
  GazeCall gaze;
  ASSIGN_OR_RETURN(gaze.prioritize_accuracy,
                   BoolField(body, "prioritize_accuracy"));
  ASSIGN_OR_RETURN(gaze.force_detect, BoolField(body, "force_detect"));
  ASSIGN_OR_RETURN(std::optional<uint64_t> seed,
                   SeedField(body, "seed", "seed"));
  gaze.seed = seed.value_or(0);
  if (gaze.prioritize_accuracy) {
    ASSIGN_OR_RETURN(gaze.face, FaceOf(body));
  } else {
    ASSIGN_OR_RETURN(gaze.eye, PointOf(body, "eye"));
  }
  return gaze;
}

// The order of the checks is the order of the errors a caller sees: the
// image first, then the skill's own fields.
absl::StatusOr<SkillCall> SkillCallOf(Skill skill, const Json& body) {
  SkillCall call;
  call.skill = skill;
  ASSIGN_OR_RETURN(call.image, ImageOf(body));
  switch (skill) {
    case Skill::kCaption: {
      ASSIGN_OR_RETURN(call.settings, TextSettingsOf(body));
      ASSIGN_OR_RETURN(call.length, LengthOf(body));
      break;
    }
    case Skill::kQuery: {
      ASSIGN_OR_RETURN(call.settings, TextSettingsOf(body));
      ASSIGN_OR_RETURN(std::optional<std::string> question,
                       StringField(body, "question"));
      call.text = question.value_or("");
      break;
    }
    case Skill::kDetect:
    case Skill::kPoint: {
      ASSIGN_OR_RETURN(std::optional<std::string> object,
                       StringField(body, "object"));
      call.text = object.value_or("");
      ASSIGN_OR_RETURN(Json settings, ObjectField(body, "settings"));
      ASSIGN_OR_RETURN(call.max_objects, IntField(settings, "max_objects"));
      break;
    }
    case Skill::kGaze: {
      ASSIGN_OR_RETURN(call.gaze, GazeCallOf(body));
      break;
    }
  }
  return call;
}

}  // namespace

absl::Status WithHttpStatus(absl::Status status, int http_status) {
  status.SetPayload(kHttpStatusPayload, absl::Cord(absl::StrCat(http_status)));
  return status;
}

absl::StatusOr<Json> ParseJsonBody(absl::string_view content_type,
                                   absl::string_view body) {
  // JSON bodies only: a form or other media type is 415, not a parse error.
  if (!content_type.empty()) {
    const absl::string_view media = absl::StripAsciiWhitespace(
        content_type.substr(0, content_type.find(';')));
    if (!absl::EqualsIgnoreCase(media, "application/json")) {
      return WithHttpStatus(
          absl::InvalidArgumentError(absl::StrCat(
              "the body must be application/json, not '", media, "'")),
          415);
    }
  }
  Json json = Json::parse(body.begin(), body.end(), nullptr,
                          /*allow_exceptions=*/false);
  if (json.is_discarded()) {
    return absl::InvalidArgumentError(
        "the body is not valid JSON (or not valid UTF-8)");
  }
  if (!json.is_object()) {
    return absl::InvalidArgumentError("the body must be a JSON object");
  }
  return json;
}

absl::StatusOr<HttpCall> ParseHttpCall(Skill skill, const Json& body) {
  HttpCall out;
  ASSIGN_OR_RETURN(out.stream, BoolField(body, "stream"));
  if (out.stream && !SpecOf(skill).streams_text) {
    return absl::InvalidArgumentError("stream is only for caption and query");
  }
  ASSIGN_OR_RETURN(out.call, SkillCallOf(skill, body));
  return out;
}

absl::StatusOr<std::string> DecodeDataUrl(absl::string_view url) {
  if (absl::StartsWith(url, "http://") || absl::StartsWith(url, "https://")) {
    return absl::InvalidArgumentError(
        "image_url: this server does not fetch URLs; send the image as a "
        "data URL (data:image/jpeg;base64,...)");
  }
  if (!absl::StartsWith(url, "data:")) {
    return absl::InvalidArgumentError(
        "image_url must be a data URL (data:image/jpeg;base64,...)");
  }
  const size_t comma = url.find(',');
  if (comma == absl::string_view::npos) {
    return absl::InvalidArgumentError("image_url: the data URL has no ','");
  }
  const absl::string_view meta = url.substr(5, comma - 5);
  if (!absl::EndsWith(meta, ";base64")) {
    return absl::InvalidArgumentError(
        "image_url: the data URL must be base64 (data:...;base64,...)");
  }
  std::string bytes;
  if (!absl::Base64Unescape(url.substr(comma + 1), &bytes)) {
    return absl::InvalidArgumentError("image_url: malformed base64");
  }
  if (bytes.empty()) {
    return absl::InvalidArgumentError("image_url: the image is empty");
  }
  return bytes;
}

int HttpStatusFor(const absl::Status& status) {
  if (auto payload = status.GetPayload(kHttpStatusPayload)) {
    int code = 0;
    if (absl::SimpleAtoi(std::string(*payload), &code)) return code;
  }
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kCancelled:
      return 499;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

}  // namespace md::service
