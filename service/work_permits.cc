#include "service/work_permits.h"

#include "absl/strings/str_cat.h"

namespace md::service {

absl::StatusOr<WorkPermits::Permit> WorkPermits::Acquire(absl::Duration wait,
                                                         const char* what) {
  absl::MutexLock lock(&mu_);
  auto free = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return in_use_ < permits_;
  };
  if (!mu_.AwaitWithTimeout(absl::Condition(&free), wait)) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the server is busy ", what, " (", permits_,
                     " at a time); retry shortly"));
  }
  ++in_use_;
  return Permit(this);
}

void WorkPermits::Release() {
  absl::MutexLock lock(&mu_);
  --in_use_;
}

}  // namespace md::service
