// The engine's insides, shared by its files (engine.cc: the loop and the
// step; submission.cc: Submit, Cancel, Drain; placement.cc: image prefixes).
// Not part of the scheduler's interface.
#ifndef MOONDREAM_SCHEDULER_ENGINE_IMPL_H_
#define MOONDREAM_SCHEDULER_ENGINE_IMPL_H_

#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "scheduler/admission.h"
#include "scheduler/engine.h"
#include "scheduler/executor.h"
#include "scheduler/image_encoder.h"
#include "scheduler/prefix_cache.h"
#include "scheduler/slots.h"

namespace md::scheduler {

// What one slot runs now: one of its job's sequences (a job with more
// sequences than slots runs them in waves, a slot taking the next when its
// sequence is done).
struct Sequence {
  int index = -1;           // Of the job's sequences.
  SkillRun* run = nullptr;  // Owned by the job.
  int slot = -1;
  int pos = 0;
  SlotState state = SlotState::kAwaitingImage;
  ImageSide side = ImageSide::kImage;
  // The image prefix K/V the sequence reads in place (pinned in the prefix
  // cache while held); sequences on one tensor share its reads.
  CachedPrefix prefix{};
  // The run's next input: the prompt (fed in chunks, kept until fed) or a
  // decode row (fed this step).
  std::optional<StepInput> input{};
  int prompt_fed = 0;
};

// A request from Submit to OnDone.
struct Job {
  uint64_t id = 0;
  Request request;
  int n_slots = 1;
  int prompt_positions = 0;  // Image prefix included.
  int max_new_positions = 0;
  absl::Time arrived;  // At the transport; <= submitted.
  absl::Time submitted;
  absl::Time admitted;
  std::optional<absl::Time> first_output;
  bool cancelled = false;
  bool finished = false;
  bool image_cache_hit = true;
  int next_sequence = 0;  // The next of the job's sequences to start.
  int sequences_done = 0;
  std::vector<Sequence> seqs;  // One per slot held.

  SkillJob& skill_job() { return *request.job; }
  const std::string& image_key(const Sequence& seq) const {
    return request.image->key_of(seq.side);
  }
};

class Engine::Impl {
 public:
  Impl(std::unique_ptr<Executor> executor, EngineOptions options,
       StepCallback on_step);
  ~Impl();

  void Start();
  const EngineOptions& options() const { return options_; }

  // ---- Any thread (submission.cc) ----
  absl::StatusOr<uint64_t> Submit(Request request);
  absl::Status CheckRoom(const std::string& tenant);
  void Cancel(uint64_t id);
  bool Drain(absl::Duration grace);
  bool WaitIdle(absl::Duration timeout);
  EngineStats Stats() const {
    absl::MutexLock lock(&stats_mu_);
    return stats_;
  }

 private:
  absl::Status Validate(const Request& request) const;
  absl::Status CheckRoomLocked(const std::string& tenant)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Count(void (*bump)(EngineStats&)) {
    absl::MutexLock lock(&stats_mu_);
    bump(stats_);
  }
  bool HasInput() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !inbox_.empty() || !cancels_.empty() || stopping_ || encode_ready_;
  }

  // ---- Engine thread (engine.cc) ----
  void Loop();
  void TakeInbox();
  // False when the step changed nothing (it waits for an image encode).
  bool Step();
  void RunStepParts(StepReport& report);
  void AdmitFromQueue(absl::Time now);
  absl::Status StartJob(Job& job, absl::Time now);
  absl::Status StartSequence(Job& job, Sequence& seq);
  void EndCancelledAndExpired(absl::Time now);
  void ForwardOneStep(StepReport& report);
  void PrepareInputs();
  absl::StatusOr<std::vector<StepOutput>> ForwardAll(
      const std::vector<Feed>& feeds, const std::vector<Job*>& owners);
  void ConsumeOutput(Job& job, Sequence& seq, const StepOutput& out);
  void SequenceDone(Job& job, Sequence& seq);
  void FinishCompleted();
  void AbortAll(const absl::Status& status);
  void FailRunning(const absl::Status& status);

  void Fail(Job& job, const absl::Status& status);
  void Finish(Job& job, const absl::Status& status);
  void ReleaseSequence(Job& job, Sequence& seq);
  void DropPrefix(Sequence& seq);
  void SweepFinished();
  void PublishGauges(int64_t last_batch_size);

  // ---- Engine thread (placement.cc) ----
  void PlaceImagePrefixes(StepReport& report);

  const std::unique_ptr<Executor> executor_;
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

}  // namespace md::scheduler

#endif  // MOONDREAM_SCHEDULER_ENGINE_IMPL_H_
