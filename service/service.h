// The transport-independent service: what the gRPC server and the HTTP
// gateway both call. It authenticates, resolves images (bytes or handles),
// validates and tokenizes text, turns a parsed call (calls.h) into an engine
// request, and submits it. Errors are absl statuses whose codes the transports
// map 1:1 to gRPC codes or HTTP statuses, with messages a caller can act on.
#ifndef MOONDREAM_SERVICE_SERVICE_H_
#define MOONDREAM_SERVICE_SERVICE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "model/bundle.h"
#include "scheduler/engine.h"
#include "scheduler/request.h"
#include "service/auth.h"
#include "service/calls.h"
#include "service/handles.h"
#include "service/work_permits.h"

namespace md::service {

struct ServiceLimits {
  int64_t max_image_bytes = int64_t{20} << 20;
  // 4096 x 4096: a 12-megapixel photo fits; Moondream looks at no more than
  // 12 crops of 378 pixels, and larger images only cost decode time.
  int64_t max_image_pixels = int64_t{4096} * 4096;
  int max_text_bytes = 4096;
  int max_handles = 1024;
  int64_t max_handle_bytes = int64_t{1} << 30;
  // Images decoded at once; more wait up to decode_wait, then
  // RESOURCE_EXHAUSTED.
  int max_concurrent_decodes = 1;
  absl::Duration decode_wait = absl::Seconds(30);
  // Tenants share cached image prefixes (and so can tell from the time to
  // first token whether another tenant sent an image). Off: each tenant's
  // images are cached apart.
  bool share_image_cache = false;
};

struct ImageInfo {
  std::string handle;
  int width = 0;
  int height = 0;
};

struct ServiceInfo {
  std::string model;
  std::string weights;
  bool random_weights = false;
  std::string dtype;
  std::string device;
  int context_length = 0;
  int image_positions = 0;
  int slots = 0;
};

// The name a model is served under: its released shape's ("moondream2"),
// or "custom".
std::string ServedModelName(const ModelBundle& bundle);

class Service {
 public:
  // Starts the engine on `bundle`'s model.
  static absl::StatusOr<std::unique_ptr<Service>> Create(
      ModelBundle bundle, scheduler::EngineOptions engine_options,
      ServiceLimits limits, ApiKeys keys, scheduler::StepCallback on_step = {});

  // The tenant of an API key (see ApiKeys).
  absl::StatusOr<std::string> Authenticate(absl::string_view key) const {
    return keys_.Authenticate(key);
  }

  absl::StatusOr<ImageInfo> EncodeImage(absl::string_view bytes,
                                        absl::string_view tenant);

  // A request between its admission and its submission (decoding its image,
  // tokenizing). Drain waits for every live Admission before it closes the
  // engine, so a request that arrived before SIGTERM is never refused because
  // its decode outlasted the signal.
  class Admission {
   public:
    Admission(Admission&& other) noexcept
        : service_(std::exchange(other.service_, nullptr)) {}
    Admission& operator=(Admission&&) = delete;
    ~Admission();

   private:
    friend class Service;
    explicit Admission(Service* service) : service_(service) {}
    Service* service_;
  };

  // Admits one request of `tenant` if the service is not draining and the
  // engine has room: checked before decoding, so overload is refused at once.
  // Hold the Admission until Submit has returned.
  absl::StatusOr<Admission> Admit(absl::string_view tenant);

  // The engine request for `call`, validated (text, then the skill fields
  // through the job factories, then the image); the caller sets tenant,
  // deadline and sink, then Submits.
  absl::StatusOr<scheduler::Request> Build(const SkillCall& call);

  absl::StatusOr<uint64_t> Submit(scheduler::Request request) {
    return engine_->Submit(std::move(request));
  }
  void Cancel(uint64_t id) { engine_->Cancel(id); }

  // Stops admitting, waits for admitted requests to reach the engine, then
  // up to the rest of `grace` for the engine's requests to finish.
  bool Drain(absl::Duration grace);

  // Admitted requests not yet submitted (for the waiting gauge).
  int preparing() const;

  ServiceInfo Info() const;
  const ModelBundle& bundle() const { return bundle_; }
  scheduler::Engine& engine() { return *engine_; }
  const ServiceLimits& limits() const { return limits_; }
  const HandleStore& handles() const { return handles_; }

 private:
  Service(ModelBundle bundle, ServiceLimits limits, ApiKeys keys);

  // Size and pixel limits checked, then decoded.
  absl::StatusOr<RgbImage> DecodeChecked(absl::string_view bytes);
  absl::StatusOr<std::shared_ptr<StoredImage>> Decode(absl::string_view bytes,
                                                      absl::string_view tenant,
                                                      bool with_mirror);
  std::string KeyScope(absl::string_view tenant) const;
  absl::StatusOr<std::shared_ptr<const scheduler::EngineImage>> Resolve(
      const ImageRef& image, bool with_mirror);
  absl::StatusOr<std::vector<int>> TokenizeField(absl::string_view field,
                                                 absl::string_view text) const;
  absl::StatusOr<std::unique_ptr<SkillJob>> MakeJob(const SkillCall& call);

  ModelBundle bundle_;
  const ServiceLimits limits_;
  const ApiKeys keys_;
  std::string model_id_;
  HandleStore handles_;
  WorkPermits decode_permits_;
  std::unique_ptr<scheduler::Engine> engine_;

  mutable absl::Mutex admission_mu_;
  bool draining_ ABSL_GUARDED_BY(admission_mu_) = false;
  int preparing_ ABSL_GUARDED_BY(admission_mu_) = 0;
};

}  // namespace md::service

#endif  // MOONDREAM_SERVICE_SERVICE_H_
