// The HTTP gateway, compatible with the Moondream API that the official
// clients speak:
//
//   POST /v1/caption  {"image_url", "length": "short"|"normal", "stream",
//                      "settings": {"max_tokens", "temperature", "top_p",
//                      "min_p", "seed", "ignore_eos"}}   → {"caption"}
//   POST /v1/query    {"image_url", "question", "stream", "settings"}
//                                                        → {"answer"}
//   POST /v1/detect   {"image_url", "object", "settings": {"max_objects"}}
//                                                        → {"objects": [..]}
//   POST /v1/point    {"image_url", "object", "settings"} → {"points": [..]}
//   POST /v1/gaze     {"image_url", "eye": {"x","y"}, "face": {"x_min",..},
//                      "prioritize_accuracy", "seed", "force_detect"}
//                                                        → {"gaze": {..}|null}
//   GET  /health      200 while the process runs
//   GET  /ready       200 while serving, 503 while draining
//
// Every response names the replica that served it (X-Moondream-Replica).
//
// image_url is a data URL (data:image/...;base64,...) or "handle:H" for an
// image encoded over gRPC. "stream": true answers caption and query as
// server-sent events, data: {"chunk": "..."} ... data: {"completed": true}.
// The API key comes in X-Moondream-Auth (or Authorization: Bearer). Errors
// are {"error": {"code", "message"}} with 400, 401, 404, 405 (with Allow),
// 408, 411, 413, 415, 429 (with Retry-After), 431, 503 or 504.
#ifndef MOONDREAM_SERVICE_HTTP_GATEWAY_H_
#define MOONDREAM_SERVICE_HTTP_GATEWAY_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "service/http/http_server.h"
#include "service/http_api.h"
#include "service/observer.h"
#include "service/service.h"

namespace md::service {

struct HttpOptions {
  std::string host = "0.0.0.0";
  int port = 8080;  // 0 picks a free port.
  // Largest request body (a base64 image is 4/3 of its bytes).
  int64_t max_body_bytes = int64_t{32} << 20;
  // How long a request may take before 504.
  absl::Duration timeout = absl::Minutes(5);
  // Requests handled at once (each waits on the engine); connections
  // themselves cost no thread.
  int threads = 64;
  // A request's headers, then its body, must arrive within these.
  absl::Duration header_timeout = absl::Seconds(10);
  absl::Duration body_timeout = absl::Seconds(60);
  // Sent with every response.
  std::vector<std::pair<std::string, std::string>> response_headers;
  // Sent as X-Moondream-Replica with every response (empty: not sent), so a
  // client can tell which replica answered.
  std::string replica_name;
  // A kept-alive connection this old closes after its next response
  // (Connection: close), so clients rebalance over replicas.
  absl::Duration max_connection_age = absl::InfiniteDuration();
};

class HttpGateway {
 public:
  static absl::StatusOr<std::unique_ptr<HttpGateway>> Start(
      Service& service, const HttpOptions& options,
      RequestObserver* observer = nullptr);
  ~HttpGateway();

  int port() const;
  // /ready answers 503 from now on.
  void SetNotReady() { ready_ = false; }
  // The start of a drain: closes the listener and idle connections (see
  // HttpServer::StopAccepting); requests in flight go on.
  void StopAccepting();
  // Stops serving; requests in flight are told their clients are gone.
  void Stop();

 private:
  HttpGateway() = default;
  std::atomic<bool> ready_{true};
  std::shared_ptr<void> endpoints_;  // Outlives the server's handlers.
  std::unique_ptr<http::HttpServer> server_;
};

}  // namespace md::service

#endif  // MOONDREAM_SERVICE_HTTP_GATEWAY_H_
