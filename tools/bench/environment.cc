#include "tools/bench/environment.h"

#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace md::bench {
namespace {

constexpr const char* kThreadingEnv[] = {"OMP_NUM_THREADS", "OMP_WAIT_POLICY",
                                         "GOMP_SPINCOUNT",
                                         "OPENBLAS_NUM_THREADS"};

}  // namespace

double Mb(int64_t bytes) { return bytes / (1024.0 * 1024.0); }

double LoadAverage() {
  double load[1];
  return getloadavg(load, 1) == 1 ? load[0] : -1;
}

std::string ThreadingEnvText() {
  std::string out;
  for (const char* name : kThreadingEnv) {
    const char* value = std::getenv(name);
    absl::StrAppend(&out, out.empty() ? "" : " ", name, "=",
                    value == nullptr ? "(unset)" : value);
  }
  return out;
}

nlohmann::json ThreadingEnvJson() {
  nlohmann::json env = nlohmann::json::object();
  for (const char* name : kThreadingEnv) {
    const char* value = std::getenv(name);
    env[name] = value == nullptr ? nlohmann::json(nullptr) : value;
  }
  return env;
}

}  // namespace md::bench
