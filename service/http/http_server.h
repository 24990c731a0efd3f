// A small HTTP/1.1 server for the gateway and /metrics: one event-loop
// thread reads every connection without blocking, so slow or idle clients
// cost no thread, and each request is read under deadlines (headers, body,
// keep-alive idle). Complete requests go to a fixed pool of workers (or run
// on the loop, for quick routes like /health that must answer whatever the
// workers are doing). While a request is handled the loop watches its
// connection, so a handler learns at once when its client goes away.
//
//   accept ─► reading ──(complete)──► handling (worker or inline)
//                │  ▲                     │
//   deadline / bad request                ├─► keep-alive: back to reading
//   ─► error response, close             └─► close
#ifndef MOONDREAM_SERVICE_HTTP_HTTP_SERVER_H_
#define MOONDREAM_SERVICE_HTTP_HTTP_SERVER_H_

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "service/http/request_parser.h"

namespace md::service::http {

using HeaderList = std::vector<std::pair<std::string, std::string>>;

struct ServerOptions {
  std::string host = "0.0.0.0";
  int port = 0;  // 0 picks a free port.
  ParserLimits limits;
  // From a request's first byte until its headers are in.
  absl::Duration header_timeout = absl::Seconds(10);
  // From the headers until the body is in.
  absl::Duration body_timeout = absl::Seconds(60);
  // A kept-alive connection with no request.
  absl::Duration idle_timeout = absl::Seconds(30);
  // A client that stops reading a response.
  absl::Duration write_timeout = absl::Seconds(30);
  int workers = 64;
  // Requests waiting for a worker; more are answered 503 at once.
  int max_waiting = 1024;
  // Open connections; more are closed as they arrive.
  int max_connections = 4096;
  // Sent with every response (e.g. which replica answered).
  HeaderList response_headers;
  // A kept-alive connection this old is closed after its next response
  // (sent with Connection: close), so clients that keep connections open
  // reconnect and a load balancer can move them to other replicas.
  absl::Duration max_connection_age = absl::InfiniteDuration();
};

class Connection;

// One request and its response, as a handler sees it. Respond once, or
// stream: StartStream, Send..., EndStream (chunked transfer encoding).
class Exchange {
 public:
  Exchange(std::shared_ptr<Connection> connection, HttpRequest request,
           const ServerOptions& options);
  ~Exchange();
  Exchange(const Exchange&) = delete;
  Exchange& operator=(const Exchange&) = delete;

  const HttpRequest& request() const { return request_; }

  void Respond(int status, absl::string_view content_type,
               absl::string_view body, const HeaderList& headers = {});
  bool StartStream(int status, absl::string_view content_type,
                   const HeaderList& headers = {});
  // False once the client is gone (the rest is dropped).
  bool Send(absl::string_view data);
  void EndStream();

  bool responded() const { return responded_; }
  // The client closed or reset its connection.
  bool client_gone() const;
  // `fn` runs once when the client goes away before the response is done
  // (on the server's thread: keep it quick). Runs at once if already gone.
  void OnClientGone(std::function<void()> fn);

  // Whether the connection may carry another request afterwards: the
  // client asked for it and the connection is younger than
  // max_connection_age.
  bool keep_alive() const { return keep_alive_; }

 private:
  bool Write(absl::string_view bytes);
  std::string Head(int status, absl::string_view content_type,
                   const HeaderList& headers, bool chunked,
                   int64_t content_length);

  std::shared_ptr<Connection> connection_;
  HttpRequest request_;
  const ServerOptions& options_;
  bool responded_ = false;
  bool streaming_ = false;
  bool keep_alive_ = true;
};

using Handler = std::function<void(Exchange&)>;

// Where a route's handler runs.
enum class Dispatch {
  kWorker,  // A worker thread: may block (waits on the engine).
  kInline,  // The loop thread: must be quick and never block.
};

class HttpServer {
 public:
  explicit HttpServer(ServerOptions options);
  ~HttpServer();  // Stops.
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Routes, before Start. A known path with another method gets 405 (with
  // Allow), an unknown path 404.
  void Route(std::string method, std::string path, Handler handler,
             Dispatch dispatch = Dispatch::kWorker);

  // Binds, then serves on threads of its own; returns once the port is
  // bound (port() is then known).
  absl::Status Start();
  int port() const;
  // The start of a drain: closes the listening socket (a balancer's next
  // connect is refused, so it picks another server) and idle keep-alive
  // connections; requests in flight finish, then their connections close.
  void StopAccepting();
  // Stops accepting, tells running handlers their clients are gone, waits
  // for them, closes every connection. Idempotent.
  void Stop();

  class Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// The reason phrase of a status code ("Not Found").
const char* ReasonPhrase(int status);
// The machine-readable code of an error status in JSON error bodies
// ("invalid_request", "too_large", ...), shared by every endpoint.
const char* ErrorCodeName(int status);

}  // namespace md::service::http

#endif  // MOONDREAM_SERVICE_HTTP_HTTP_SERVER_H_
