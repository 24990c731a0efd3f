#include "service/service.h"

#include <malloc.h>

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

// Optional wire fields over the skill's defaults; the job factories check
// the values (model/skills/jobs.h), so this only fills them in.
TextOptions TextOptionsFrom(const TextSettings& s) {
  TextOptions options;
  if (s.max_tokens) options.max_tokens = *s.max_tokens;
  if (s.temperature) options.sampling.temperature = *s.temperature;
  if (s.top_p) options.sampling.top_p = *s.top_p;
  if (s.min_p) options.sampling.min_p = *s.min_p;
  if (s.seed) options.sampling.seed = *s.seed;
  options.ignore_eos = s.ignore_eos;
  return options;
}

}  // namespace

Service::Service(ModelBundle bundle, ServiceLimits limits, ApiKeys keys)
    : bundle_(std::move(bundle)),
      limits_(limits),
      keys_(std::move(keys)),
      handles_(limits.max_handles, limits.max_handle_bytes) {
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

absl::StatusOr<RgbImage> Service::DecodeBounded(absl::string_view bytes) {
  if (bytes.empty()) return absl::InvalidArgumentError("image is empty");
  if (static_cast<int64_t>(bytes.size()) > limits_.max_image_bytes) {
    absl::Status too_large = absl::InvalidArgumentError(
        absl::StrCat("image is ", bytes.size(), " bytes; the limit is ",
                     limits_.max_image_bytes));
    too_large.SetPayload(kHttpStatusPayload, absl::Cord("413"));
    return too_large;
  }
  // A few decodes at a time: a large image costs seconds of CPU and
  // hundreds of MB, and the engine and health checks need the machine too.
  {
    absl::MutexLock lock(&decode_mu_);
    auto room = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(decode_mu_) {
      return decoding_ < limits_.max_concurrent_decodes;
    };
    if (!decode_mu_.AwaitWithTimeout(absl::Condition(&room),
                                     limits_.decode_wait)) {
      return absl::ResourceExhaustedError(
          "the server is busy decoding other images; retry shortly");
    }
    ++decoding_;
  }
  DecodeOptions options;
  options.max_pixels = limits_.max_image_pixels;
  absl::StatusOr<RgbImage> rgb =
      DecodeImage(std::string_view(bytes.data(), bytes.size()), options);
  {
    absl::MutexLock lock(&decode_mu_);
    --decoding_;
  }
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
    ASSIGN_OR_RETURN(RgbImage rgb, DecodeBounded(bytes));
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

absl::Status Service::CheckRoom(absl::string_view tenant) {
  return engine_->CheckRoom(std::string(tenant));
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

absl::StatusOr<Request> Service::Caption(const ImageRef& image,
                                         CaptionLength length,
                                         const TextSettings& settings) {
  const MoondreamConfig& config = bundle_.model->config();
  ASSIGN_OR_RETURN(std::vector<int> prompt, CaptionPrompt(config, length));
  Request r;
  ASSIGN_OR_RETURN(
      r.job, MakeTextJob(config, Skill::kCaption, std::move(prompt),
                         TextOptionsFrom(settings), bundle_.tokenizer.get()));
  ASSIGN_OR_RETURN(r.image, Resolve(image, false));
  return r;
}

absl::StatusOr<Request> Service::Query(const ImageRef& image,
                                       absl::string_view question,
                                       const TextSettings& settings) {
  const MoondreamConfig& config = bundle_.model->config();
  ASSIGN_OR_RETURN(std::vector<int> ids, TokenizeField("question", question));
  ASSIGN_OR_RETURN(std::vector<int> prompt, QueryPrompt(config, ids));
  Request r;
  ASSIGN_OR_RETURN(
      r.job, MakeTextJob(config, Skill::kQuery, std::move(prompt),
                         TextOptionsFrom(settings), bundle_.tokenizer.get()));
  ASSIGN_OR_RETURN(r.image, Resolve(image, false));
  return r;
}

absl::StatusOr<Request> Service::Region(Skill skill, const ImageRef& image,
                                        absl::string_view object,
                                        std::optional<int> max_objects) {
  const MoondreamConfig& config = bundle_.model->config();
  ASSIGN_OR_RETURN(std::vector<int> ids, TokenizeField("object", object));
  std::vector<int> prompt;
  if (skill == Skill::kDetect) {
    ASSIGN_OR_RETURN(prompt, DetectPrompt(config, ids));
  } else {
    ASSIGN_OR_RETURN(prompt, PointPrompt(config, ids));
  }
  Request r;
  ASSIGN_OR_RETURN(
      r.job, MakeRegionJob(config, skill, std::move(prompt),
                           max_objects.value_or(limits::kDefaultMaxObjects)));
  ASSIGN_OR_RETURN(r.image, Resolve(image, false));
  return r;
}

absl::StatusOr<Request> Service::Detect(const ImageRef& image,
                                        absl::string_view object,
                                        std::optional<int> max_objects) {
  return Region(Skill::kDetect, image, object, max_objects);
}

absl::StatusOr<Request> Service::Point(const ImageRef& image,
                                       absl::string_view object,
                                       std::optional<int> max_objects) {
  return Region(Skill::kPoint, image, object, max_objects);
}

absl::StatusOr<Request> Service::Gaze(const ImageRef& image,
                                      const GazeCall& call) {
  if (call.prioritize_accuracy && !call.face) {
    return absl::InvalidArgumentError("prioritize_accuracy needs the face box");
  }
  GazeOptions options{
      .eye = call.eye, .seed = call.seed, .force_detect = call.force_detect};
  if (call.prioritize_accuracy) options.face = call.face;
  Request r;
  ASSIGN_OR_RETURN(
      r.job, MakeGazeJob(bundle_.model->config(), options, bundle_.gaze_ids));
  ASSIGN_OR_RETURN(r.image, Resolve(image, call.prioritize_accuracy));
  return r;
}

ServiceInfo Service::Info() const {
  const Model& model = *bundle_.model;
  ServiceInfo info;
  info.model = bundle_.released_shape ? model.config().name : "custom";
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
