// Tests of the admission policy, with a fake engine loop in place of the
// model: every admitted request holds its slot for a fixed number of steps.
#include "scheduler/admission.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace md::scheduler {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

const absl::Time kT0 = absl::FromUnixSeconds(1'700'000'000);

// Step t of the fake engine happens at kT0 + t seconds.
absl::Time AtStep(int t_step) { return kT0 + absl::Seconds(t_step); }

QueuedRequest Request(uint64_t id, std::string tenant, absl::Time enqueued) {
  QueuedRequest request;
  request.id = id;
  request.tenant = std::move(tenant);
  request.enqueued = enqueued;
  request.prompt_positions = 750;
  request.max_new_positions = 64;
  return request;
}

AdmissionLimits Limits(int n_free_slots, int max_admit_per_step = 64) {
  return AdmissionLimits{.max_queue = 1000,
                         .n_free_slots = n_free_slots,
                         .positions_per_slot = 2048,
                         .max_admit_per_step = max_admit_per_step};
}

// What one step of the fake engine did.
struct StepRecord {
  int t_step = 0;
  AdmissionDecision decision;
  std::vector<uint64_t> running;  // Ids holding slots after admission.
};

// The engine loop with the model faked: n_slots slots, each admitted request
// decodes for n_steps_per_request steps, then frees its slot at the end of
// that step. Arrivals join the queue at the start of their step.
class FakeEngine {
 public:
  FakeEngine(int n_slots, int n_steps_per_request, int max_admit_per_step)
      : n_slots_(n_slots),
        n_steps_per_request_(n_steps_per_request),
        max_admit_per_step_(max_admit_per_step) {}

  // `request.enqueued` picks the step it arrives at (its whole seconds).
  void Arrive(QueuedRequest request) { arrivals_.push_back(request); }

  StepRecord Step() {
    const absl::Time now = AtStep(t_step_);
    for (auto it = arrivals_.begin(); it != arrivals_.end();) {
      if (it->enqueued < now + absl::Seconds(1)) {
        queue_.push_back(*it);
        it = arrivals_.erase(it);
      } else {
        ++it;
      }
    }

    AdmissionLimits limits =
        Limits(n_slots_ - SlotsInUse(), max_admit_per_step_);
    StepRecord record;
    record.t_step = t_step_;
    record.decision = DecideAdmission(queue_, limits, now, usage_);
    EXPECT_LE(record.decision.admit.size(),
              static_cast<size_t>(limits.n_free_slots));
    for (uint64_t id : record.decision.admit) {
      const QueuedRequest& request = Find(id);
      slots_.push_back(
          Slot{id, request.tenant, n_steps_per_request_, request.n_slots});
      t_start_by_id[id] = t_step_;
    }
    EXPECT_LE(SlotsInUse(), n_slots_);
    EXPECT_EQ(usage_.TotalRunning(), SlotsInUse());
    RemoveFromQueue(record.decision);
    for (const Slot& slot : slots_) record.running.push_back(slot.id);

    // "Decode" one position for every slot; release the finished ones.
    for (auto it = slots_.begin(); it != slots_.end();) {
      if (--it->n_steps_left == 0) {
        t_finish_by_id[it->id] = t_step_;
        usage_.Release(it->tenant, it->n_slots);
        it = slots_.erase(it);
      } else {
        ++it;
      }
    }
    ++t_step_;
    return record;
  }

  bool Idle() const {
    return queue_.empty() && arrivals_.empty() && slots_.empty();
  }

  // Marks a queued request cancelled, as an RPC's OnCancel would.
  void Cancel(uint64_t id) {
    for (QueuedRequest& request : queue_) {
      if (request.id == id) request.cancelled = true;
    }
  }

  std::map<uint64_t, int> t_start_by_id;
  std::map<uint64_t, int> t_finish_by_id;

 private:
  struct Slot {
    uint64_t id;
    std::string tenant;
    int n_steps_left;
    int n_slots;
  };

  int SlotsInUse() const {
    int n = 0;
    for (const Slot& slot : slots_) n += slot.n_slots;
    return n;
  }

  const QueuedRequest& Find(uint64_t id) const {
    return *std::find_if(
        queue_.begin(), queue_.end(),
        [id](const QueuedRequest& request) { return request.id == id; });
  }

  void RemoveFromQueue(const AdmissionDecision& decision) {
    std::vector<uint64_t> done = decision.admit;
    for (const auto* ids :
         {&decision.expired, &decision.cancelled, &decision.too_long}) {
      done.insert(done.end(), ids->begin(), ids->end());
    }
    std::erase_if(queue_, [&done](const QueuedRequest& request) {
      return std::find(done.begin(), done.end(), request.id) != done.end();
    });
  }

  const int n_slots_;
  const int n_steps_per_request_;
  const int max_admit_per_step_;
  int t_step_ = 0;
  std::vector<QueuedRequest> arrivals_;
  std::vector<QueuedRequest> queue_;
  std::vector<Slot> slots_;
  TenantUsage usage_;
};

TEST(CheckEnqueueTest, AcceptsWhileRoomLeft) {
  EXPECT_TRUE(CheckEnqueue(0, 8).ok());
  EXPECT_TRUE(CheckEnqueue(7, 8).ok());
}

TEST(CheckEnqueueTest, FullQueueIsResourceExhaustedWithRetryHint) {
  const absl::Status status = CheckEnqueue(8, 8);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(status.message(), HasSubstr("queue full (8 of 8 requests)"));
  EXPECT_THAT(status.message(), HasSubstr("retry"));
  EXPECT_EQ(CheckEnqueue(9, 8).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(CheckEnqueue(0, 0).code(), absl::StatusCode::kResourceExhausted);
}

TEST(DecideAdmissionTest, EmptyQueueAdmitsNothing) {
  TenantUsage usage;
  const AdmissionDecision decision =
      DecideAdmission({}, Limits(4), AtStep(0), usage);
  EXPECT_THAT(decision.admit, IsEmpty());
  EXPECT_THAT(decision.expired, IsEmpty());
  EXPECT_THAT(decision.cancelled, IsEmpty());
  EXPECT_THAT(decision.too_long, IsEmpty());
}

TEST(DecideAdmissionTest, NeverAdmitsMoreThanFreeSlotsOrStepCap) {
  std::vector<QueuedRequest> queue;
  for (uint64_t id = 1; id <= 10; ++id) {
    queue.push_back(Request(id, id % 2 ? "a" : "b", AtStep(0)));
  }
  for (const auto& [n_free, n_cap, n_expected] :
       std::vector<std::tuple<int, int, size_t>>{
           {0, 8, 0}, {3, 8, 3}, {8, 2, 2}, {20, 20, 10}, {-1, 5, 0}}) {
    TenantUsage usage;
    const AdmissionDecision decision =
        DecideAdmission(queue, Limits(n_free, n_cap), AtStep(0), usage);
    EXPECT_EQ(decision.admit.size(), n_expected)
        << "free " << n_free << " cap " << n_cap;
    EXPECT_EQ(usage.TotalRunning(), static_cast<int>(n_expected));
  }
}

TEST(DecideAdmissionTest, FifoWithinTenantByEnqueueTimeThenQueueOrder) {
  // Snapshot order differs from enqueue order; 4 and 5 tie on time.
  std::vector<QueuedRequest> queue = {
      Request(3, "a", AtStep(3)), Request(1, "a", AtStep(1)),
      Request(4, "a", AtStep(4)), Request(5, "a", AtStep(4)),
      Request(2, "a", AtStep(2))};
  TenantUsage usage;
  const AdmissionDecision decision =
      DecideAdmission(queue, Limits(5), AtStep(10), usage);
  EXPECT_THAT(decision.admit, ElementsAre(1, 2, 3, 4, 5));
  EXPECT_EQ(usage.Running("a"), 5);
}

TEST(DecideAdmissionTest, FewestRunningTenantGoesFirst) {
  std::vector<QueuedRequest> queue = {Request(1, "a", AtStep(0)),
                                      Request(2, "a", AtStep(1)),
                                      Request(3, "b", AtStep(2))};
  TenantUsage usage;
  usage.Admit("a");  // "a" already holds a slot, "b" none.
  const AdmissionDecision decision =
      DecideAdmission(queue, Limits(1), AtStep(5), usage);
  EXPECT_THAT(decision.admit, ElementsAre(3));
  EXPECT_EQ(usage.Running("b"), 1);
}

TEST(DecideAdmissionTest, TenantAtItsSlotCapLeavesSlotsFree) {
  // "a" is backlogged and holds 2 of its 3 allowed slots; 4 slots are free.
  std::vector<QueuedRequest> queue;
  for (uint64_t id = 1; id <= 4; ++id) {
    queue.push_back(Request(id, "a", AtStep(static_cast<int>(id))));
  }
  TenantUsage usage;
  usage.Admit("a", 2);
  AdmissionLimits limits = Limits(4);
  limits.max_slots_per_tenant = 3;
  AdmissionDecision decision = DecideAdmission(queue, limits, AtStep(9), usage);
  EXPECT_THAT(decision.admit, ElementsAre(1));  // Up to the cap, no more.
  EXPECT_EQ(usage.Running("a"), 3);

  // A newcomer finds the slots "a" could not take.
  queue.erase(queue.begin());
  queue.push_back(Request(9, "b", AtStep(8)));
  decision = DecideAdmission(queue, limits, AtStep(9), usage);
  EXPECT_THAT(decision.admit, ElementsAre(9));
  EXPECT_EQ(usage.Running("a"), 3);
}

TEST(DecideAdmissionTest, SlotCapNeverBlocksATenantRunningNothing) {
  QueuedRequest gaze = Request(1, "a", kT0);
  gaze.n_slots = 6;  // more than the cap, but "a" runs nothing
  TenantUsage usage;
  AdmissionLimits limits = Limits(8);
  limits.max_slots_per_tenant = 4;
  const AdmissionDecision decision =
      DecideAdmission({gaze, Request(2, "a", AtStep(1))}, limits, kT0, usage);
  EXPECT_THAT(decision.admit, ElementsAre(1));
  EXPECT_EQ(usage.Running("a"), 6);
}

TEST(DecideAdmissionTest, CancelledRequestsAreReportedNotAdmitted) {
  std::vector<QueuedRequest> queue = {Request(1, "a", AtStep(0)),
                                      Request(2, "a", AtStep(1))};
  queue[0].cancelled = true;
  queue[0].deadline = AtStep(0);  // Cancellation wins over expiry.
  TenantUsage usage;
  const AdmissionDecision decision =
      DecideAdmission(queue, Limits(1), AtStep(5), usage);
  EXPECT_THAT(decision.cancelled, ElementsAre(1));
  EXPECT_THAT(decision.expired, IsEmpty());
  EXPECT_THAT(decision.admit, ElementsAre(2));  // The slot goes to the next.
}

TEST(DecideAdmissionTest, DeadlineAtOrBeforeNowExpires) {
  std::vector<QueuedRequest> queue = {Request(1, "a", AtStep(0)),
                                      Request(2, "a", AtStep(0)),
                                      Request(3, "a", AtStep(0))};
  queue[0].deadline = AtStep(4);
  queue[1].deadline = AtStep(5);
  queue[2].deadline = AtStep(6);
  TenantUsage usage;
  const AdmissionDecision decision =
      DecideAdmission(queue, Limits(3), AtStep(5), usage);
  EXPECT_THAT(decision.expired, ElementsAre(1, 2));
  EXPECT_THAT(decision.admit, ElementsAre(3));
}

TEST(DecideAdmissionTest, TooLongIsRejectedEvenWithFreeSlots) {
  std::vector<QueuedRequest> queue = {Request(1, "a", AtStep(0)),
                                      Request(2, "a", AtStep(1)),
                                      Request(3, "a", AtStep(2))};
  queue[0].prompt_positions = 2000;
  queue[0].max_new_positions = 49;  // 2049 > 2048.
  queue[1].prompt_positions = 2000;
  queue[1].max_new_positions = 48;  // Exactly fills the slot.
  queue[2].max_new_positions = -1;  // Malformed: can never be served.
  TenantUsage usage;
  const AdmissionDecision decision =
      DecideAdmission(queue, Limits(8), AtStep(5), usage);
  EXPECT_THAT(decision.too_long, ElementsAre(1, 3));
  EXPECT_THAT(decision.admit, ElementsAre(2));
}

// A 20-slot request (accurate gaze) waits for 20 free slots, and while it is
// the fair pick nobody else is admitted: slots gather until it fits.
TEST(DecideAdmissionTest, MultiSlotRequestNeedsAllItsSlotsFree) {
  QueuedRequest gaze = Request(1, "a", kT0);
  gaze.n_slots = 20;
  const std::vector<QueuedRequest> queue = {
      gaze, Request(2, "a", kT0 + absl::Seconds(1)),
      Request(3, "b", kT0 + absl::Seconds(2))};
  TenantUsage usage;
  // "a" is next (both run nothing; its request is older) and its head needs
  // 20 slots: nobody is admitted, so freed slots gather for it.
  AdmissionDecision decision = DecideAdmission(queue, Limits(8), kT0, usage);
  EXPECT_THAT(decision.admit, IsEmpty());
  EXPECT_EQ(usage.TotalRunning(), 0);

  TenantUsage fresh;
  decision = DecideAdmission(queue, Limits(21), kT0, fresh);
  EXPECT_THAT(decision.admit, ElementsAre(1, 3));
  EXPECT_EQ(fresh.Running("a"), 20);
  EXPECT_EQ(fresh.TotalRunning(), 21);
  fresh.Release("a", 20);
  EXPECT_EQ(fresh.TotalRunning(), 1);
}

TEST(DecideAdmissionTest, ZeroSlotRequestIsMalformed) {
  QueuedRequest bad = Request(1, "a", kT0);
  bad.n_slots = 0;
  TenantUsage usage;
  const AdmissionDecision decision =
      DecideAdmission({bad}, Limits(4), kT0, usage);
  EXPECT_THAT(decision.too_long, ElementsAre(1));
  EXPECT_THAT(decision.admit, IsEmpty());
}

TEST(TenantUsageTest, ReleaseNeverGoesBelowZero) {
  TenantUsage usage;
  usage.Release("a");
  EXPECT_EQ(usage.Running("a"), 0);
  usage.Admit("a");
  usage.Admit("a");
  usage.Admit("b");
  usage.Release("a");
  EXPECT_EQ(usage.Running("a"), 1);
  EXPECT_EQ(usage.TotalRunning(), 2);
}

// Per-step expected state: 2 slots, 2 steps per request; tenant "a" queues
// 3 requests at step 0, tenant "b" queues 2 at step 1.
TEST(FakeEngineTest, PerStepTable) {
  FakeEngine engine(/*n_slots=*/2, /*n_steps_per_request=*/2,
                    /*max_admit_per_step=*/2);
  for (uint64_t id : {11, 12, 13}) engine.Arrive(Request(id, "a", AtStep(0)));
  for (uint64_t id : {21, 22}) engine.Arrive(Request(id, "b", AtStep(1)));

  struct Expected {
    int t_step;
    std::vector<uint64_t> admit;
    std::vector<uint64_t> running;
  };
  const std::vector<Expected> table = {
      // Both slots to "a"; "b" has not arrived.
      {0, {11, 12}, {11, 12}},
      // "b" arrives; no slot is free. 11 and 12 finish.
      {1, {}, {11, 12}},
      // Both tenants at 0 running: "a"'s 13 is older; then "b" has fewer.
      {2, {13, 21}, {13, 21}},
      {3, {}, {13, 21}},
      {4, {22}, {22}},
      {5, {}, {22}},
  };
  for (const Expected& expected : table) {
    const StepRecord record = engine.Step();
    ASSERT_EQ(record.t_step, expected.t_step);
    EXPECT_EQ(record.decision.admit, expected.admit)
        << "step " << expected.t_step;
    EXPECT_EQ(record.running, expected.running) << "step " << expected.t_step;
  }
  EXPECT_TRUE(engine.Idle());
}

// A deadline passes while the request waits behind busy slots.
TEST(FakeEngineTest, DeadlineExpiresWhileQueued) {
  FakeEngine engine(/*n_slots=*/1, /*n_steps_per_request=*/5,
                    /*max_admit_per_step=*/1);
  engine.Arrive(Request(1, "a", AtStep(0)));
  QueuedRequest impatient = Request(2, "b", AtStep(0));
  impatient.deadline = AtStep(3);
  engine.Arrive(impatient);
  engine.Arrive(Request(3, "b", AtStep(0)));

  std::vector<int> t_expired;
  for (int i = 0; i < 20 && !engine.Idle(); ++i) {
    const StepRecord record = engine.Step();
    if (!record.decision.expired.empty()) {
      EXPECT_THAT(record.decision.expired, ElementsAre(2));
      t_expired.push_back(record.t_step);
    }
  }
  EXPECT_THAT(t_expired, ElementsAre(3));
  EXPECT_FALSE(engine.t_start_by_id.contains(2));
  EXPECT_EQ(engine.t_start_by_id.at(3), 5);  // First free slot after 1.
}

TEST(FakeEngineTest, CancelledWhileQueuedNeverStarts) {
  FakeEngine engine(/*n_slots=*/1, /*n_steps_per_request=*/3,
                    /*max_admit_per_step=*/1);
  for (uint64_t id : {1, 2, 3}) engine.Arrive(Request(id, "a", AtStep(0)));
  StepRecord record = engine.Step();
  EXPECT_THAT(record.decision.admit, ElementsAre(1));
  engine.Cancel(2);
  record = engine.Step();
  EXPECT_THAT(record.decision.cancelled, ElementsAre(2));
  EXPECT_THAT(record.decision.admit, IsEmpty());
  while (!engine.Idle()) engine.Step();
  EXPECT_FALSE(engine.t_start_by_id.contains(2));
  EXPECT_EQ(engine.t_start_by_id.at(3), 3);
}

// A 3-slot request is not starved by another tenant's steady stream of
// 1-slot requests: once it is the fair pick, slots are held for it.
TEST(FakeEngineTest, MultiSlotRequestIsNotStarvedBySmallOnes) {
  // One admission per step, so "b"'s slots free one at a time.
  FakeEngine engine(/*n_slots=*/4, /*n_steps_per_request=*/5,
                    /*max_admit_per_step=*/1);
  for (uint64_t id = 1; id <= 60; ++id) {
    engine.Arrive(Request(id, "b", AtStep(0) + absl::Nanoseconds(id)));
  }
  QueuedRequest big = Request(100, "a", AtStep(2));
  big.n_slots = 3;
  engine.Arrive(big);
  for (int i = 0; i < 1000 && !engine.Idle(); ++i) engine.Step();
  ASSERT_TRUE(engine.Idle());
  ASSERT_TRUE(engine.t_start_by_id.contains(100));
  // Slots 0 and 1 hold b1 and b2 when it arrives (2 free, it needs 3); it
  // starts at step 5, when b1's slot frees, not after b's 60 requests.
  EXPECT_EQ(engine.t_start_by_id.at(100), 5);
}

// The fairness property: tenant "a" has 100 requests queued when tenant "b"
// sends 5. All of "b"'s finish before "a"'s last 50 start.
TEST(FakeEngineTest, BacklogCannotStarveAnotherTenant) {
  constexpr int kSlots = 4;
  constexpr int kStepsPerRequest = 5;
  FakeEngine engine(kSlots, kStepsPerRequest, /*max_admit_per_step=*/kSlots);
  for (uint64_t id = 1; id <= 100; ++id) {
    engine.Arrive(Request(id, "a", AtStep(0) + absl::Nanoseconds(id)));
  }
  for (uint64_t id = 1001; id <= 1005; ++id) {
    engine.Arrive(Request(id, "b", AtStep(2) + absl::Nanoseconds(id)));
  }
  for (int i = 0; i < 1000 && !engine.Idle(); ++i) engine.Step();
  ASSERT_TRUE(engine.Idle());
  ASSERT_EQ(engine.t_finish_by_id.size(), 105u);

  int t_last_b_finish = 0;
  for (uint64_t id = 1001; id <= 1005; ++id) {
    t_last_b_finish = std::max(t_last_b_finish, engine.t_finish_by_id.at(id));
  }
  int t_first_late_a_start = 1 << 30;
  for (uint64_t id = 51; id <= 100; ++id) {
    t_first_late_a_start =
        std::min(t_first_late_a_start, engine.t_start_by_id.at(id));
  }
  EXPECT_LT(t_last_b_finish, t_first_late_a_start);
  // "a" keeps its own order: FIFO within the tenant.
  for (uint64_t id = 2; id <= 100; ++id) {
    EXPECT_LE(engine.t_start_by_id.at(id - 1), engine.t_start_by_id.at(id));
  }
}

}  // namespace
}  // namespace md::scheduler
