// The engine: one thread owns the model, the slot KV cache and the image
// prefix cache, and runs the continuous-batching loop (docs/DESIGN.md §3).
// Other threads Submit requests, Cancel them, read Stats, and get results
// through each request's sink.
//
// One engine step (engine.cc):
//   TakeInbox            new requests join the queue; cancellations land
//   AdmitFromQueue       the admission policy (admission.h) picks requests
//                        for free slots; expired / cancelled / too long end
//   EndCancelledAndExpired  running requests past their deadline or
//                        cancelled free their slots
//   PlaceImagePrefixes   (placement.cc) cache hits are copied into slots;
//                        misses go to the image encoder thread as one batch
//                        (vision + prefix prefill) and are placed when it
//                        finishes, while the other streams keep decoding
//   ForwardOneStep       the batch planner (batch_planner.h) picks prompt
//                        chunks and decode rows; one forward on the
//                        executor; each sequence's job consumes its rows
//   FinishCompleted      done requests report and free their slots
// Submission (Submit, Cancel, Drain) is in submission.cc. The engine knows
// no skill: a request's job (model/skills/jobs.h) does.
//
// Failures: anything a step's work throws or returns ends the requests it
// belongs to with INTERNAL (a failed batched forward is retried one sequence
// at a time, so only the failing one ends); the engine goes on.
#ifndef MOONDREAM_SCHEDULER_ENGINE_H_
#define MOONDREAM_SCHEDULER_ENGINE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "model/net/moondream.h"
#include "scheduler/executor.h"
#include "scheduler/request.h"

namespace md::scheduler {

struct EngineOptions {
  int n_slots = 8;
  // Context per slot; 0 means the model's max_context.
  int positions_per_slot = 0;
  // Requests waiting for a slot; a full queue rejects at once.
  int max_queue = 256;
  // Requests one tenant may have waiting (0: only max_queue applies), so a
  // tenant's burst cannot fill the queue that everyone shares.
  int max_queued_per_tenant = 0;
  // Slots one tenant may hold at once (0: all). Below n_slots it keeps
  // slots free for other tenants' newcomers (see admission.h).
  int max_slots_per_tenant = 0;
  // Requests admitted per step (bounds the prefill work one step starts).
  int max_admit_per_step = 8;
  // Prompts are prefilled in chunks of at most this many tokens, cut at
  // fixed offsets so that a prompt's arithmetic never depends on the load.
  int prefill_chunk_tokens = 128;
  // Prompt tokens prefilled per step, across requests (at least one chunk
  // always runs, so nothing starves).
  int prefill_token_budget = 256;
  // Images vision-encoded per step (one batch); the rest wait a step.
  int max_images_per_step = 4;
  int64_t prefix_cache_bytes = int64_t{2} << 30;
  // Part of every image key, so a cache never serves another model's KV.
  std::string model_id = "model";
};

// One tenant's requests at the end of the last step.
struct TenantLoad {
  int64_t waiting = 0;  // Queued for a slot.
  int64_t running = 0;  // Requests holding slots (one may hold several).
  friend bool operator==(const TenantLoad&, const TenantLoad&) = default;
};

// Counters only grow; gauges are the state after the last step. The engine
// publishes its part at the end of each step (after the sinks of that step
// were called); Submit's rejections count at once.
struct EngineStats {
  // Gauges.
  int64_t queue_length = 0;
  int64_t running_requests = 0;  // Requests, not slots: see slots_in_use.
  int64_t slots_in_use = 0;
  // Tenants with requests waiting or running (others are absent). Only
  // tenants the transports authenticated reach the engine, so the map is
  // as small as the API keys file.
  std::map<std::string, TenantLoad> tenants;
  int64_t n_slots = 0;
  int64_t kv_positions_in_use = 0;
  int64_t kv_positions_total = 0;
  int64_t last_batch_size = 0;  // Sequences fed in the last step.
  int64_t cache_entries = 0;
  int64_t cache_bytes = 0;
  // Cached prefixes that running sequences read now (never evicted).
  int64_t cache_pinned_entries = 0;
  // Counters.
  int64_t steps = 0;
  int64_t submitted = 0;
  int64_t completed = 0;       // Ended OK.
  int64_t tokens_in = 0;       // Prompt positions prefilled (after the prefix).
  int64_t tokens_out = 0;      // Tokens, coordinates and sizes decoded.
  int64_t images_encoded = 0;  // Vision encoder runs (one per image).
  int64_t prefix_prefills = 0;  // 730-position prefix prefills.
  int64_t cache_hits = 0;
  int64_t cache_misses = 0;
  int64_t cache_evictions = 0;
  int64_t rejected_queue_full = 0;
  int64_t rejected_tenant_limit = 0;
  int64_t rejected_too_long = 0;
  int64_t rejected_invalid = 0;
  int64_t rejected_unavailable = 0;  // Submitted while draining.
  int64_t expired_queued = 0;
  int64_t expired_running = 0;
  int64_t cancelled = 0;
  int64_t failed = 0;        // Internal errors.
  double step_seconds = 0;   // Total wall time of steps.
  double model_seconds = 0;  // Of which: forward and heads.
};

// What one step did, for histograms (called on the engine thread).
struct StepReport {
  int batch_size = 0;         // Sequences fed.
  int decode_rows = 0;        // Of which one-row decode steps.
  int prefill_tokens = 0;     // Prompt tokens fed.
  int images_encoded = 0;     // Encodes that finished before this step.
  double encode_seconds = 0;  // Their time on the encoder thread.
  double step_seconds = 0;
  double model_seconds = 0;  // Forward and heads on the engine thread.
};
using StepCallback = std::function<void(const StepReport&)>;

class Engine {
 public:
  // Starts the engine thread on the model, with a KV cache of
  // options.n_slots × options.positions_per_slot. `model` must outlive the
  // engine.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(
      const Model& model, EngineOptions options, StepCallback on_step = {});
  // The same on any executor (tests use a fake); its slots and context
  // override options.n_slots and options.positions_per_slot.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(
      std::unique_ptr<Executor> executor, EngineOptions options,
      StepCallback on_step = {});
  // Stops: queued and running requests end with UNAVAILABLE.
  ~Engine();

  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Queues a request and returns its id. Errors come back here, at once,
  // and the sink is then never called: INVALID_ARGUMENT (bad request),
  // OUT_OF_RANGE (cannot fit a slot's context), RESOURCE_EXHAUSTED (queue
  // full; retry later), UNAVAILABLE (draining or stopped). Everything after
  // acceptance, errors included, arrives through the sink.
  absl::StatusOr<uint64_t> Submit(Request request);
  // What Submit would answer now about room for one more request of
  // `tenant` (queue full, tenant limit, draining), so callers can refuse
  // before costly work such as decoding the image. Counts as Submit's
  // refusals do; a later Submit may still refuse.
  absl::Status CheckRoom(const std::string& tenant);
  // Ends the request with CANCELLED at the next step; its slot is freed.
  // Unknown or finished ids are ignored.
  void Cancel(uint64_t id);

  // Stops admitting (Submit → UNAVAILABLE) and waits until queued and
  // running requests have ended or `grace` passes. True when all ended.
  bool Drain(absl::Duration grace);
  // True once nothing is queued or running.
  bool WaitIdle(absl::Duration timeout);

  EngineStats Stats() const;
  const EngineOptions& options() const;

  class Impl;

 private:
  explicit Engine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace md::scheduler

#endif  // MOONDREAM_SCHEDULER_ENGINE_H_
