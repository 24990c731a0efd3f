// The gRPC front: moondream.v1.Moondream on the callback API, plus
// grpc.health.v1 (SERVING only while the model is loaded and the server is
// not draining, for "" and for "moondream.v1.Moondream") and server
// reflection. Statuses map 1:1 to gRPC codes; the call's deadline and
// cancellation go to the engine. Every Moondream RPC names the replica that
// served it in its `x-moondream-replica` metadata.
#ifndef MOONDREAM_SERVICE_GRPC_SERVER_H_
#define MOONDREAM_SERVICE_GRPC_SERVER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
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
  // A connection is sent GOAWAY once this old (gRPC adds up to 10% jitter),
  // so long-lived HTTP/2 clients reconnect and a load balancer spreads them
  // over replicas that started later. Zero: connections never age out.
  absl::Duration max_connection_age = absl::ZeroDuration();
  // How long calls in flight on an aged-out connection may still run before
  // it is closed. Zero: gRPC's default, as long as they take.
  absl::Duration max_connection_age_grace = absl::ZeroDuration();
  // Sent as `x-moondream-replica` metadata (empty: not sent), so a client
  // can tell which replica answered: in the initial metadata of a call that
  // answers, and in the trailing metadata of every call.
  std::string replica_name;
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
  // Health turns NOT_SERVING, for "" and moondream.v1.Moondream alike
  // (drain first, then Shutdown).
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
