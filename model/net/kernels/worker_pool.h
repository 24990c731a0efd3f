// Persistent worker threads for our CPU kernels. A kernel call that splits
// its output over threads pays for waking them on every call; a decode step
// makes ~100 such calls of a few hundred microseconds each, so the workers
// stay alive between calls and spin briefly before they sleep, instead of
// each call opening a parallel region.
#ifndef MOONDREAM_MODEL_NET_KERNELS_WORKER_POOL_H_
#define MOONDREAM_MODEL_NET_KERNELS_WORKER_POOL_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>

namespace md {

// Runs a batch of independent tasks on the calling thread plus up to
// n_threads − 1 helper threads that the pool keeps (started on first need,
// never stopped). Tasks are claimed one at a time from a shared counter, so a
// helper that wakes late simply claims fewer: no task waits for a sleeping
// thread.
//
// Calls are serialized by a mutex: two threads calling Run at once take
// turns, each using the whole pool, and neither can deadlock the other (the
// helpers never take that mutex, and a task must not call Run). The engine
// calls the model from one thread, so the mutex is uncontended there.
class WorkerPool {
 public:
  // The function a task runs: task(context, index) for index in [0, n).
  using TaskFn = void (*)(const void* context, int64_t index);

  // The most tasks one Run may have.
  static constexpr int64_t kMaxTasks = (int64_t{1} << 18) - 1;
  // The most threads one Run may use (the caller included).
  static constexpr int kMaxThreads = 255;

  WorkerPool() = default;
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;
  // Must not run while helpers exist: the process-wide pool is never
  // destroyed (helpers stay blocked until exit).
  ~WorkerPool() = default;

  // Runs fn(context, i) for every i in [0, n_tasks) and returns when all
  // have finished. n_threads is clamped to [1, kMaxThreads] and to n_tasks;
  // n_tasks must be <= kMaxTasks.
  void Run(int n_threads, int64_t n_tasks, TaskFn fn, const void* context);

  // The pool every kernel shares.
  static WorkerPool& Shared();

 private:
  // The job word packs generation (20 bits) | helpers wanted (8) | task count
  // (18) | next unclaimed task (18), so a helper claims a task of the job it
  // saw with one compare-and-swap and can never claim one of a later job.
  static uint64_t PackJob(uint64_t generation, uint64_t n_helpers,
                          uint64_t n_tasks, uint64_t next);
  static uint64_t Generation(uint64_t job) { return job >> 44; }
  static int HelpersWanted(uint64_t job) { return (job >> 36) & 0xff; }
  static int64_t TaskCount(uint64_t job) { return (job >> 18) & kMaxTasks; }
  static int64_t NextTask(uint64_t job) { return job & kMaxTasks; }

  // Claims and runs tasks of the job whose generation is `generation` until
  // none is left.
  void RunTasksOf(uint64_t generation);
  // A helper's life: wait for a job newer than `seen`, help with it, repeat.
  void HelperLoop(int helper_index, uint64_t seen);
  // Waits (spinning, then sleeping) until the job word's generation differs
  // from `seen`; returns the new word.
  uint64_t WaitForNewJob(uint64_t seen);
  void EnsureHelpers(int n_helpers);

  std::mutex run_mu_;          // one Run at a time
  int n_helpers_started_ = 0;  // guarded by run_mu_; they run detached

  std::atomic<uint64_t> job_{0};
  // The current job's function and context: written by Run before the job
  // word is published, read by a helper only after it claimed a task of
  // that job (so Run is still waiting for it).
  TaskFn fn_ = nullptr;
  const void* context_ = nullptr;
  std::atomic<int64_t> n_done_{0};

  // Helpers that gave up spinning sleep on this condition variable.
  std::mutex sleep_mu_;
  std::condition_variable wake_;
  std::atomic<int> n_sleeping_{0};
};

// f(begin, end) over consecutive chunks covering [0, n), each of at least
// `grain` indices (but the last), on up to n_threads threads of the shared
// pool: what our kernels use instead of at::parallel_for. That one is an
// inline template that splits work only where the including file is
// compiled with OpenMP; ours are not, so it ran them on one thread. f must
// not throw, nor call WorkerPool::Run.
template <typename F>
void ParallelFor(int64_t n, int64_t grain, int n_threads, const F& f) {
  if (n <= 0) return;
  // A few chunks per thread, so that a helper that wakes late holds up
  // nothing.
  constexpr int64_t kChunksPerThread = 4;
  const int64_t threads = n_threads < 1 ? 1 : n_threads;
  // At most n / grain chunks, so each (but the last) has >= grain indices.
  const int64_t most_chunks = grain > 1 ? (n / grain > 0 ? n / grain : 1) : n;
  int64_t n_chunks = threads * kChunksPerThread;
  if (n_chunks > most_chunks) n_chunks = most_chunks;
  if (n_chunks > WorkerPool::kMaxTasks) n_chunks = WorkerPool::kMaxTasks;
  struct Job {
    const F* f;
    int64_t n, per_chunk;
  };
  const Job job{&f, n, (n + n_chunks - 1) / n_chunks};
  const int64_t used_chunks = (n + job.per_chunk - 1) / job.per_chunk;
  WorkerPool::Shared().Run(
      n_threads, used_chunks,
      [](const void* context, int64_t chunk) {
        const Job& j = *static_cast<const Job*>(context);
        const int64_t begin = chunk * j.per_chunk;
        const int64_t end =
            begin + j.per_chunk < j.n ? begin + j.per_chunk : j.n;
        (*j.f)(begin, end);
      },
      &job);
}

}  // namespace md

#endif  // MOONDREAM_MODEL_NET_KERNELS_WORKER_POOL_H_
