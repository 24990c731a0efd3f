#include "scheduler/engine.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "model/detokenizer.h"
#include "model/kv_cache.h"
#include "model/status_macros.h"
#include "model/step.h"
#include "model/tensor_io.h"
#include "scheduler/admission.h"
#include "scheduler/image_encoder.h"
#include "scheduler/prefix_cache.h"
#include "scheduler/slots.h"

namespace md::scheduler {
namespace {

// Positions one decoded object takes: x, y (and the size for detect).
constexpr int kDetectPositionsPerObject = 3;
constexpr int kPointPositionsPerObject = 2;
constexpr int kMaxObjectsLimit = 1000;
// The engine thread wakes at least this often when idle, and this often
// while it waits for an image encode (to check deadlines).
constexpr absl::Duration kIdlePoll = absl::Milliseconds(200);
constexpr absl::Duration kBusyPoll = absl::Milliseconds(20);

// One slot's sequence: a skill run and where it stands in its slot.
struct Sequence {
  std::unique_ptr<SkillRun> run;
  int slot = -1;
  int pos = 0;
  SlotState state = SlotState::kAwaitingImage;
  const ImageCrops* crops = nullptr;
  std::string image_key;
  // Which copy of the image prefix the slot holds: slots with equal ids hold
  // equal bits, so their decode rows may share one read of the prefix.
  uint64_t prefix_id = 0;
  // The run's first input (the prompt), fed in chunks; reset once fed.
  std::optional<StepInput> prompt;
  int prompt_fed = 0;
  size_t objects_reported = 0;
};

// A request from Submit to OnDone.
struct Job {
  uint64_t id = 0;
  Request request;
  int n_slots = 1;
  int prompt_positions = 0;  // Image prefix included.
  int max_new_positions = 0;
  absl::Time submitted;
  absl::Time admitted;
  std::optional<absl::Time> first_output;
  bool cancelled = false;
  bool finished = false;
  bool image_cache_hit = true;
  std::vector<GazeProbe> probes;  // Accurate gaze only.
  std::vector<Sequence> seqs;
  std::unique_ptr<StreamingDetokenizer> detokenizer;
  int output_tokens = 0;
};

double SecondsSince(absl::Time start) {
  return absl::ToDoubleSeconds(absl::Now() - start);
}

bool InUnitRange(double v) { return std::isfinite(v) && v >= 0 && v <= 1; }

}  // namespace

class Engine::Impl {
 public:
  Impl(const Model& model, EngineOptions options, StepCallback on_step,
       KvCache cache)
      : model_(model),
        options_(std::move(options)),
        on_step_(std::move(on_step)),
        kv_(std::move(cache)),
        slots_(options_.n_slots),
        prefix_cache_(options_.prefix_cache_bytes) {
    encoder_ = std::make_unique<ImageEncoder>(model_, [this] {
      absl::MutexLock lock(&mu_);
      encode_ready_ = true;
    });
    PublishGauges(0);
  }

  void Start() {
    thread_ = std::thread([this] { Loop(); });
  }

  ~Impl() {
    {
      absl::MutexLock lock(&mu_);
      accepting_ = false;
      stopping_ = true;
    }
    if (thread_.joinable()) thread_.join();
  }

  const EngineOptions& options() const { return options_; }

  absl::StatusOr<uint64_t> Submit(Request request);
  void Cancel(uint64_t id);
  bool Drain(absl::Duration grace);
  bool WaitIdle(absl::Duration timeout);
  EngineStats Stats() const {
    absl::MutexLock lock(&stats_mu_);
    return stats_;
  }

 private:
  // ---- Any thread ----
  absl::Status Validate(const Request& request) const;
  void Count(void (*bump)(EngineStats&)) {
    absl::MutexLock lock(&stats_mu_);
    bump(stats_);
  }
  bool HasInput() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !inbox_.empty() || !cancels_.empty() || stopping_ || encode_ready_;
  }

  // ---- Engine thread ----
  void Loop();
  void TakeInbox();
  // False when the step changed nothing (it waits for an image encode).
  bool Step();
  void AdmitFromQueue(absl::Time now);
  absl::Status Start(Job& job, absl::Time now);
  void EndCancelledAndExpired(absl::Time now);
  void PlaceImagePrefixes(StepReport& report);
  void ForwardOneStep(StepReport& report);
  void FinishCompleted();
  void AbortAll(const absl::Status& status);

  void Finish(Job& job, const absl::Status& status);
  void ReleaseSequence(Job& job, Sequence& seq);
  void OnTextToken(Job& job, int token);
  void ReportRegionProgress(Job& job, Sequence& seq);
  void MarkOutput(Job& job);
  void SweepFinished();
  void PublishGauges(int64_t last_batch_size);

  const Model& model_;
  const EngineOptions options_;
  const StepCallback on_step_;

  mutable absl::Mutex mu_;
  std::vector<std::unique_ptr<Job>> inbox_ ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> cancels_ ABSL_GUARDED_BY(mu_);
  int n_queued_ ABSL_GUARDED_BY(mu_) = 0;  // Inbox and queue.
  absl::flat_hash_map<std::string, int> n_queued_by_tenant_
      ABSL_GUARDED_BY(mu_);
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  bool accepting_ ABSL_GUARDED_BY(mu_) = true;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool idle_ ABSL_GUARDED_BY(mu_) = true;
  bool encode_ready_ ABSL_GUARDED_BY(mu_) = false;

  mutable absl::Mutex stats_mu_;
  EngineStats stats_ ABSL_GUARDED_BY(stats_mu_);

  // Engine thread only.
  KvCache kv_;
  SlotTable slots_;
  PrefixCache prefix_cache_;
  TenantUsage usage_;
  std::vector<std::unique_ptr<Job>> queue_;
  std::vector<std::unique_ptr<Job>> running_;  // In admission order.
  double model_seconds_ = 0;                   // This step's.
  bool progress_ = false;                      // This step's: anything changed.
  absl::flat_hash_set<std::string> encoding_keys_;  // At the encoder.

  std::thread thread_;
  // Last: destroyed first, while mu_ (its callback's lock) still exists.
  std::unique_ptr<ImageEncoder> encoder_;
};

// ---- Submission (any thread) ----

absl::Status Engine::Impl::Validate(const Request& request) const {
  if (!request.sink) return absl::InvalidArgumentError("request has no sink");
  if (!request.image || !request.image->crops.crops_u8.defined()) {
    return absl::InvalidArgumentError("request has no image");
  }
  const int vocab = model_.config().text.vocab_size;
  for (int id : request.prompt_ids) {
    if (id < 0 || id >= vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt token id ", id,
                       " is outside the vocabulary [0, ", vocab, ")"));
    }
  }
  const bool needs_prompt = request.skill != Skill::kGaze;
  if (needs_prompt && request.prompt_ids.empty()) {
    return absl::InvalidArgumentError("empty prompt");
  }
  switch (request.skill) {
    case Skill::kCaption:
    case Skill::kQuery:
      if (request.max_tokens < 1) {
        return absl::InvalidArgumentError(
            absl::StrCat("max_tokens must be >= 1, got ", request.max_tokens));
      }
      return ValidateSampling(request.sampling);
    case Skill::kDetect:
    case Skill::kPoint:
      if (request.max_objects < 1 || request.max_objects > kMaxObjectsLimit) {
        return absl::InvalidArgumentError(
            absl::StrCat("max_objects must be in [1, ", kMaxObjectsLimit,
                         "], got ", request.max_objects));
      }
      return absl::OkStatus();
    case Skill::kGaze: {
      const GazeSettings& g = request.gaze;
      if (!g.face.has_value()) {
        if (!InUnitRange(g.eye.x) || !InUnitRange(g.eye.y)) {
          return absl::InvalidArgumentError(
              "eye position must have x and y in [0, 1]");
        }
        return absl::OkStatus();
      }
      const FaceBox& f = *g.face;
      if (!InUnitRange(f.x_min) || !InUnitRange(f.x_max) ||
          !InUnitRange(f.y_min) || !InUnitRange(f.y_max) || f.x_min > f.x_max ||
          f.y_min > f.y_max) {
        return absl::InvalidArgumentError(
            "face box must lie in [0, 1] with x_min <= x_max and "
            "y_min <= y_max");
      }
      if (!request.image->mirrored.has_value()) {
        return absl::InvalidArgumentError(
            "prioritize_accuracy needs the image prepared with its mirror "
            "image");
      }
      return absl::OkStatus();
    }
  }
  return absl::InvalidArgumentError("unknown skill");
}

absl::StatusOr<uint64_t> Engine::Impl::Submit(Request request) {
  if (absl::Status valid = Validate(request); !valid.ok()) {
    Count([](EngineStats& s) { ++s.rejected_invalid; });
    return valid;
  }
  auto job = std::make_unique<Job>();
  const int prefix = model_.prefix_len();
  const GazePromptIds& gaze_ids = options_.gaze_ids;
  switch (request.skill) {
    case Skill::kCaption:
    case Skill::kQuery:
      job->max_new_positions = request.max_tokens;
      break;
    case Skill::kDetect:
      job->max_new_positions = kDetectPositionsPerObject * request.max_objects;
      break;
    case Skill::kPoint:
      job->max_new_positions = kPointPositionsPerObject * request.max_objects;
      break;
    case Skill::kGaze:
      job->max_new_positions = kPointPositionsPerObject;
      if (request.gaze.face.has_value()) job->n_slots = 2 * kGazeProbesPerSide;
      break;
  }
  const int prompt_len =
      request.skill == Skill::kGaze
          ? static_cast<int>(gaze_ids.before.size() + gaze_ids.after.size()) + 2
          : static_cast<int>(request.prompt_ids.size());
  job->prompt_positions = prefix + prompt_len;
  const int per_slot = kv_.n_positions;
  if (job->prompt_positions + job->max_new_positions > per_slot) {
    Count([](EngineStats& s) { ++s.rejected_too_long; });
    return absl::OutOfRangeError(absl::StrCat(
        "request needs ", job->prompt_positions + job->max_new_positions,
        " positions (image ", prefix, " + prompt ", prompt_len, " + up to ",
        job->max_new_positions, " generated) but a slot holds ", per_slot,
        "; shorten the prompt or lower max_tokens / max_objects"));
  }
  if (job->n_slots > slots_.n_slots()) {
    Count([](EngineStats& s) { ++s.rejected_too_long; });
    return absl::FailedPreconditionError(
        absl::StrCat("prioritize_accuracy runs ", job->n_slots,
                     " probes side by side but this engine has ",
                     slots_.n_slots(), " slots"));
  }
  if (request.tenant.empty()) request.tenant = "default";
  job->request = std::move(request);
  job->submitted = absl::Now();

  absl::MutexLock lock(&mu_);
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
  int& n_tenant = n_queued_by_tenant_[job->request.tenant];
  if (limit > 0 && n_tenant >= limit) {
    Count([](EngineStats& s) { ++s.rejected_tenant_limit; });
    return absl::ResourceExhaustedError(absl::StrCat(
        "tenant '", job->request.tenant, "' has ", n_tenant,
        " requests queued (limit ", limit, "); retry after a short backoff"));
  }
  ++n_tenant;
  const uint64_t id = next_id_++;
  job->id = id;
  inbox_.push_back(std::move(job));
  ++n_queued_;
  idle_ = false;
  Count([](EngineStats& s) { ++s.submitted; });
  return id;
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

// ---- The engine thread ----

void Engine::Impl::Loop() {
  bool progressed = false;
  for (;;) {
    bool stopping;
    {
      absl::MutexLock lock(&mu_);
      if (!progressed) {
        const bool idle = queue_.empty() && running_.empty();
        mu_.AwaitWithTimeout(absl::Condition(this, &Impl::HasInput),
                             idle ? kIdlePoll : kBusyPoll);
      }
      encode_ready_ = false;
      stopping = stopping_;
    }
    TakeInbox();
    if (stopping) {
      AbortAll(absl::UnavailableError("the engine stopped"));
      return;
    }
    progressed = (!queue_.empty() || !running_.empty()) && Step();
    absl::MutexLock lock(&mu_);
    idle_ = inbox_.empty() && queue_.empty() && running_.empty();
  }
}

void Engine::Impl::TakeInbox() {
  std::vector<std::unique_ptr<Job>> arrived;
  std::vector<uint64_t> cancels;
  {
    absl::MutexLock lock(&mu_);
    arrived.swap(inbox_);
    cancels.swap(cancels_);
  }
  for (auto& job : arrived) queue_.push_back(std::move(job));
  for (uint64_t id : cancels) {
    for (auto* jobs : {&queue_, &running_}) {
      for (auto& job : *jobs) {
        if (job->id == id) job->cancelled = true;
      }
    }
  }
}

bool Engine::Impl::Step() {
  const absl::Time start = absl::Now();
  model_seconds_ = 0;
  progress_ = false;
  StepReport report;
  AdmitFromQueue(start);
  EndCancelledAndExpired(start);
  PlaceImagePrefixes(report);
  ForwardOneStep(report);
  FinishCompleted();
  SweepFinished();
  if (!progress_) return false;

  report.step_seconds = SecondsSince(start);
  report.model_seconds = model_seconds_;
  {
    absl::MutexLock lock(&stats_mu_);
    ++stats_.steps;
    stats_.step_seconds += report.step_seconds;
    stats_.model_seconds += report.model_seconds;
  }
  PublishGauges(report.batch_size);
  if (on_step_) on_step_(report);
  return true;
}

void Engine::Impl::AdmitFromQueue(absl::Time now) {
  std::vector<QueuedRequest> snapshot;
  snapshot.reserve(queue_.size());
  for (const auto& job : queue_) {
    snapshot.push_back(
        QueuedRequest{.id = job->id,
                      .tenant = job->request.tenant,
                      .enqueued = job->submitted,
                      .deadline = job->request.deadline,
                      .prompt_positions = job->prompt_positions,
                      .max_new_positions = job->max_new_positions,
                      .n_slots = job->n_slots,
                      .cancelled = job->cancelled});
  }
  const AdmissionLimits limits{
      .max_queue = options_.max_queue,
      .n_free_slots = slots_.n_free(),
      .positions_per_slot = kv_.n_positions,
      .max_admit_per_step = options_.max_admit_per_step};
  const AdmissionDecision decision =
      DecideAdmission(snapshot, limits, now, usage_);
  progress_ |= !decision.admit.empty() || !decision.expired.empty() ||
               !decision.cancelled.empty() || !decision.too_long.empty();

  absl::flat_hash_map<uint64_t, Job*> by_id;
  for (auto& job : queue_) by_id[job->id] = job.get();
  for (uint64_t id : decision.expired) {
    Count([](EngineStats& s) { ++s.expired_queued; });
    Finish(*by_id[id], absl::DeadlineExceededError(
                           "the deadline passed while the request was queued "
                           "(the server is overloaded; retry with a longer "
                           "deadline or later)"));
  }
  for (uint64_t id : decision.cancelled) {
    Count([](EngineStats& s) { ++s.cancelled; });
    Finish(*by_id[id], absl::CancelledError("cancelled while queued"));
  }
  for (uint64_t id : decision.too_long) {
    Count([](EngineStats& s) { ++s.rejected_too_long; });
    Finish(*by_id[id],
           absl::OutOfRangeError("the request cannot fit a slot's context"));
  }
  for (uint64_t id : decision.admit) {
    Job& job = *by_id[id];
    if (absl::Status started = Start(job, now); !started.ok()) {
      Count([](EngineStats& s) { ++s.failed; });
      Finish(job, started);
    }
  }
  // Admitted jobs move to running_ in the order they were picked.
  for (uint64_t id : decision.admit) {
    for (auto& job : queue_) {
      if (job && job->id == id) running_.push_back(std::move(job));
    }
  }
  std::erase_if(queue_, [](const std::unique_ptr<Job>& job) {
    return job == nullptr || job->finished;
  });
  absl::MutexLock lock(&mu_);
  n_queued_ = static_cast<int>(inbox_.size() + queue_.size());
  n_queued_by_tenant_.clear();
  for (const auto* jobs : {&inbox_, &queue_}) {
    for (const auto& job : *jobs) ++n_queued_by_tenant_[job->request.tenant];
  }
}

absl::Status Engine::Impl::Start(Job& job, absl::Time now) {
  job.admitted = now;
  const Request& r = job.request;
  const int eos = model_.config().tokenizer.eos_id;
  if (options_.tokenizer != nullptr) {
    job.detokenizer =
        std::make_unique<StreamingDetokenizer>(options_.tokenizer);
  }
  // Slots first, so Finish can release whatever was taken.
  for (int i = 0; i < job.n_slots; ++i) {
    std::optional<int> slot = slots_.Acquire();
    if (!slot.has_value()) {
      return absl::InternalError("admitted without a free slot");
    }
    Sequence seq;
    seq.slot = *slot;
    seq.crops = &r.image->crops;
    seq.image_key = r.image->key;
    job.seqs.push_back(std::move(seq));
  }
  Job* job_ptr = &job;
  switch (r.skill) {
    case Skill::kCaption:
    case Skill::kQuery:
      job.seqs[0].run = std::make_unique<TextRun>(
          r.prompt_ids, r.max_tokens, r.ignore_eos ? -1 : eos,
          MakeTokenChooser(r.sampling),
          [this, job_ptr](int token) { OnTextToken(*job_ptr, token); });
      break;
    case Skill::kDetect:
    case Skill::kPoint:
      job.seqs[0].run = std::make_unique<RegionRun>(
          r.skill == Skill::kDetect ? RegionRun::Kind::kDetect
                                    : RegionRun::Kind::kPoint,
          r.prompt_ids, r.max_objects, eos);
      break;
    case Skill::kGaze: {
      std::vector<GazeProbe> probes = {GazeProbe{r.gaze.eye, false}};
      if (r.gaze.face.has_value()) {
        ASSIGN_OR_RETURN(probes, AccurateGazeProbes(*r.gaze.face, r.gaze.seed));
        job.probes = probes;
      }
      for (size_t i = 0; i < probes.size(); ++i) {
        ASSIGN_OR_RETURN(
            at::Tensor prompt,
            GazePromptEmbeddings(model_, options_.gaze_ids, probes[i].eye));
        Sequence& seq = job.seqs[i];
        seq.run = std::make_unique<RegionRun>(
            RegionRun::Gaze(prompt, eos, r.gaze.force_detect));
        if (probes[i].mirrored) {
          seq.crops = &*r.image->mirrored;
          seq.image_key = r.image->mirrored_key;
        }
      }
      break;
    }
  }
  return absl::OkStatus();
}

void Engine::Impl::EndCancelledAndExpired(absl::Time now) {
  for (auto& job : running_) {
    if (job->finished) continue;
    if (job->cancelled) {
      Count([](EngineStats& s) { ++s.cancelled; });
      Finish(*job, absl::CancelledError("cancelled while running"));
    } else if (job->request.deadline <= now) {
      Count([](EngineStats& s) { ++s.expired_running; });
      Finish(*job, absl::DeadlineExceededError(
                       "the deadline passed while generating; output so far "
                       "was streamed"));
    }
  }
}

void Engine::Impl::PlaceImagePrefixes(StepReport& report) {
  // Sequences waiting for each image, images in admission order.
  struct Waiting {
    const ImageCrops* crops = nullptr;
    std::vector<std::pair<Job*, Sequence*>> seqs;
  };
  std::vector<std::string> keys;
  absl::flat_hash_map<std::string, Waiting> waiting;
  for (auto& job : running_) {
    if (job->finished) continue;
    for (Sequence& seq : job->seqs) {
      if (seq.state != SlotState::kAwaitingImage) continue;
      auto [it, inserted] = waiting.try_emplace(seq.image_key);
      if (inserted) keys.push_back(seq.image_key);
      it->second.crops = seq.crops;
      it->second.seqs.emplace_back(job.get(), &seq);
    }
  }

  auto place = [&](const std::string& key, const CachedPrefix& prefix) {
    auto it = waiting.find(key);
    if (it == waiting.end()) return;
    for (auto [job, seq] : it->second.seqs) {
      if (job->finished) continue;
      progress_ = true;
      absl::Status placed = CatchTorchStatus("placing an image prefix", [&] {
        WriteSlotPrefix(kv_, seq->slot, prefix.prefix_L2HPD);
      });
      if (!placed.ok()) {
        Count([](EngineStats& s) { ++s.failed; });
        Finish(*job, placed);
        continue;
      }
      seq->pos = model_.prefix_len();
      seq->prefix_id = prefix.id;
      seq->state = SlotState::kPrefill;
      slots_.Set(seq->slot, SlotState::kPrefill);
    }
    waiting.erase(it);
  };

  // A batch the encoder finished: cache its prefixes and place them.
  if (std::optional<ImageEncoder::Batch> batch = encoder_->TakeFinished()) {
    progress_ = true;
    for (const std::string& key : batch->keys) encoding_keys_.erase(key);
    if (!batch->encoded.ok()) {
      for (const std::string& key : batch->keys) {
        auto it = waiting.find(key);
        if (it == waiting.end()) continue;
        for (auto [job, seq] : it->second.seqs) {
          if (job->finished) continue;
          Count([](EngineStats& s) { ++s.failed; });
          Finish(*job, batch->encoded.status());
        }
        waiting.erase(it);
      }
    } else {
      const int64_t n = static_cast<int64_t>(batch->keys.size());
      {
        absl::MutexLock lock(&stats_mu_);
        stats_.images_encoded += n;
        stats_.prefix_prefills += n;
      }
      report.images_encoded = static_cast<int>(n);
      report.encode_seconds = batch->seconds;
      for (size_t i = 0; i < batch->keys.size(); ++i) {
        place(batch->keys[i],
              prefix_cache_.Insert(batch->keys[i],
                                   (*batch->encoded)[i].prefix_kv_L2HPD));
      }
    }
  }

  // Cache hits are placed now; misses go to the encoder as one batch when
  // it is free (keys already being encoded just wait).
  std::vector<std::string> to_encode;
  std::vector<ImageCrops> crops;
  const bool encoder_free = !encoder_->Busy();
  for (const std::string& key : keys) {
    if (!waiting.contains(key) || encoding_keys_.contains(key)) continue;
    if (prefix_cache_.Contains(key)) {
      place(key, *prefix_cache_.Lookup(key));
      continue;
    }
    if (!encoder_free ||
        static_cast<int>(to_encode.size()) >= options_.max_images_per_step) {
      continue;
    }
    prefix_cache_.Lookup(key);  // Counts the miss.
    to_encode.push_back(key);
    crops.push_back(*waiting[key].crops);
    for (auto [job, seq] : waiting[key].seqs) job->image_cache_hit = false;
  }
  if (to_encode.empty()) return;
  progress_ = true;
  for (const std::string& key : to_encode) encoding_keys_.insert(key);
  encoder_->Start(std::move(to_encode), std::move(crops));
}

void Engine::Impl::ForwardOneStep(StepReport& report) {
  std::vector<Feed> feeds;
  struct Owner {
    Job* job;
    Sequence* seq;
    bool prefill;  // A prompt chunk (the run's input is only consumed when
                   // `completes` is set).
    bool completes;
  };
  std::vector<Owner> owners;

  auto next_input = [&](Job& job, Sequence& seq) -> std::optional<StepInput> {
    absl::StatusOr<StepInput> in = seq.run->Next(model_);
    if (!in.ok()) {
      Count([](EngineStats& s) { ++s.failed; });
      Finish(job, in.status());
      return std::nullopt;
    }
    return std::move(*in);
  };

  // Every generating sequence decodes one row. Rows whose slots hold the same
  // copy of an image prefix read it from the first such row's slot: from
  // memory once for all of them.
  absl::flat_hash_map<uint64_t, int> prefix_slot_by_copy;
  for (auto& job : running_) {
    for (Sequence& seq : job->seqs) {
      if (job->finished || seq.state != SlotState::kDecode || seq.run->done()) {
        continue;
      }
      std::optional<StepInput> in = next_input(*job, seq);
      if (!in.has_value()) break;
      const int prefix_slot =
          prefix_slot_by_copy.try_emplace(seq.prefix_id, seq.slot)
              .first->second;
      feeds.push_back({seq.slot, seq.pos, std::move(in->embeds_TC), in->mask,
                       in->heads, prefix_slot});
      owners.push_back({job.get(), &seq, false, true});
      ++report.decode_rows;
    }
  }

  // Prompt chunks, first admitted first, under the token budget.
  const int chunk_tokens = std::max(1, options_.prefill_chunk_tokens);
  int budget = options_.prefill_token_budget;
  bool any_prefill = false;
  bool budget_spent = false;
  for (auto& job : running_) {
    for (Sequence& seq : job->seqs) {
      if (budget_spent) break;
      if (job->finished || seq.state != SlotState::kPrefill) continue;
      if (!seq.prompt.has_value()) {
        seq.prompt = next_input(*job, seq);
        if (!seq.prompt.has_value()) break;
        seq.prompt_fed = 0;
      }
      const StepInput& prompt = *seq.prompt;
      const int n_prompt = static_cast<int>(prompt.embeds_TC.size(0));
      const int remaining = n_prompt - seq.prompt_fed;
      // Full-mask prompts (gaze) are fed whole; causal ones are cut at fixed
      // multiples of chunk_tokens.
      const int chunk =
          prompt.mask == AttentionMask::kFull
              ? remaining
              : std::min(remaining,
                         chunk_tokens - seq.prompt_fed % chunk_tokens);
      if (any_prefill && chunk > budget) {
        budget_spent = true;
        break;
      }
      budget -= chunk;
      any_prefill = true;
      const bool last = chunk == remaining;
      feeds.push_back({seq.slot, seq.pos,
                       prompt.embeds_TC.narrow(0, seq.prompt_fed, chunk),
                       prompt.mask, last ? prompt.heads : HeadRequest{}});
      owners.push_back({job.get(), &seq, true, last});
      report.prefill_tokens += chunk;
    }
  }
  report.batch_size = static_cast<int>(feeds.size());
  if (feeds.empty()) return;
  progress_ = true;

  const absl::Time start = absl::Now();
  absl::StatusOr<std::vector<StepOutput>> outputs =
      ForwardFeeds(model_, kv_, feeds);
  model_seconds_ += SecondsSince(start);
  if (!outputs.ok()) {
    for (const Owner& o : owners) {
      if (o.job->finished) continue;
      Count([](EngineStats& s) { ++s.failed; });
      Finish(*o.job, outputs.status());
    }
    return;
  }

  int64_t tokens_in = 0, tokens_out = 0;
  for (size_t k = 0; k < feeds.size(); ++k) {
    const Owner& o = owners[k];
    if (o.job->finished) continue;
    Sequence& seq = *o.seq;
    const int n_rows = static_cast<int>(feeds[k].embeds_TC.size(0));
    seq.pos += n_rows;
    if (o.prefill) {
      seq.prompt_fed += n_rows;
      tokens_in += n_rows;
    }
    if (!o.completes) continue;
    if (o.prefill) {
      seq.prompt.reset();
      seq.state = SlotState::kDecode;
      slots_.Set(seq.slot, SlotState::kDecode);
    }
    ++tokens_out;
    absl::Status accepted = CatchTorchStatus(
        "reading the step's outputs", [&] { seq.run->Accept((*outputs)[k]); });
    if (!accepted.ok()) {
      Count([](EngineStats& s) { ++s.failed; });
      Finish(*o.job, accepted);
      continue;
    }
    // Text counts its emitted tokens; regions every coordinate and size.
    if (o.job->request.skill != Skill::kCaption &&
        o.job->request.skill != Skill::kQuery) {
      ++o.job->output_tokens;
    }
    ReportRegionProgress(*o.job, seq);
    if (seq.run->done()) ReleaseSequence(*o.job, seq);
  }
  absl::MutexLock lock(&stats_mu_);
  stats_.tokens_in += tokens_in;
  stats_.tokens_out += tokens_out;
}

void Engine::Impl::FinishCompleted() {
  for (auto& job : running_) {
    if (job->finished) continue;
    const bool all_done =
        std::all_of(job->seqs.begin(), job->seqs.end(),
                    [](const Sequence& s) { return s.run && s.run->done(); });
    if (!all_done) continue;
    RequestSink& sink = *job->request.sink;
    if (job->detokenizer) {
      const std::string tail = job->detokenizer->Flush();
      if (!tail.empty()) sink.OnTextTail(tail);
    }
    if (job->request.skill == Skill::kGaze) {
      std::optional<Point> gaze;
      if (job->probes.empty()) {
        const auto& run = static_cast<const RegionRun&>(*job->seqs[0].run);
        if (!run.points().empty()) gaze = run.points()[0];
      } else {
        std::vector<std::optional<Point>> answers;
        for (const Sequence& seq : job->seqs) {
          const auto& run = static_cast<const RegionRun&>(*seq.run);
          answers.push_back(run.points().empty()
                                ? std::nullopt
                                : std::optional<Point>(run.points()[0]));
        }
        gaze = CombineGazeProbes(job->probes, answers);
      }
      MarkOutput(*job);
      sink.OnGaze(gaze);
    }
    Count([](EngineStats& s) { ++s.completed; });
    Finish(*job, absl::OkStatus());
  }
}

void Engine::Impl::AbortAll(const absl::Status& status) {
  for (auto* jobs : {&queue_, &running_}) {
    for (auto& job : *jobs) {
      if (!job->finished) Finish(*job, status);
    }
  }
  queue_.clear();
  running_.clear();
  PublishGauges(0);
  absl::MutexLock lock(&mu_);
  n_queued_ = 0;
  n_queued_by_tenant_.clear();
  idle_ = true;
}

// ---- Helpers (engine thread) ----

void Engine::Impl::ReleaseSequence(Job& job, Sequence& seq) {
  if (seq.slot < 0) return;
  slots_.Release(seq.slot);
  usage_.Release(job.request.tenant, 1);
  seq.slot = -1;
}

void Engine::Impl::Finish(Job& job, const absl::Status& status) {
  if (job.finished) return;
  job.finished = true;
  progress_ = true;
  for (Sequence& seq : job.seqs) ReleaseSequence(job, seq);
  const absl::Time now = absl::Now();
  RequestSummary summary;
  if (!job.seqs.empty() && job.seqs[0].run) {
    summary.stop = job.seqs[0].run->stop_reason();
  }
  summary.prompt_tokens = job.prompt_positions - model_.prefix_len();
  summary.output_tokens = job.output_tokens;
  summary.image_cache_hit = !job.seqs.empty() && job.image_cache_hit;
  summary.queued =
      (job.admitted == absl::Time() ? now : job.admitted) - job.submitted;
  if (job.first_output.has_value()) {
    summary.time_to_first = *job.first_output - job.submitted;
  }
  summary.total = now - job.submitted;
  job.request.sink->OnDone(status, summary);
}

void Engine::Impl::MarkOutput(Job& job) {
  if (!job.first_output.has_value()) job.first_output = absl::Now();
}

void Engine::Impl::OnTextToken(Job& job, int token) {
  MarkOutput(job);
  ++job.output_tokens;
  std::string text;
  if (job.detokenizer) {
    absl::StatusOr<std::string> piece = job.detokenizer->Push(token);
    if (piece.ok()) text = *std::move(piece);
  }
  job.request.sink->OnToken(token, text);
}

void Engine::Impl::ReportRegionProgress(Job& job, Sequence& seq) {
  if (job.request.skill != Skill::kDetect &&
      job.request.skill != Skill::kPoint) {
    return;
  }
  const auto& run = static_cast<const RegionRun&>(*seq.run);
  RequestSink& sink = *job.request.sink;
  if (job.request.skill == Skill::kDetect) {
    for (; seq.objects_reported < run.boxes().size(); ++seq.objects_reported) {
      MarkOutput(job);
      sink.OnBox(run.boxes()[seq.objects_reported]);
    }
  } else {
    for (; seq.objects_reported < run.points().size(); ++seq.objects_reported) {
      MarkOutput(job);
      sink.OnPoint(run.points()[seq.objects_reported]);
    }
  }
}

void Engine::Impl::SweepFinished() {
  std::erase_if(running_,
                [](const std::unique_ptr<Job>& job) { return job->finished; });
}

void Engine::Impl::PublishGauges(int64_t last_batch_size) {
  int64_t kv_in_use = 0;
  for (const auto& job : running_) {
    for (const Sequence& seq : job->seqs) {
      if (seq.slot >= 0) kv_in_use += seq.pos;
    }
  }
  int64_t queued;
  {
    absl::MutexLock lock(&mu_);
    queued = n_queued_;
  }
  const PrefixCacheCounters& cache = prefix_cache_.counters();
  absl::MutexLock lock(&stats_mu_);
  stats_.queue_length = queued;
  stats_.running_requests = static_cast<int64_t>(running_.size());
  stats_.slots_in_use = slots_.n_used();
  stats_.n_slots = slots_.n_slots();
  stats_.kv_positions_in_use = kv_in_use;
  stats_.kv_positions_total =
      static_cast<int64_t>(kv_.n_slots) * kv_.n_positions;
  stats_.last_batch_size = last_batch_size;
  stats_.cache_entries = cache.entries;
  stats_.cache_bytes = cache.bytes;
  stats_.cache_hits = cache.hits;
  stats_.cache_misses = cache.misses;
  stats_.cache_evictions = cache.evictions;
}

// ---- Engine ----

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
  if (options.max_queue < 0 || options.max_queued_per_tenant < 0 ||
      options.max_admit_per_step < 1 || options.prefill_chunk_tokens < 1 ||
      options.prefill_token_budget < 1 || options.max_images_per_step < 1 ||
      options.prefix_cache_bytes < 0) {
    return absl::InvalidArgumentError(
        "engine limits must be positive (queue may be 0, cache bytes >= 0)");
  }
  ASSIGN_OR_RETURN(KvCache cache, model.NewKvCache(options.n_slots,
                                                   options.positions_per_slot));
  auto impl = std::make_unique<Impl>(model, std::move(options),
                                     std::move(on_step), std::move(cache));
  impl->Start();
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Engine::~Engine() = default;

absl::StatusOr<uint64_t> Engine::Submit(Request request) {
  return impl_->Submit(std::move(request));
}
void Engine::Cancel(uint64_t id) { impl_->Cancel(id); }
bool Engine::Drain(absl::Duration grace) { return impl_->Drain(grace); }
bool Engine::WaitIdle(absl::Duration timeout) {
  return impl_->WaitIdle(timeout);
}
EngineStats Engine::Stats() const { return impl_->Stats(); }
const EngineOptions& Engine::options() const { return impl_->options(); }

}  // namespace md::scheduler
