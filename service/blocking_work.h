// Threads for the part of a call that may block: decoding its image waits
// for a decode permit and takes milliseconds to seconds. gRPC's callback
// threads must never block: while they do, calls that arrive wait unmatched
// inside gRPC, where a server shutdown cancels them (so a drain would fail
// requests a client had already sent), and no other call is started.
#ifndef MOONDREAM_SERVICE_BLOCKING_WORK_H_
#define MOONDREAM_SERVICE_BLOCKING_WORK_H_

#include <deque>
#include <thread>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"

namespace md::service {

class BlockingWork {
 public:
  // Starts `n_threads` workers (at least one).
  explicit BlockingWork(int n_threads);
  // Runs every task already posted, then joins the workers.
  ~BlockingWork();
  BlockingWork(const BlockingWork&) = delete;
  BlockingWork& operator=(const BlockingWork&) = delete;

  // Runs `task` on a worker, in the order posted.
  void Post(absl::AnyInvocable<void() &&> task);

 private:
  void Work();

  absl::Mutex mu_;
  std::deque<absl::AnyInvocable<void() &&>> tasks_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> workers_;
};

}  // namespace md::service

#endif  // MOONDREAM_SERVICE_BLOCKING_WORK_H_
