// A bound on how many costly jobs (decoding and cropping an image) run at
// once. A large image costs seconds of CPU and hundreds of MB; with no bound,
// a few of them at once starve the engine and the health checks. A caller
// that cannot get a permit within its wait is told to retry
// (RESOURCE_EXHAUSTED), not queued forever.
#ifndef MOONDREAM_SERVICE_WORK_PERMITS_H_
#define MOONDREAM_SERVICE_WORK_PERMITS_H_

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace md::service {

class WorkPermits {
 public:
  // Held while the work runs; returns the permit when destroyed.
  class Permit {
   public:
    Permit(Permit&& other) noexcept : owner_(other.owner_) {
      other.owner_ = nullptr;
    }
    Permit& operator=(Permit&&) = delete;
    ~Permit() {
      if (owner_ != nullptr) owner_->Release();
    }

   private:
    friend class WorkPermits;
    explicit Permit(WorkPermits* owner) : owner_(owner) {}
    WorkPermits* owner_;
  };

  explicit WorkPermits(int permits) : permits_(permits) {}

  // A permit, waiting up to `wait` for one; RESOURCE_EXHAUSTED naming
  // `what` if none came free.
  absl::StatusOr<Permit> Acquire(absl::Duration wait, const char* what);

  int in_use() const {
    absl::MutexLock lock(&mu_);
    return in_use_;
  }

 private:
  void Release();

  const int permits_;
  mutable absl::Mutex mu_;
  int in_use_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace md::service

#endif  // MOONDREAM_SERVICE_WORK_PERMITS_H_
