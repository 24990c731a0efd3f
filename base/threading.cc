#include "base/threading.h"

#include <unistd.h>

#include <cstdlib>

namespace md {

void EnsurePassiveOpenMpWait(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  if (setenv("OMP_WAIT_POLICY", "PASSIVE", /*overwrite=*/0) != 0) return;
  execv("/proc/self/exe", argv);
  // Only reached when exec failed: carry on with the active policy.
}

}  // namespace md
