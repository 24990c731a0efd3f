// The engine thread: the loop and one step (engine.h lists the parts).
#include "scheduler/engine.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/log.h"
#include "base/status_macros.h"
#include "model/io/tensor_io.h"
#include "scheduler/batch_planner.h"
#include "scheduler/engine_impl.h"

namespace md::scheduler {
namespace {

// The engine thread wakes at least this often when idle, and this often
// while it waits for an image encode (to check deadlines).
constexpr absl::Duration kIdlePoll = absl::Milliseconds(200);
constexpr absl::Duration kBusyPoll = absl::Milliseconds(20);

double SecondsSince(absl::Time start) {
  return absl::ToDoubleSeconds(absl::Now() - start);
}

double Ms(absl::Duration d) { return absl::ToDoubleMilliseconds(d); }

// Time to first output is measured from the first output a job sends.
void MarkOutput(Job& job, int n_outputs) {
  if (n_outputs > 0 && !job.first_output.has_value()) {
    job.first_output = absl::Now();
  }
}

bool Generating(const Job& job, const Sequence& seq) {
  return !job.finished && seq.slot >= 0 && seq.run != nullptr &&
         !seq.run->done();
}

}  // namespace

Engine::Impl::Impl(std::unique_ptr<Executor> executor, EngineOptions options,
                   StepCallback on_step)
    : executor_(std::move(executor)),
      options_(std::move(options)),
      on_step_(std::move(on_step)),
      slots_(executor_->n_slots()),
      prefix_cache_(options_.prefix_cache_bytes) {
  encoder_ = std::make_unique<ImageEncoder>(*executor_, [this] {
    absl::MutexLock lock(&mu_);
    encode_ready_ = true;
  });
  PublishGauges(0);
}

void Engine::Impl::Start() {
  thread_ = std::thread([this] { Loop(); });
}

Engine::Impl::~Impl() {
  {
    absl::MutexLock lock(&mu_);
    accepting_ = false;
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

// ---- The loop ----

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
    // Nothing may leave this thread as an exception (std::terminate would
    // end every stream of every tenant); Step catches its own, this is the
    // last resort for the rest.
    try {
      TakeInbox();
      if (stopping) {
        AbortAll(absl::UnavailableError("the engine stopped"));
        return;
      }
      progressed = (!queue_.empty() || !running_.empty()) && Step();
    } catch (const std::exception& e) {
      LogEvent(LogLevel::kError, "engine_loop_error", {{"error", e.what()}});
      progressed = false;
    } catch (...) {
      LogEvent(LogLevel::kError, "engine_loop_error", {{"error", "unknown"}});
      progressed = false;
    }
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
  // The last line of defence: whatever a part throws ends the running
  // requests (their state is unknown), never the engine.
  try {
    RunStepParts(report);
  } catch (const std::exception& e) {
    FailRunning(
        absl::InternalError(absl::StrCat("engine step failed: ", e.what())));
  } catch (...) {
    FailRunning(absl::InternalError("engine step failed: unknown exception"));
  }
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

void Engine::Impl::RunStepParts(StepReport& report) {
  const absl::Time now = absl::Now();
  AdmitFromQueue(now);
  EndCancelledAndExpired(now);
  PlaceImagePrefixes(report);
  ForwardOneStep(report);
  FinishCompleted();
}

// ---- Admission ----

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
      .positions_per_slot = executor_->positions_per_slot(),
      .max_admit_per_step = options_.max_admit_per_step,
      .max_slots_per_tenant = options_.max_slots_per_tenant};
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
    if (absl::Status started = StartJob(job, now); !started.ok()) {
      Fail(job, started);
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

absl::Status Engine::Impl::StartJob(Job& job, absl::Time now) {
  job.admitted = now;
  // Slots first, so Finish can release whatever was taken.
  for (int i = 0; i < job.n_slots; ++i) {
    std::optional<int> slot = slots_.Acquire();
    if (!slot.has_value()) {
      return absl::InternalError("admitted without a free slot");
    }
    job.seqs.push_back(Sequence{.slot = *slot});
  }
  for (Sequence& seq : job.seqs) RETURN_IF_ERROR(StartSequence(job, seq));
  return absl::OkStatus();
}

// The job's next sequence in `seq`'s slot, waiting for its image prefix.
absl::Status Engine::Impl::StartSequence(Job& job, Sequence& seq) {
  const int index = job.next_sequence++;
  ASSIGN_OR_RETURN(SkillRun * run, CatchExceptions("starting a sequence", [&] {
                     return job.skill_job().StartSequence(
                         index, executor_->embedder());
                   }));
  DropPrefix(seq);  // A wave's earlier sequence may still hold one.
  seq = Sequence{.index = index,
                 .run = run,
                 .slot = seq.slot,
                 .side = job.skill_job().image_of(index)};
  slots_.Set(seq.slot, SlotState::kAwaitingImage);
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

// ---- The forward ----

// Every sequence that feeds this step gets its next input from its run: the
// whole prompt once (fed in chunks), or the next decode row.
void Engine::Impl::PrepareInputs() {
  for (auto& job : running_) {
    for (Sequence& seq : job->seqs) {
      if (!Generating(*job, seq)) continue;
      const bool needs_prompt =
          seq.state == SlotState::kPrefill && !seq.input.has_value();
      if (seq.state != SlotState::kDecode && !needs_prompt) continue;
      absl::StatusOr<StepInput> in =
          CatchExceptions("preparing a step input",
                          [&] { return seq.run->Next(executor_->embedder()); });
      if (!in.ok()) {
        Fail(*job, in.status());
        break;
      }
      seq.input = *std::move(in);
      seq.prompt_fed = 0;
    }
  }
}

// One forward over every feed. When the batch fails, each job's feeds are
// retried on their own, so only a failing job ends (K/V rows a failed
// attempt wrote are rewritten by the retry before anything reads them).
absl::StatusOr<std::vector<StepOutput>> Engine::Impl::ForwardAll(
    const std::vector<Feed>& feeds, const std::vector<Job*>& owners) {
  absl::StatusOr<std::vector<StepOutput>> outputs = CatchExceptions(
      "the batched forward", [&] { return executor_->Forward(feeds); });
  if (outputs.ok() || feeds.size() == 1) return outputs;
  LogEvent(LogLevel::kWarning, "batch_failed",
           {{"feeds", feeds.size()}, {"error", outputs.status().ToString()}});
  std::vector<StepOutput> each(feeds.size());
  std::vector<Job*> jobs;
  for (Job* job : owners) {
    if (std::find(jobs.begin(), jobs.end(), job) == jobs.end()) {
      jobs.push_back(job);
    }
  }
  for (Job* job : jobs) {
    if (job->finished) continue;
    std::vector<Feed> own;
    std::vector<size_t> indices;
    for (size_t k = 0; k < feeds.size(); ++k) {
      if (owners[k] != job) continue;
      own.push_back(feeds[k]);
      indices.push_back(k);
    }
    absl::StatusOr<std::vector<StepOutput>> alone = CatchExceptions(
        "a forward on its own", [&] { return executor_->Forward(own); });
    if (!alone.ok()) {
      Fail(*job, alone.status());
      continue;
    }
    for (size_t i = 0; i < indices.size(); ++i) {
      each[indices[i]] = std::move((*alone)[i]);
    }
  }
  return each;
}

void Engine::Impl::ForwardOneStep(StepReport& report) {
  PrepareInputs();
  // The planner's view of every sequence that feeds.
  std::vector<PlanSequence> snapshot;
  std::vector<std::pair<Job*, Sequence*>> by_id;
  for (auto& job : running_) {
    for (Sequence& seq : job->seqs) {
      if (!Generating(*job, seq) || !seq.input.has_value()) continue;
      if (seq.state != SlotState::kPrefill && seq.state != SlotState::kDecode) {
        continue;
      }
      const bool prefill = seq.state == SlotState::kPrefill;
      snapshot.push_back(
          {.id = static_cast<int>(by_id.size()),
           .phase = prefill ? SequencePhase::kPrefill : SequencePhase::kDecode,
           .prompt_tokens =
               prefill ? static_cast<int>(seq.input->embeds_TC.size(0)) : 0,
           .prompt_fed = seq.prompt_fed,
           .whole_prompt = seq.input->mask == AttentionMask::kFull});
      by_id.emplace_back(job.get(), &seq);
    }
  }
  const BatchPlan plan =
      PlanBatch(snapshot, {.chunk_tokens = options_.prefill_chunk_tokens,
                           .token_budget = options_.prefill_token_budget});
  report.decode_rows = plan.decode_rows;
  report.prefill_tokens = plan.prefill_tokens;
  report.batch_size = static_cast<int>(plan.feeds.size());
  if (plan.feeds.empty()) return;
  progress_ = true;

  std::vector<Feed> feeds;
  std::vector<Job*> owners;
  for (const PlannedFeed& p : plan.feeds) {
    auto [job, seq] = by_id[p.id];
    const StepInput& in = *seq->input;
    feeds.push_back(
        {.slot = seq->slot,
         .pos = seq->pos,
         .embeds_TC = p.prefill ? in.embeds_TC.narrow(0, p.offset, p.n_tokens)
                                : in.embeds_TC,
         .mask = in.mask,
         .heads = p.completes ? in.heads : HeadRequest{},
         .prefix_L2HQD = seq->prefix.prefix_L2HPD});
    owners.push_back(job);
  }

  const absl::Time start = absl::Now();
  absl::StatusOr<std::vector<StepOutput>> outputs = ForwardAll(feeds, owners);
  model_seconds_ += SecondsSince(start);
  if (!outputs.ok()) {
    for (Job* job : owners) Fail(*job, outputs.status());
    return;
  }

  int64_t tokens_in = 0, tokens_out = 0;
  for (size_t k = 0; k < plan.feeds.size(); ++k) {
    const PlannedFeed& p = plan.feeds[k];
    auto [job, seq] = by_id[p.id];
    if (job->finished) continue;
    seq->pos += p.n_tokens;
    if (p.prefill) {
      seq->prompt_fed += p.n_tokens;
      tokens_in += p.n_tokens;
    }
    if (!p.completes) continue;
    seq->input.reset();
    if (p.prefill) {
      seq->state = SlotState::kDecode;
      slots_.Set(seq->slot, SlotState::kDecode);
    }
    ++tokens_out;
    ConsumeOutput(*job, *seq, (*outputs)[k]);
  }
  absl::MutexLock lock(&stats_mu_);
  stats_.tokens_in += tokens_in;
  stats_.tokens_out += tokens_out;
}

// The run decides from its row's heads; the job emits what it decided.
void Engine::Impl::ConsumeOutput(Job& job, Sequence& seq,
                                 const StepOutput& out) {
  absl::Status consumed = CatchTorchStatus("consuming a step's outputs", [&] {
    seq.run->Accept(out);
    MarkOutput(job, job.skill_job().Emit(seq.index, *job.request.sink));
  });
  if (!consumed.ok()) return Fail(job, consumed);
  if (seq.run->done()) SequenceDone(job, seq);
}

// A sequence ended: its slot takes the job's next sequence, or is freed.
void Engine::Impl::SequenceDone(Job& job, Sequence& seq) {
  ++job.sequences_done;
  if (job.next_sequence < job.skill_job().n_sequences()) {
    if (absl::Status started = StartSequence(job, seq); !started.ok()) {
      Fail(job, started);
    }
    return;
  }
  ReleaseSequence(job, seq);
}

void Engine::Impl::FinishCompleted() {
  for (auto& job : running_) {
    if (job->finished || job->sequences_done < job->skill_job().n_sequences()) {
      continue;
    }
    absl::Status completed = CatchTorchStatus("completing a request", [&] {
      MarkOutput(*job, job->skill_job().Complete(*job->request.sink));
    });
    if (!completed.ok()) {
      Fail(*job, completed);
      continue;
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

void Engine::Impl::FailRunning(const absl::Status& status) {
  for (auto& job : running_) {
    if (!job->finished) Fail(*job, status);
  }
}

// ---- Ending requests ----

void Engine::Impl::Fail(Job& job, const absl::Status& status) {
  if (job.finished) return;
  Count([](EngineStats& s) { ++s.failed; });
  LogEvent(LogLevel::kError, "request_failed",
           {{"id", job.id},
            {"tenant", job.request.tenant},
            {"skill", SkillName(job.skill_job().skill())},
            {"error", status.ToString()}});
  Finish(job, status);
}

void Engine::Impl::DropPrefix(Sequence& seq) {
  if (!seq.prefix.prefix_L2HPD.defined()) return;
  prefix_cache_.Unpin(seq.prefix.id);
  seq.prefix = CachedPrefix{};
}

void Engine::Impl::ReleaseSequence(Job& job, Sequence& seq) {
  DropPrefix(seq);
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
  const SkillJob& skill = job.skill_job();
  RequestSummary summary;
  summary.stop = skill.stop_reason();
  summary.prompt_tokens = job.prompt_positions - executor_->prefix_len();
  summary.output_tokens = skill.output_tokens();
  summary.image_cache_hit = !job.seqs.empty() && job.image_cache_hit;
  summary.queued =
      (job.admitted == absl::Time() ? now : job.admitted) - job.submitted;
  if (job.first_output.has_value()) {
    summary.time_to_first = *job.first_output - job.arrived;
  }
  summary.total = now - job.arrived;
  LogEvent(LogLevel::kInfo, "request_done",
           {{"id", job.id},
            {"tenant", job.request.tenant},
            {"skill", SkillName(skill.skill())},
            {"slots", job.seqs.size()},
            {"status", absl::StatusCodeToString(status.code())},
            {"stop", StopReasonName(summary.stop)},
            {"prompt_tokens", summary.prompt_tokens},
            {"output_tokens", summary.output_tokens},
            {"cache_hit", summary.image_cache_hit},
            {"queued_ms", Ms(summary.queued)},
            {"ttft_ms", Ms(summary.time_to_first)},
            {"total_ms", Ms(summary.total)}});
  // A sink that throws must not take the engine with it.
  absl::Status reported = CatchTorchStatus(
      "reporting the end", [&] { job.request.sink->OnDone(status, summary); });
  if (!reported.ok()) {
    LogEvent(LogLevel::kError, "sink_failed",
             {{"id", job.id}, {"error", reported.ToString()}});
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
  std::map<std::string, TenantLoad> tenants;
  {
    absl::MutexLock lock(&mu_);
    queued = n_queued_;
    for (const auto& [tenant, n] : n_queued_by_tenant_) {
      tenants[tenant].waiting = n;
    }
  }
  for (const auto& job : running_) ++tenants[job->request.tenant].running;
  const PrefixCacheCounters& cache = prefix_cache_.counters();
  absl::MutexLock lock(&stats_mu_);
  stats_.queue_length = queued;
  stats_.running_requests = static_cast<int64_t>(running_.size());
  stats_.tenants = std::move(tenants);
  stats_.slots_in_use = slots_.n_used();
  stats_.n_slots = slots_.n_slots();
  stats_.kv_positions_in_use = kv_in_use;
  stats_.kv_positions_total = static_cast<int64_t>(executor_->n_slots()) *
                              executor_->positions_per_slot();
  stats_.last_batch_size = last_batch_size;
  stats_.cache_entries = cache.entries;
  stats_.cache_bytes = cache.bytes;
  stats_.cache_pinned_entries = cache.pinned_entries;
  stats_.cache_hits = cache.hits;
  stats_.cache_misses = cache.misses;
  stats_.cache_evictions = cache.evictions;
}

}  // namespace md::scheduler
