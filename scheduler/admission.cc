#include "scheduler/admission.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <tuple>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace md::scheduler {

void TenantUsage::Admit(absl::string_view tenant, int n) {
  if (n > 0) n_running_by_tenant_[tenant] += n;
}

void TenantUsage::Release(absl::string_view tenant, int n) {
  auto it = n_running_by_tenant_.find(tenant);
  if (it == n_running_by_tenant_.end()) return;
  it->second -= n;
  if (it->second <= 0) n_running_by_tenant_.erase(it);
}

int TenantUsage::Running(absl::string_view tenant) const {
  auto it = n_running_by_tenant_.find(tenant);
  return it == n_running_by_tenant_.end() ? 0 : it->second;
}

int TenantUsage::TotalRunning() const {
  int n_total = 0;
  for (const auto& [tenant, n_running] : n_running_by_tenant_) {
    n_total += n_running;
  }
  return n_total;
}

namespace {

bool IsTooLong(const QueuedRequest& request, int positions_per_slot) {
  if (request.prompt_positions < 0 || request.max_new_positions < 0 ||
      request.n_slots < 1) {
    return true;  // Malformed sizes can never be served.
  }
  const int64_t n_positions =
      int64_t{request.prompt_positions} + int64_t{request.max_new_positions};
  return n_positions > int64_t{positions_per_slot};
}

// One tenant's eligible requests, oldest first.
struct TenantQueue {
  absl::string_view tenant;
  std::deque<size_t> i_requests;  // Indices into the snapshot.
};

// Sorts out cancelled, expired and too-long requests; returns the eligible
// ones grouped by tenant, FIFO (enqueue time, then snapshot order) within each.
std::vector<TenantQueue> SortOut(const std::vector<QueuedRequest>& queue,
                                 const AdmissionLimits& limits, absl::Time now,
                                 AdmissionDecision& decision) {
  std::vector<size_t> i_eligible;
  for (size_t i = 0; i < queue.size(); ++i) {
    const QueuedRequest& request = queue[i];
    if (request.cancelled) {
      decision.cancelled.push_back(request.id);
    } else if (request.deadline <= now) {
      decision.expired.push_back(request.id);
    } else if (IsTooLong(request, limits.positions_per_slot)) {
      decision.too_long.push_back(request.id);
    } else {
      i_eligible.push_back(i);
    }
  }
  std::stable_sort(i_eligible.begin(), i_eligible.end(),
                   [&queue](size_t a, size_t b) {
                     return queue[a].enqueued < queue[b].enqueued;
                   });

  std::vector<TenantQueue> tenants;
  absl::flat_hash_map<absl::string_view, size_t> i_tenant_by_name;
  for (size_t i : i_eligible) {
    const absl::string_view tenant = queue[i].tenant;
    auto [it, inserted] = i_tenant_by_name.try_emplace(tenant, tenants.size());
    if (inserted) tenants.push_back(TenantQueue{tenant, {}});
    tenants[it->second].i_requests.push_back(i);
  }
  return tenants;
}

// The tenant that gets the next slot: fewest running, then oldest head
// request, then name. Returns tenants.size() when none has requests left.
size_t PickTenant(const std::vector<TenantQueue>& tenants,
                  const std::vector<QueuedRequest>& queue,
                  const TenantUsage& usage) {
  size_t i_best = tenants.size();
  auto key = [&](size_t i_tenant) {
    const TenantQueue& t = tenants[i_tenant];
    const size_t i_head = t.i_requests.front();
    return std::make_tuple(usage.Running(t.tenant), queue[i_head].enqueued,
                           t.tenant, i_head);
  };
  for (size_t i = 0; i < tenants.size(); ++i) {
    if (tenants[i].i_requests.empty()) continue;
    if (i_best == tenants.size() || key(i) < key(i_best)) i_best = i;
  }
  return i_best;
}

// Whether a tenant running `n_running` slots may not take `n_slots` more.
bool AtTenantCap(int n_running, int n_slots, int max_slots_per_tenant) {
  return max_slots_per_tenant > 0 && n_running > 0 &&
         n_running + n_slots > max_slots_per_tenant;
}

}  // namespace

AdmissionDecision DecideAdmission(const std::vector<QueuedRequest>& queue,
                                  const AdmissionLimits& limits, absl::Time now,
                                  TenantUsage& usage) {
  AdmissionDecision decision;
  std::vector<TenantQueue> tenants = SortOut(queue, limits, now, decision);

  int n_free = std::max(0, limits.n_free_slots);
  const int max_admit = std::max(0, limits.max_admit_per_step);
  while (n_free > 0 && static_cast<int>(decision.admit.size()) < max_admit) {
    const size_t i_tenant = PickTenant(tenants, queue, usage);
    if (i_tenant == tenants.size()) break;  // Nothing eligible left.
    TenantQueue& tenant = tenants[i_tenant];
    const QueuedRequest& request = queue[tenant.i_requests.front()];
    if (AtTenantCap(usage.Running(request.tenant), request.n_slots,
                    limits.max_slots_per_tenant)) {
      tenant.i_requests.clear();  // Stays queued; others may go first.
      continue;
    }
    // The fair pick does not fit: admit nobody else, so that freed slots
    // gather for it instead of going to smaller requests forever.
    if (request.n_slots > n_free) break;
    tenant.i_requests.pop_front();
    decision.admit.push_back(request.id);
    usage.Admit(request.tenant, request.n_slots);
    n_free -= request.n_slots;
  }
  return decision;
}

absl::Status CheckEnqueue(int queue_length, int max_queue) {
  if (queue_length < max_queue) return absl::OkStatus();
  return absl::ResourceExhaustedError(
      absl::StrCat("queue full (", queue_length, " of ", std::max(max_queue, 0),
                   " requests); retry after a short backoff"));
}

}  // namespace md::scheduler
