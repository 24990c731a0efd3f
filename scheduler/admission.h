// Admission policy: which queued requests enter free slots this step.
//
// The engine thread takes a snapshot of its queue and calls DecideAdmission
// once per step. The decision sorts every queued request into at most one
// bucket; a request in no bucket stays queued for a later step:
//
//   queue ──► cancelled?  ──yes──► cancelled   (drop; the caller already
//      │                                       knows)
//      ├──► deadline <= now? ─yes─► expired    (DEADLINE_EXCEEDED)
//      ├──► prompt + max_new > positions_per_slot ─► too_long (never fits)
//      └──► eligible ──► fair pick while free slots remain, at most
//                        max_admit_per_step requests ──► admit (rest stay
//                        queued)
//
// Fairness: among tenants with eligible requests, the next slot goes to the
// tenant with the fewest running slots (ties: the tenant whose oldest
// eligible request was enqueued first, then the tenant name). Within a
// tenant, requests are admitted first in, first out. So a tenant with a deep
// backlog cannot starve another: a newcomer with nothing running wins every
// freed slot until it holds as many as the backlogged tenant. A tenant at
// max_slots_per_tenant is passed over: the slots it may not take stay free
// for others, so a newcomer does not wait for a backlogged tenant's request
// to finish (latency isolation, paid for in that tenant's throughput when
// it is alone). When the fair
// pick needs more slots than are free (a job of several sequences takes one
// slot each, up to the engine's slot count), admission
// stops for the step: freed slots gather for it, so small requests of other
// tenants cannot starve it.
//
// The only state is TenantUsage (running slots per tenant), owned by the
// engine: DecideAdmission counts each admitted request in it, and the engine
// calls Release when a slot is freed (finished, cancelled, expired, failed).
#ifndef MOONDREAM_SCHEDULER_ADMISSION_H_
#define MOONDREAM_SCHEDULER_ADMISSION_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace md::scheduler {

struct QueuedRequest {
  uint64_t id = 0;
  std::string tenant;
  absl::Time enqueued;
  // absl::InfiniteFuture() means no deadline.
  absl::Time deadline = absl::InfiniteFuture();
  // Positions the request needs in a slot's context: its prompt (image
  // prefix included) and the most it may generate.
  int prompt_positions = 0;
  int max_new_positions = 0;
  // Slots the request holds at once (a job of several sequences runs them
  // side by side; most need one).
  int n_slots = 1;
  bool cancelled = false;
};

struct AdmissionLimits {
  int max_queue = 0;           // CheckEnqueue's bound on the queue length.
  int n_free_slots = 0;        // Slots free at this step.
  int positions_per_slot = 0;  // Context length of one slot.
  int max_admit_per_step = 0;  // Caps prefill work started per step.
  // Most slots one tenant may hold (0: no cap). A tenant holding none may
  // always start one request, however many slots it takes.
  int max_slots_per_tenant = 0;
};

// Ids only; each queued id appears in at most one field. Ids in `admit` are
// in the order they were picked.
struct AdmissionDecision {
  std::vector<uint64_t> admit;
  std::vector<uint64_t> expired;
  std::vector<uint64_t> cancelled;
  std::vector<uint64_t> too_long;
};

// Running slots per tenant: the fairness state, owned by the engine thread.
class TenantUsage {
 public:
  // `n` slots were given to a request of `tenant`.
  void Admit(absl::string_view tenant, int n = 1);
  // `n` slots of `tenant` were freed. Releasing more than was admitted is
  // ignored (the count stays at zero).
  void Release(absl::string_view tenant, int n = 1);
  int Running(absl::string_view tenant) const;
  int TotalRunning() const;

 private:
  // Tenants with zero running slots are erased, so the map stays small.
  absl::flat_hash_map<std::string, int> n_running_by_tenant_;
};

// Decides this step's admissions from a snapshot of the queue. Pure apart
// from `usage`, which counts every admitted request. Negative limits are
// treated as zero.
AdmissionDecision DecideAdmission(const std::vector<QueuedRequest>& queue,
                                  const AdmissionLimits& limits, absl::Time now,
                                  TenantUsage& usage);

// OK while a request fits in the queue; RESOURCE_EXHAUSTED with a retry hint
// when `queue_length` has reached `max_queue`. Never blocks.
absl::Status CheckEnqueue(int queue_length, int max_queue);

}  // namespace md::scheduler

#endif  // MOONDREAM_SCHEDULER_ADMISSION_H_
