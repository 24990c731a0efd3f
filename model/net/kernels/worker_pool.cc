#include "model/net/kernels/worker_pool.h"

#include <algorithm>
#include <chrono>
#include <thread>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace md {
namespace {

// How long an idle helper spins before it sleeps. Between two linears of a
// decode step other ops run for tens of microseconds; spinning through that
// saves a futex wake-up (~5-20 µs) per call, while a longer spin would keep
// a core busy that LibTorch's own (OpenMP) threads may need.
constexpr auto kSpinTime = std::chrono::microseconds(50);

inline void CpuRelax() {
#if defined(__x86_64__)
  _mm_pause();
#endif
}

}  // namespace

uint64_t WorkerPool::PackJob(uint64_t generation, uint64_t n_helpers,
                             uint64_t n_tasks, uint64_t next) {
  return ((generation & 0xfffff) << 44) | (n_helpers << 36) | (n_tasks << 18) |
         next;
}

WorkerPool& WorkerPool::Shared() {
  // Never destroyed: helpers block in it until the process exits.
  static WorkerPool* pool = new WorkerPool();
  return *pool;
}

void WorkerPool::Run(int n_threads, int64_t n_tasks, TaskFn fn,
                     const void* context) {
  if (n_tasks <= 0) return;
  const int64_t threads = std::clamp<int64_t>(
      std::min<int64_t>(n_threads, n_tasks), 1, kMaxThreads);
  const int n_helpers = static_cast<int>(threads - 1);
  if (n_helpers == 0 || n_tasks > kMaxTasks) {
    for (int64_t i = 0; i < n_tasks; ++i) fn(context, i);
    return;
  }
  std::lock_guard<std::mutex> run_lock(run_mu_);
  EnsureHelpers(n_helpers);
  fn_ = fn;
  context_ = context;
  n_done_.store(0, std::memory_order_relaxed);
  const uint64_t generation = Generation(job_.load()) + 1;
  // Publishing the job word releases fn_, context_ and n_done_ to helpers.
  job_.store(PackJob(generation, n_helpers, n_tasks, 0));
  if (n_sleeping_.load() > 0) {
    std::lock_guard<std::mutex> sleep_lock(sleep_mu_);
    wake_.notify_all();
  }
  RunTasksOf(generation & 0xfffff);
  // Every task is claimed by now; wait for those still running elsewhere.
  while (n_done_.load(std::memory_order_acquire) < n_tasks) CpuRelax();
}

void WorkerPool::RunTasksOf(uint64_t generation) {
  uint64_t job = job_.load(std::memory_order_acquire);
  while (Generation(job) == generation && NextTask(job) < TaskCount(job)) {
    if (!job_.compare_exchange_weak(job, job + 1, std::memory_order_acq_rel,
                                    std::memory_order_acquire)) {
      continue;  // `job` now holds the current word
    }
    fn_(context_, NextTask(job));
    n_done_.fetch_add(1, std::memory_order_release);
    job = job_.load(std::memory_order_acquire);
  }
}

uint64_t WorkerPool::WaitForNewJob(uint64_t seen) {
  const auto spin_end = std::chrono::steady_clock::now() + kSpinTime;
  for (int i = 1;; ++i) {
    const uint64_t job = job_.load(std::memory_order_acquire);
    if (Generation(job) != Generation(seen)) return job;
    CpuRelax();
    if (i % 64 == 0 && std::chrono::steady_clock::now() > spin_end) break;
  }
  // Run stores the job word and then reads n_sleeping_; we add ourselves
  // and then read the job word (all sequentially consistent), so either we
  // see the new job here or Run sees us and notifies under sleep_mu_.
  n_sleeping_.fetch_add(1);
  uint64_t job;
  {
    std::unique_lock<std::mutex> lock(sleep_mu_);
    wake_.wait(lock, [&] {
      job = job_.load();
      return Generation(job) != Generation(seen);
    });
  }
  n_sleeping_.fetch_sub(1);
  return job;
}

void WorkerPool::HelperLoop(int helper_index, uint64_t seen) {
  for (;;) {
    seen = WaitForNewJob(seen);
    if (helper_index < HelpersWanted(seen)) RunTasksOf(Generation(seen));
  }
}

void WorkerPool::EnsureHelpers(int n_helpers) {
  // A new helper starts from the job word as it is before Run publishes the
  // job it was started for, not from whatever word its thread first reads:
  // a thread that starts late (a loaded machine) would otherwise take that
  // job for one it had seen and leave all of it to the caller.
  const uint64_t before = job_.load();
  for (; n_helpers_started_ < n_helpers; ++n_helpers_started_) {
    const int index = n_helpers_started_;
    std::thread([this, index, before] { HelperLoop(index, before); }).detach();
  }
}

}  // namespace md
