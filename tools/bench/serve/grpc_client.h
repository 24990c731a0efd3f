// The load generator's gRPC side: one channel, any number of calls in flight
// on gRPC's callback API (no thread per call), each timed on the run's
// clock into a RequestRecord.
#ifndef MOONDREAM_TOOLS_BENCH_SERVE_GRPC_CLIENT_H_
#define MOONDREAM_TOOLS_BENCH_SERVE_GRPC_CLIENT_H_

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "tools/bench/serve/metrics.h"
#include "tools/bench/serve/workload.h"

namespace md::bench::serve {

// The steady clock, in seconds since the run started.
class RunClock {
 public:
  RunClock() : start_(std::chrono::steady_clock::now()) {}
  double Now() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                         start_)
        .count();
  }

 private:
  std::chrono::steady_clock::time_point start_;
};

struct ClientOptions {
  std::string target;  // host:port
  bool tls = false;
  std::string tls_ca;  // PEM file; empty: the system's roots
  int max_tokens = 64;
  bool ignore_eos = false;
  double timeout_s = 600;
};

class GrpcClient {
 public:
  static absl::StatusOr<std::unique_ptr<GrpcClient>> Create(
      const ClientOptions& options);
  virtual ~GrpcClient() = default;

  // Sends one request now; `done` runs once, on a gRPC thread, with the
  // request's record (times on `clock`).
  virtual void Send(const PlannedRequest& request, const WorkloadImage& image,
                    const std::string& api_key, const RunClock& clock,
                    std::function<void(RequestRecord)> done) = 0;
};

// "RESOURCE_EXHAUSTED" for 8, as gRPC names its codes.
const char* GrpcCodeName(int code);

}  // namespace md::bench::serve

#endif  // MOONDREAM_TOOLS_BENCH_SERVE_GRPC_CLIENT_H_
