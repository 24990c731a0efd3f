#include "service/service.h"

#include <malloc.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "model/image/image_decode.h"
#include "model/io/tensor_io.h"
#include "model/net/preprocess.h"
#include "model/skills/jobs.h"
#include "model/skills/skills.h"

namespace md::service {
namespace {

using scheduler::Request;

// Whether any of the job's sequences runs on the mirror image (accurate
// gaze), which is then prepared with the image.
bool NeedsMirror(const SkillJob& job) {
  for (int i = 0; i < job.n_sequences(); ++i) {
    if (job.image_of(i) == ImageSide::kMirror) return true;
  }
  return false;
}

}  // namespace

Service::Service(ModelBundle bundle, ServiceLimits limits, ApiKeys keys)
    : bundle_(std::move(bundle)),
      limits_(limits),
      keys_(std::move(keys)),
      handles_(limits.max_handles, limits.max_handle_bytes),
      decode_permits_(limits.max_concurrent_decodes) {
  model_id_ = absl::StrCat(bundle_.dir, "|",
                           DTypeLabel(bundle_.model->options().dtype));
}

absl::StatusOr<std::unique_ptr<Service>> Service::Create(
    ModelBundle bundle, scheduler::EngineOptions engine_options,
    ServiceLimits limits, ApiKeys keys, scheduler::StepCallback on_step) {
  if (limits.max_image_bytes < 1 || limits.max_image_pixels < 1 ||
      limits.max_text_bytes < 1 || limits.max_handles < 1 ||
      limits.max_handle_bytes < 1 || limits.max_concurrent_decodes < 1) {
    return absl::InvalidArgumentError("service limits must be >= 1");
  }
  std::unique_ptr<Service> service(
      new Service(std::move(bundle), limits, std::move(keys)));
  engine_options.model_id = service->model_id_;
  ASSIGN_OR_RETURN(
      service->engine_,
      scheduler::Engine::Create(*service->bundle_.model,
                                std::move(engine_options), std::move(on_step)));
  return service;
}

std::string Service::KeyScope(absl::string_view tenant) const {
  // Per tenant unless shared on purpose: a cached prefix is observable (a
  // hit answers sooner), so tenants must not share one by default.
  if (limits_.share_image_cache) return model_id_;
  return absl::StrCat(model_id_, "|tenant:", tenant);
}

absl::StatusOr<RgbImage> Service::DecodeChecked(absl::string_view bytes) {
  if (bytes.empty()) return absl::InvalidArgumentError("image is empty");
  if (static_cast<int64_t>(bytes.size()) > limits_.max_image_bytes) {
    absl::Status too_large = absl::InvalidArgumentError(
        absl::StrCat("image is ", bytes.size(), " bytes; the limit is ",
                     limits_.max_image_bytes));
    too_large.SetPayload(kHttpStatusPayload, absl::Cord("413"));
    return too_large;
  }
  DecodeOptions options;
  options.max_pixels = limits_.max_image_pixels;
  absl::StatusOr<RgbImage> rgb =
      DecodeImage(std::string_view(bytes.data(), bytes.size()), options);
  if (!rgb.ok()) {
    absl::Status bad = absl::InvalidArgumentError(
        absl::StrCat("image: ", rgb.status().message()));
    if (IsTooManyPixels(rgb.status())) {
      bad.SetPayload(kHttpStatusPayload, absl::Cord("413"));
    }
    return bad;
  }
  return rgb;
}

absl::StatusOr<std::shared_ptr<StoredImage>> Service::Decode(
    absl::string_view bytes, absl::string_view tenant, bool with_mirror) {
  absl::StatusOr<std::shared_ptr<StoredImage>> stored =
      [&]() -> absl::StatusOr<std::shared_ptr<StoredImage>> {
    // Decoding and cropping, a few images at a time (see WorkPermits).
    ASSIGN_OR_RETURN(
        WorkPermits::Permit permit,
        decode_permits_.Acquire(limits_.decode_wait, "decoding other images"));
    ASSIGN_OR_RETURN(RgbImage rgb, DecodeChecked(bytes));
    auto stored = std::make_shared<StoredImage>();
    stored->tenant = std::string(tenant);
    stored->width = rgb.width;
    stored->height = rgb.height;
    ASSIGN_OR_RETURN(stored->prepared, scheduler::PrepareEngineImage(
                                           rgb, bundle_.model->config().vision,
                                           KeyScope(tenant), with_mirror));
    return stored;
  }();
  // The decoded pixels are gone now; hand large freed blocks back to the
  // system instead of keeping the peak for the life of the process.
  malloc_trim(0);
  return stored;
}

Service::Admission::~Admission() {
  if (service_ == nullptr) return;
  absl::MutexLock lock(&service_->admission_mu_);
  --service_->preparing_;
}

absl::StatusOr<Service::Admission> Service::Admit(absl::string_view tenant) {
  {
    absl::MutexLock lock(&admission_mu_);
    if (draining_) {
      return absl::UnavailableError(
          "the server is shutting down and takes no new requests; retry on "
          "another replica");
    }
    ++preparing_;
  }
  Admission admission(this);
  RETURN_IF_ERROR(engine_->CheckRoom(std::string(tenant)));
  return admission;
}

bool Service::Drain(absl::Duration grace) {
  const absl::Time deadline = absl::Now() + grace;
  {
    absl::MutexLock lock(&admission_mu_);
    draining_ = true;
    admission_mu_.AwaitWithDeadline(
        absl::Condition(
            +[](int* n) { return *n == 0; }, &preparing_),
        deadline);
  }
  return engine_->Drain(std::max(deadline - absl::Now(), absl::ZeroDuration()));
}

int Service::preparing() const {
  absl::MutexLock lock(&admission_mu_);
  return preparing_;
}

absl::StatusOr<ImageInfo> Service::EncodeImage(absl::string_view bytes,
                                               absl::string_view tenant) {
  ASSIGN_OR_RETURN(std::shared_ptr<StoredImage> stored,
                   Decode(bytes, tenant, /*with_mirror=*/false));
  stored->encoded = std::string(bytes);
  ImageInfo info{"", stored->width, stored->height};
  ASSIGN_OR_RETURN(info.handle, handles_.Put(std::move(stored)));
  return info;
}

absl::StatusOr<std::shared_ptr<const scheduler::EngineImage>> Service::Resolve(
    const ImageRef& image, bool with_mirror) {
  if (!image.bytes.empty() && !image.handle.empty()) {
    return absl::InvalidArgumentError(
        "image: send either bytes or a handle, not both");
  }
  if (!image.handle.empty()) {
    ASSIGN_OR_RETURN(std::shared_ptr<const StoredImage> stored,
                     handles_.Get(image.handle, image.tenant));
    if (!with_mirror) return stored->prepared;
    // The mirror image is prepared from the stored bytes when asked for.
    ASSIGN_OR_RETURN(std::shared_ptr<StoredImage> mirrored,
                     Decode(stored->encoded, image.tenant, true));
    return mirrored->prepared;
  }
  if (image.bytes.empty())
    return absl::InvalidArgumentError("image is missing");
  ASSIGN_OR_RETURN(std::shared_ptr<StoredImage> stored,
                   Decode(image.bytes, image.tenant, with_mirror));
  return stored->prepared;
}

absl::StatusOr<std::vector<int>> Service::TokenizeField(
    absl::string_view field, absl::string_view text) const {
  if (text.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(field, " is empty"));
  }
  if (static_cast<int>(text.size()) > limits_.max_text_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(field, " is ", text.size(),
                                                   " bytes; the limit is ",
                                                   limits_.max_text_bytes));
  }
  // The tokenizer refuses bad UTF-8 (saying where); nothing checks it twice.
  absl::StatusOr<std::vector<int>> ids = bundle_.tokenizer->Encode(text);
  if (!ids.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": ", ids.status().message()));
  }
  return ids;
}

// The text first (cheap, and its errors are the caller's most likely
// mistake), then the skill fields through the job factories; the image is
// decoded last, only for a request that is otherwise valid.
absl::StatusOr<std::unique_ptr<SkillJob>> Service::MakeJob(
    const SkillCall& call) {
  const MoondreamConfig& config = bundle_.model->config();
  const Tokenizer* tokenizer = bundle_.tokenizer.get();
  switch (call.skill) {
    case Skill::kCaption: {
      ASSIGN_OR_RETURN(std::vector<int> prompt,
                       CaptionPrompt(config, call.length));
      return MakeTextJob(config, call.skill, std::move(prompt),
                         TextOptionsOf(call.settings), tokenizer);
    }
    case Skill::kQuery: {
      ASSIGN_OR_RETURN(std::vector<int> ids,
                       TokenizeField("question", call.text));
      ASSIGN_OR_RETURN(std::vector<int> prompt, QueryPrompt(config, ids));
      return MakeTextJob(config, call.skill, std::move(prompt),
                         TextOptionsOf(call.settings), tokenizer);
    }
    case Skill::kDetect:
    case Skill::kPoint: {
      ASSIGN_OR_RETURN(std::vector<int> ids,
                       TokenizeField("object", call.text));
      ASSIGN_OR_RETURN(std::vector<int> prompt, call.skill == Skill::kDetect
                                                    ? DetectPrompt(config, ids)
                                                    : PointPrompt(config, ids));
      return MakeRegionJob(config, call.skill, std::move(prompt),
                           MaxObjectsOf(call));
    }
    case Skill::kGaze: {
      ASSIGN_OR_RETURN(GazeOptions options, GazeOptionsOf(call.gaze));
      return MakeGazeJob(config, options, bundle_.gaze_ids);
    }
  }
  return absl::InvalidArgumentError("unknown skill");
}

absl::StatusOr<Request> Service::Build(const SkillCall& call) {
  Request r;
  ASSIGN_OR_RETURN(r.job, MakeJob(call));
  ASSIGN_OR_RETURN(r.image, Resolve(call.image, NeedsMirror(*r.job)));
  return r;
}

std::string ServedModelName(const ModelBundle& bundle) {
  return bundle.released_shape ? bundle.model->config().name : "custom";
}

ServiceInfo Service::Info() const {
  const Model& model = *bundle_.model;
  ServiceInfo info;
  info.model = ServedModelName(bundle_);
  // The directory's name only: a server's filesystem layout is not the
  // caller's business.
  info.weights = std::filesystem::path(bundle_.dir).filename().string();
  if (info.weights.empty()) {
    info.weights = std::filesystem::path(bundle_.dir).parent_path().filename();
  }
  info.random_weights = bundle_.random_weights;
  info.dtype = std::string(DTypeLabel(model.options().dtype));
  info.device = model.options().device.str();
  info.context_length = engine_->Stats().kv_positions_total /
                        std::max<int64_t>(1, engine_->Stats().n_slots);
  info.image_positions = model.prefix_len();
  info.slots = engine_->options().n_slots;
  return info;
}

}  // namespace md::service
