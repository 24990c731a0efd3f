#include "service/service.h"

#include <cmath>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "model/image_decode.h"
#include "model/preprocess.h"
#include "model/skills.h"
#include "model/status_macros.h"
#include "model/tensor_io.h"

namespace md::service {
namespace {

using scheduler::Request;
using scheduler::Skill;

constexpr float kMaxTemperature = 2.0f;

// The engine's caps on objects per request.
constexpr int kMaxObjectsPerRequest = kMaxObjects;

absl::Status CheckRange(absl::string_view field, double value, double lo,
                        double hi) {
  if (std::isfinite(value) && value >= lo && value <= hi) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      field, " must be a number in [", lo, ", ", hi, "], got ", value));
}

absl::StatusOr<SamplingParams> Sampling(const TextSettings& s) {
  SamplingParams p;
  if (s.temperature) {
    RETURN_IF_ERROR(
        CheckRange("settings.temperature", *s.temperature, 0, kMaxTemperature));
    p.temperature = *s.temperature;
  }
  if (s.top_p) {
    RETURN_IF_ERROR(CheckRange("settings.top_p", *s.top_p, 0, 1));
    if (*s.top_p == 0) {
      return absl::InvalidArgumentError("settings.top_p must be > 0");
    }
    p.top_p = *s.top_p;
  }
  if (s.min_p) {
    RETURN_IF_ERROR(CheckRange("settings.min_p", *s.min_p, 0, 1));
    p.min_p = *s.min_p;
  }
  if (s.seed) p.seed = *s.seed;
  return p;
}

// Sampling, max_tokens and ignore_eos for caption and query.
absl::Status ApplyTextSettings(const TextSettings& s, int context_room,
                               Request& r) {
  ASSIGN_OR_RETURN(r.sampling, Sampling(s));
  r.ignore_eos = s.ignore_eos;
  if (!s.max_tokens) return absl::OkStatus();
  if (*s.max_tokens < 1 || *s.max_tokens > context_room) {
    return absl::InvalidArgumentError(
        absl::StrCat("settings.max_tokens must be in [1, ", context_room,
                     "], got ", *s.max_tokens));
  }
  r.max_tokens = *s.max_tokens;
  return absl::OkStatus();
}

}  // namespace

bool IsValidUtf8(absl::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = s[i];
    int len;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > n) return false;
    for (int k = 1; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    const uint32_t min_cp = len == 2 ? 0x80 : len == 3 ? 0x800 : 0x10000;
    if (cp < min_cp || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += len;
  }
  return true;
}

Service::Service(ModelBundle bundle, ServiceLimits limits, ApiKeys keys)
    : bundle_(std::move(bundle)),
      limits_(limits),
      keys_(std::move(keys)),
      handles_(limits.max_handles) {
  model_id_ = absl::StrCat(bundle_.dir, "|",
                           DTypeLabel(bundle_.model->options().dtype));
}

absl::StatusOr<std::unique_ptr<Service>> Service::Create(
    ModelBundle bundle, scheduler::EngineOptions engine_options,
    ServiceLimits limits, ApiKeys keys, scheduler::StepCallback on_step) {
  if (limits.max_image_bytes < 1 || limits.max_image_pixels < 1 ||
      limits.max_text_bytes < 1 || limits.max_handles < 1) {
    return absl::InvalidArgumentError("service limits must be >= 1");
  }
  std::unique_ptr<Service> service(
      new Service(std::move(bundle), limits, std::move(keys)));
  engine_options.model_id = service->model_id_;
  engine_options.tokenizer = service->bundle_.tokenizer.get();
  engine_options.gaze_ids = service->bundle_.gaze_ids;
  ASSIGN_OR_RETURN(
      service->engine_,
      scheduler::Engine::Create(*service->bundle_.model,
                                std::move(engine_options), std::move(on_step)));
  return service;
}

absl::StatusOr<std::shared_ptr<const StoredImage>> Service::Decode(
    absl::string_view bytes) const {
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
    if (absl::StrContains(rgb.status().message(), "pixels")) {
      bad.SetPayload(kHttpStatusPayload, absl::Cord("413"));
    }
    return bad;
  }
  auto stored = std::make_shared<StoredImage>();
  ASSIGN_OR_RETURN(stored->prepared,
                   scheduler::PrepareEngineImage(
                       *rgb, bundle_.model->config().vision, model_id_,
                       /*with_mirror=*/false));
  stored->rgb = *std::move(rgb);
  return std::shared_ptr<const StoredImage>(std::move(stored));
}

absl::StatusOr<ImageInfo> Service::EncodeImage(absl::string_view bytes) {
  ASSIGN_OR_RETURN(std::shared_ptr<const StoredImage> stored, Decode(bytes));
  ImageInfo info{"", stored->rgb.width, stored->rgb.height};
  info.handle = handles_.Put(std::move(stored));
  return info;
}

absl::StatusOr<std::shared_ptr<const scheduler::EngineImage>> Service::Resolve(
    const ImageRef& image, bool with_mirror) {
  if (!image.bytes.empty() && !image.handle.empty()) {
    return absl::InvalidArgumentError(
        "image: send either bytes or a handle, not both");
  }
  std::shared_ptr<const StoredImage> stored;
  if (!image.handle.empty()) {
    ASSIGN_OR_RETURN(stored, handles_.Get(image.handle));
  } else if (!image.bytes.empty()) {
    ASSIGN_OR_RETURN(stored, Decode(image.bytes));
  } else {
    return absl::InvalidArgumentError("image is missing");
  }
  if (!with_mirror) return stored->prepared;
  return scheduler::PrepareEngineImage(
      stored->rgb, bundle_.model->config().vision, model_id_, true);
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
  if (!IsValidUtf8(text)) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " is not valid UTF-8"));
  }
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
  Request r;
  r.skill = Skill::kCaption;
  const MoondreamConfig& config = bundle_.model->config();
  ASSIGN_OR_RETURN(r.prompt_ids, CaptionPrompt(config, length));
  RETURN_IF_ERROR(ApplyTextSettings(settings, config.text.max_context, r));
  ASSIGN_OR_RETURN(r.image, Resolve(image, false));
  return r;
}

absl::StatusOr<Request> Service::Query(const ImageRef& image,
                                       absl::string_view question,
                                       const TextSettings& settings) {
  Request r;
  r.skill = Skill::kQuery;
  const MoondreamConfig& config = bundle_.model->config();
  ASSIGN_OR_RETURN(std::vector<int> ids, TokenizeField("question", question));
  ASSIGN_OR_RETURN(r.prompt_ids, QueryPrompt(config, ids));
  RETURN_IF_ERROR(ApplyTextSettings(settings, config.text.max_context, r));
  ASSIGN_OR_RETURN(r.image, Resolve(image, false));
  return r;
}

absl::StatusOr<Request> Service::Region(Skill skill, const ImageRef& image,
                                        absl::string_view object,
                                        std::optional<int> max_objects) {
  Request r;
  r.skill = skill;
  const MoondreamConfig& config = bundle_.model->config();
  ASSIGN_OR_RETURN(std::vector<int> ids, TokenizeField("object", object));
  if (skill == Skill::kDetect) {
    ASSIGN_OR_RETURN(r.prompt_ids, DetectPrompt(config, ids));
  } else {
    ASSIGN_OR_RETURN(r.prompt_ids, PointPrompt(config, ids));
  }
  if (max_objects) {
    if (*max_objects < 1 || *max_objects > kMaxObjectsPerRequest) {
      return absl::InvalidArgumentError(
          absl::StrCat("max_objects must be in [1, ", kMaxObjectsPerRequest,
                       "], got ", *max_objects));
    }
    r.max_objects = *max_objects;
  }
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
  Request r;
  r.skill = Skill::kGaze;
  r.gaze.force_detect = call.force_detect;
  r.gaze.seed = call.seed;
  if (call.prioritize_accuracy) {
    if (!call.face) {
      return absl::InvalidArgumentError(
          "prioritize_accuracy needs the face box");
    }
    const FaceBox& f = *call.face;
    RETURN_IF_ERROR(CheckRange("face.x_min", f.x_min, 0, 1));
    RETURN_IF_ERROR(CheckRange("face.y_min", f.y_min, 0, 1));
    RETURN_IF_ERROR(CheckRange("face.x_max", f.x_max, 0, 1));
    RETURN_IF_ERROR(CheckRange("face.y_max", f.y_max, 0, 1));
    if (f.x_min > f.x_max || f.y_min > f.y_max) {
      return absl::InvalidArgumentError(
          "face must have x_min <= x_max and y_min <= y_max");
    }
    r.gaze.face = f;
  } else {
    RETURN_IF_ERROR(CheckRange("eye.x", call.eye.x, 0, 1));
    RETURN_IF_ERROR(CheckRange("eye.y", call.eye.y, 0, 1));
    r.gaze.eye = call.eye;
  }
  ASSIGN_OR_RETURN(r.image, Resolve(image, call.prioritize_accuracy));
  return r;
}

ServiceInfo Service::Info() const {
  const Model& model = *bundle_.model;
  ServiceInfo info;
  info.model = bundle_.released_shape ? model.config().name : "custom";
  info.weights = bundle_.dir;
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
