// The gRPC front: moondream.v1.Moondream on the callback API, plus
// grpc.health.v1 (SERVING only while the model is loaded and the server is
// not draining) and server reflection. Statuses map 1:1 to gRPC codes; the
// call's deadline and cancellation go to the engine.
#ifndef MOONDREAM_SERVICE_GRPC_SERVER_H_
#define MOONDREAM_SERVICE_GRPC_SERVER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "service/service.h"

namespace md::service {

class RequestObserver;

struct GrpcOptions {
  // "0.0.0.0:50051"; port 0 picks a free port (see GrpcServer::port()).
  std::string address = "0.0.0.0:50051";
  int64_t max_message_bytes = int64_t{32} << 20;
  // PEM files; both set means TLS, neither means plaintext.
  std::string tls_cert_file;
  std::string tls_key_file;
};

class GrpcServer {
 public:
  // Starts serving `service` (which must outlive the server). `observer`
  // (optional, must outlive the server) sees every request's life.
  static absl::StatusOr<std::unique_ptr<GrpcServer>> Start(
      Service& service, const GrpcOptions& options,
      RequestObserver* observer = nullptr);
  ~GrpcServer();

  int port() const;
  // Health turns NOT_SERVING (drain first, then Shutdown).
  void SetNotServing();
  // Stops accepting calls, waits for in-flight ones until `deadline`, then
  // cancels the rest.
  void Shutdown(absl::Duration deadline);

  class Impl;

 private:
  explicit GrpcServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace md::service

#endif  // MOONDREAM_SERVICE_GRPC_SERVER_H_
