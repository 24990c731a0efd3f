// What the load generator needs from a transport: send one planned request
// now and report, once, what the client saw of it. gRPC and HTTP (SSE) are
// the two implementations; both keep any number of requests in flight
// without a thread per request.
#ifndef MOONDREAM_TOOLS_BENCH_SERVE_CLIENT_H_
#define MOONDREAM_TOOLS_BENCH_SERVE_CLIENT_H_

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

class Client {
 public:
  virtual ~Client() = default;

  // Sends one request now; `done` runs once, on a transport thread, with the
  // request's record (times on `clock`). A request with
  // `cancel_after_chunks` >= 0 is abandoned by the client after that many
  // streamed chunks, and its record says so.
  virtual void Send(const PlannedRequest& request, const WorkloadImage& image,
                    const std::string& api_key, const RunClock& clock,
                    std::function<void(RequestRecord)> done) = 0;
};

// --protocol=grpc: one channel, gRPC's callback API.
absl::StatusOr<std::unique_ptr<Client>> CreateGrpcClient(
    const ClientOptions& options);

// --protocol=http: the HTTP gateway as Moondream's own clients call it
// (JSON bodies, data-URL images, caption and query streamed as SSE).
absl::StatusOr<std::unique_ptr<Client>> CreateHttpClient(
    const ClientOptions& options);

// "RESOURCE_EXHAUSTED" for 8, as gRPC names its codes.
const char* GrpcCodeName(int code);

}  // namespace md::bench::serve

#endif  // MOONDREAM_TOOLS_BENCH_SERVE_CLIENT_H_
