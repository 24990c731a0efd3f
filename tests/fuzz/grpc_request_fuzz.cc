// Fuzzes the gRPC API's request conversion (service/grpc_calls.h): the
// bytes of one RPC's request message, as gRPC would hand them over, through
// the protobuf parser, then to a SkillCall and the skill checks (CheckCall).
//
// Input: byte 0 picks the RPC (modulo 6: Caption, Query, Detect, Point,
// DetectGaze, EncodeImage); the rest is that RPC's serialized request.
// Bytes that do not parse as the message are dropped, as gRPC drops them.
//
// What holds by design:
// - The call says what the message says: its skill, the image's bytes or
//   handle (whichever the oneof holds), the text, and each optional setting
//   exactly when the message sets it.
// - Only DetectGaze without an eye (and without prioritize_accuracy) is
//   refused by the conversion, as InvalidArgument; EncodeImage refuses
//   anything but image bytes.
// - What passes CheckCall is within the limits (call_invariants.h).
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "model/skills/skill_table.h"
#include "moondream/v1/moondream.pb.h"
#include "service/calls.h"
#include "service/grpc_calls.h"
#include "tests/fuzz/call_invariants.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

namespace pb = ::moondream::v1;
using md::Skill;
using md::service::SkillCall;

// Equal, or both NaN: the conversion copies values, it does not judge them.
bool Same(double a, double b) {
  return a == b || (std::isnan(a) && std::isnan(b));
}

void CheckImage(const pb::Image& image, const md::service::ImageRef& ref) {
  FUZZ_CHECK(ref.bytes ==
             (image.source_case() == pb::Image::kData ? image.data() : ""));
  FUZZ_CHECK(ref.handle ==
             (image.source_case() == pb::Image::kHandle ? image.handle() : ""));
}

void CheckSettings(const pb::SamplingSettings& s,
                   const md::service::TextSettings& t) {
  FUZZ_CHECK(t.max_tokens.has_value() == s.has_max_tokens());
  if (t.max_tokens) FUZZ_CHECK(*t.max_tokens == s.max_tokens());
  FUZZ_CHECK(t.temperature.has_value() == s.has_temperature());
  if (t.temperature) FUZZ_CHECK(Same(*t.temperature, s.temperature()));
  FUZZ_CHECK(t.top_p.has_value() == s.has_top_p());
  if (t.top_p) FUZZ_CHECK(Same(*t.top_p, s.top_p()));
  FUZZ_CHECK(t.min_p.has_value() == s.has_min_p());
  if (t.min_p) FUZZ_CHECK(Same(*t.min_p, s.min_p()));
  FUZZ_CHECK(t.seed.has_value() == s.has_seed());
  if (t.seed) FUZZ_CHECK(*t.seed == s.seed());
  FUZZ_CHECK(t.ignore_eos == s.ignore_eos());
}

// What each message must have become.
void CheckFields(const pb::CaptionRequest& r, const SkillCall& call) {
  CheckImage(r.image(), call.image);
  FUZZ_CHECK((call.length == md::CaptionLength::kShort) ==
             (r.length() == pb::CaptionRequest::SHORT));
  CheckSettings(r.settings(), call.settings);
}

void CheckFields(const pb::QueryRequest& r, const SkillCall& call) {
  CheckImage(r.image(), call.image);
  FUZZ_CHECK(call.text == r.question());
  CheckSettings(r.settings(), call.settings);
}

template <typename R>
void CheckRegionFields(const R& r, const SkillCall& call) {
  CheckImage(r.image(), call.image);
  FUZZ_CHECK(call.text == r.object());
  FUZZ_CHECK(call.max_objects.has_value() == r.has_max_objects());
  if (call.max_objects) FUZZ_CHECK(*call.max_objects == r.max_objects());
}
void CheckFields(const pb::DetectRequest& r, const SkillCall& call) {
  CheckRegionFields(r, call);
}
void CheckFields(const pb::PointRequest& r, const SkillCall& call) {
  CheckRegionFields(r, call);
}

void CheckFields(const pb::DetectGazeRequest& r, const SkillCall& call) {
  CheckImage(r.image(), call.image);
  const md::service::GazeCall& g = call.gaze;
  FUZZ_CHECK(Same(g.eye.x, r.eye().x()) && Same(g.eye.y, r.eye().y()));
  FUZZ_CHECK(g.face.has_value() == r.has_face());
  if (g.face) {
    FUZZ_CHECK(Same(g.face->x_min, r.face().x_min()) &&
               Same(g.face->y_min, r.face().y_min()) &&
               Same(g.face->x_max, r.face().x_max()) &&
               Same(g.face->y_max, r.face().y_max()));
  }
  FUZZ_CHECK(g.prioritize_accuracy == r.prioritize_accuracy());
  FUZZ_CHECK(g.seed == r.seed());
  FUZZ_CHECK(g.force_detect == r.force_detect());
}

// Whether the conversion may refuse `r`.
template <typename R>
bool MayRefuse(const R&) {
  return false;
}
bool MayRefuse(const pb::DetectGazeRequest& r) {
  return !r.has_eye() && !r.prioritize_accuracy();
}

template <typename R>
void FuzzSkill(absl::string_view bytes, Skill skill) {
  R request;
  if (!request.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return;
  }
  const absl::StatusOr<SkillCall> call = md::service::ToCall(request);
  FUZZ_CHECK(call.ok() != MayRefuse(request));
  if (!call.ok()) {
    md::fuzz::CheckRefusal(call.status());
    return;
  }
  FUZZ_CHECK(call->skill == skill);
  CheckFields(request, *call);
  md::fuzz::CheckParsedCall(*call);
}

void FuzzEncodeImage(absl::string_view bytes) {
  pb::EncodeImageRequest request;
  if (!request.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return;
  }
  const absl::StatusOr<absl::string_view> image =
      md::service::ImageBytesOf(request);
  const bool has_bytes = request.image().source_case() == pb::Image::kData;
  FUZZ_CHECK(image.ok() == has_bytes);
  if (!image.ok()) {
    md::fuzz::CheckRefusal(image.status());
    return;
  }
  FUZZ_CHECK(*image == request.image().data());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const absl::string_view message(reinterpret_cast<const char*>(data) + 1,
                                  size - 1);
  switch (data[0] % 6) {
    case 0:
      FuzzSkill<pb::CaptionRequest>(message, Skill::kCaption);
      break;
    case 1:
      FuzzSkill<pb::QueryRequest>(message, Skill::kQuery);
      break;
    case 2:
      FuzzSkill<pb::DetectRequest>(message, Skill::kDetect);
      break;
    case 3:
      FuzzSkill<pb::PointRequest>(message, Skill::kPoint);
      break;
    case 4:
      FuzzSkill<pb::DetectGazeRequest>(message, Skill::kGaze);
      break;
    default:
      FuzzEncodeImage(message);
      break;
  }
  return 0;
}
