#include "service/grpc_calls.h"

#include <optional>

namespace md::service {
namespace {

namespace pb = ::moondream::v1;

ImageRef ToRef(const pb::Image& image) {
  ImageRef ref;
  if (image.source_case() == pb::Image::kData) ref.bytes = image.data();
  if (image.source_case() == pb::Image::kHandle) ref.handle = image.handle();
  return ref;
}

// proto3 `optional` fields: unset takes the skill's default.
TextSettings ToSettings(const pb::SamplingSettings& s) {
  TextSettings out;
  if (s.has_max_tokens()) out.max_tokens = s.max_tokens();
  if (s.has_temperature()) out.temperature = s.temperature();
  if (s.has_top_p()) out.top_p = s.top_p();
  if (s.has_min_p()) out.min_p = s.min_p();
  if (s.has_seed()) out.seed = s.seed();
  out.ignore_eos = s.ignore_eos();
  return out;
}

template <typename R>
SkillCall RegionCall(Skill skill, const R& request) {
  SkillCall call;
  call.skill = skill;
  call.image = ToRef(request.image());
  call.text = request.object();
  if (request.has_max_objects()) call.max_objects = request.max_objects();
  return call;
}

}  // namespace

absl::StatusOr<SkillCall> ToCall(const pb::CaptionRequest& request) {
  SkillCall call;
  call.skill = Skill::kCaption;
  call.image = ToRef(request.image());
  // LENGTH_UNSPECIFIED (and values this server does not know) are NORMAL.
  call.length = request.length() == pb::CaptionRequest::SHORT
                    ? CaptionLength::kShort
                    : CaptionLength::kNormal;
  call.settings = ToSettings(request.settings());
  return call;
}

absl::StatusOr<SkillCall> ToCall(const pb::QueryRequest& request) {
  SkillCall call;
  call.skill = Skill::kQuery;
  call.image = ToRef(request.image());
  call.text = request.question();
  call.settings = ToSettings(request.settings());
  return call;
}

absl::StatusOr<SkillCall> ToCall(const pb::DetectRequest& request) {
  return RegionCall(Skill::kDetect, request);
}

absl::StatusOr<SkillCall> ToCall(const pb::PointRequest& request) {
  return RegionCall(Skill::kPoint, request);
}

absl::StatusOr<SkillCall> ToCall(const pb::DetectGazeRequest& request) {
  SkillCall call;
  call.skill = Skill::kGaze;
  call.image = ToRef(request.image());
  GazeCall& gaze = call.gaze;
  gaze.eye = {request.eye().x(), request.eye().y()};
  gaze.prioritize_accuracy = request.prioritize_accuracy();
  if (request.has_face()) {
    const pb::BoundingBox& f = request.face();
    gaze.face = FaceBox{f.x_min(), f.y_min(), f.x_max(), f.y_max()};
  }
  gaze.seed = request.seed();
  gaze.force_detect = request.force_detect();
  // An unset message field reads as (0, 0), a valid eye: refuse it here.
  if (!request.has_eye() && !gaze.prioritize_accuracy) {
    return absl::InvalidArgumentError(
        "eye is missing (or set prioritize_accuracy with a face)");
  }
  return call;
}

absl::StatusOr<absl::string_view> ImageBytesOf(
    const pb::EncodeImageRequest& request) {
  if (request.image().source_case() != pb::Image::kData) {
    return absl::InvalidArgumentError(
        "EncodeImage takes image bytes (image.data)");
  }
  return absl::string_view(request.image().data());
}

}  // namespace md::service
