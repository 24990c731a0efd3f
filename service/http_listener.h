// An HTTP/1.1 server (cpp-httplib) on its own thread, for the metrics
// endpoint and the Moondream-compatible gateway. Starting returns once the
// port is bound, so the port (port 0 picks a free one) is known at once.
#ifndef MOONDREAM_SERVICE_HTTP_LISTENER_H_
#define MOONDREAM_SERVICE_HTTP_LISTENER_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace httplib {
class Server;
class Request;
class Response;
}  // namespace httplib

namespace md::service {

using HttpRoutes = httplib::Server;

class HttpListener {
 public:
  // `routes` registers handlers on the server before it listens.
  static absl::StatusOr<std::unique_ptr<HttpListener>> Start(
      const std::string& host, int port,
      const std::function<void(HttpRoutes&)>& routes);
  ~HttpListener();  // Stops and joins.

  int port() const { return port_; }
  void Stop();

 private:
  HttpListener() = default;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace md::service

#endif  // MOONDREAM_SERVICE_HTTP_LISTENER_H_
