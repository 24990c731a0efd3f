// Submission, from any thread: checks that a request can run here, queues it
// (or refuses at once), cancels, drains; and the engine's construction.
#include <algorithm>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "scheduler/engine_impl.h"

namespace md::scheduler {

// The skill's own fields were checked when its job was built; this checks
// what only the engine knows: that the request is complete and fits.
absl::Status Engine::Impl::Validate(const Request& request) const {
  if (!request.sink) return absl::InvalidArgumentError("request has no sink");
  if (!request.job) return absl::InvalidArgumentError("request has no job");
  if (!request.image || !request.image->crops.crops_u8.defined()) {
    return absl::InvalidArgumentError("request has no image");
  }
  const SkillJob& job = *request.job;
  for (int i = 0; i < job.n_sequences(); ++i) {
    if (job.image_of(i) == ImageSide::kMirror &&
        !request.image->mirrored.has_value()) {
      return absl::InvalidArgumentError(
          "this request needs the image prepared with its mirror image");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> Engine::Impl::Submit(Request request) {
  if (absl::Status valid = Validate(request); !valid.ok()) {
    Count([](EngineStats& s) { ++s.rejected_invalid; });
    return valid;
  }
  auto job = std::make_unique<Job>();
  const SkillJob& skill = *request.job;
  const int prefix = executor_->prefix_len();
  const int prompt_len = skill.prompt_positions();
  job->max_new_positions = skill.max_new_positions();
  job->prompt_positions = prefix + prompt_len;
  // More sequences than slots run in waves on the slots there are.
  job->n_slots = std::min(skill.n_sequences(), executor_->n_slots());
  const int per_slot = executor_->positions_per_slot();
  if (job->prompt_positions + job->max_new_positions > per_slot) {
    Count([](EngineStats& s) { ++s.rejected_too_long; });
    return absl::OutOfRangeError(absl::StrCat(
        "request needs ", job->prompt_positions + job->max_new_positions,
        " positions (image ", prefix, " + prompt ", prompt_len, " + up to ",
        job->max_new_positions, " generated) but a slot holds ", per_slot,
        "; shorten the prompt or lower max_tokens / max_objects"));
  }
  if (request.tenant.empty()) request.tenant = "default";
  job->request = std::move(request);
  job->submitted = absl::Now();
  job->arrived = job->request.arrived == absl::InfinitePast()
                     ? job->submitted
                     : std::min(job->request.arrived, job->submitted);

  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(CheckRoomLocked(job->request.tenant));
  ++n_queued_by_tenant_[job->request.tenant];
  const uint64_t id = next_id_++;
  job->id = id;
  inbox_.push_back(std::move(job));
  ++n_queued_;
  idle_ = false;
  Count([](EngineStats& s) { ++s.submitted; });
  return id;
}

absl::Status Engine::Impl::CheckRoomLocked(const std::string& tenant) {
  if (!accepting_) {
    Count([](EngineStats& s) { ++s.rejected_unavailable; });
    return absl::UnavailableError(
        "the engine is shutting down and takes no new requests; retry on "
        "another replica");
  }
  if (absl::Status room = CheckEnqueue(n_queued_, options_.max_queue);
      !room.ok()) {
    Count([](EngineStats& s) { ++s.rejected_queue_full; });
    return room;
  }
  const int limit = options_.max_queued_per_tenant;
  auto it = n_queued_by_tenant_.find(tenant);
  const int n_tenant = it == n_queued_by_tenant_.end() ? 0 : it->second;
  if (limit > 0 && n_tenant >= limit) {
    Count([](EngineStats& s) { ++s.rejected_tenant_limit; });
    return absl::ResourceExhaustedError(absl::StrCat(
        "tenant '", tenant, "' has ", n_tenant, " requests queued (limit ",
        limit, "); retry after a short backoff"));
  }
  return absl::OkStatus();
}

absl::Status Engine::Impl::CheckRoom(const std::string& tenant) {
  absl::MutexLock lock(&mu_);
  return CheckRoomLocked(tenant.empty() ? std::string("default") : tenant);
}

void Engine::Impl::Cancel(uint64_t id) {
  absl::MutexLock lock(&mu_);
  cancels_.push_back(id);
}

bool Engine::Impl::Drain(absl::Duration grace) {
  {
    absl::MutexLock lock(&mu_);
    accepting_ = false;
  }
  return WaitIdle(grace);
}

bool Engine::Impl::WaitIdle(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithTimeout(absl::Condition(&idle_), timeout);
}

// ---- Engine ----

namespace {

absl::Status CheckOptions(const EngineOptions& options) {
  if (options.max_queue < 0 || options.max_queued_per_tenant < 0 ||
      options.max_slots_per_tenant < 0 || options.max_admit_per_step < 1 ||
      options.prefill_chunk_tokens < 1 || options.prefill_token_budget < 1 ||
      options.max_images_per_step < 1 || options.prefix_cache_bytes < 0) {
    return absl::InvalidArgumentError(
        "engine limits must be positive (queue may be 0, cache bytes >= 0)");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const Model& model,
                                                       EngineOptions options,
                                                       StepCallback on_step) {
  const int max_context = model.config().text.max_context;
  if (options.positions_per_slot == 0) options.positions_per_slot = max_context;
  if (options.positions_per_slot <= model.prefix_len() ||
      options.positions_per_slot > max_context) {
    return absl::InvalidArgumentError(
        absl::StrCat("context per slot must be in (", model.prefix_len(), ", ",
                     max_context, "], got ", options.positions_per_slot));
  }
  if (options.n_slots < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("slots must be >= 1, got ", options.n_slots));
  }
  RETURN_IF_ERROR(CheckOptions(options));
  ASSIGN_OR_RETURN(
      std::unique_ptr<Executor> executor,
      MakeModelExecutor(model, options.n_slots, options.positions_per_slot));
  return Create(std::move(executor), std::move(options), std::move(on_step));
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(
    std::unique_ptr<Executor> executor, EngineOptions options,
    StepCallback on_step) {
  if (executor == nullptr) return absl::InvalidArgumentError("no executor");
  if (executor->n_slots() < 1 ||
      executor->positions_per_slot() <= executor->prefix_len()) {
    return absl::InvalidArgumentError(
        "the executor needs at least one slot with room after the prefix");
  }
  RETURN_IF_ERROR(CheckOptions(options));
  options.n_slots = executor->n_slots();
  options.positions_per_slot = executor->positions_per_slot();
  auto impl = std::make_unique<Impl>(std::move(executor), std::move(options),
                                     std::move(on_step));
  impl->Start();
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Engine::~Engine() = default;

absl::StatusOr<uint64_t> Engine::Submit(Request request) {
  return impl_->Submit(std::move(request));
}
void Engine::Cancel(uint64_t id) { impl_->Cancel(id); }
absl::Status Engine::CheckRoom(const std::string& tenant) {
  return impl_->CheckRoom(tenant);
}
bool Engine::Drain(absl::Duration grace) { return impl_->Drain(grace); }
bool Engine::WaitIdle(absl::Duration timeout) {
  return impl_->WaitIdle(timeout);
}
EngineStats Engine::Stats() const { return impl_->Stats(); }
const EngineOptions& Engine::options() const { return impl_->options(); }

}  // namespace md::scheduler
