// One client connection of the HTTP server (http_server.h): the event loop
// owns its reading state; any thread may write a response to it or learn
// that its client is gone. Internal to service/http.
#ifndef MOONDREAM_SERVICE_HTTP_CONNECTION_H_
#define MOONDREAM_SERVICE_HTTP_CONNECTION_H_

#include <unistd.h>

#include <functional>
#include <string>

#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "service/http/request_parser.h"

namespace md::service::http {

class Connection {
 public:
  explicit Connection(int fd, ParserLimits limits) : fd(fd), parser(limits) {}
  ~Connection() { close(fd); }

  // The client closed or reset the connection, or a write failed.
  void MarkGone() {
    std::function<void()> fn;
    {
      absl::MutexLock lock(&mu_);
      if (gone_) return;
      gone_ = true;
      fn = std::move(on_gone_);
    }
    if (fn) fn();
  }
  bool IsGone() const {
    absl::MutexLock lock(&mu_);
    return gone_;
  }
  void OnGone(std::function<void()> fn) {
    {
      absl::MutexLock lock(&mu_);
      if (!gone_) {
        on_gone_ = std::move(fn);
        return;
      }
    }
    fn();
  }
  void ClearOnGone() {
    absl::MutexLock lock(&mu_);
    on_gone_ = nullptr;
  }

  const int fd;
  const absl::Time opened = absl::Now();

  // Loop thread only.
  // kDraining: an error was answered and our side closed; what the client
  // still sends is read and dropped for a moment, so it gets to read the
  // answer instead of a reset.
  enum class State { kReading, kHandling, kDraining };
  State state = State::kReading;
  RequestParser parser;
  bool got_bytes = false;
  bool sent_continue = false;
  bool watching = true;  // Registered with epoll.
  absl::Time idle_since = absl::Now();
  absl::Time request_started;
  absl::Time headers_at;
  std::string leftover;  // Bytes after a complete request (pipelining).
  absl::Time drain_until;

 private:
  mutable absl::Mutex mu_;
  bool gone_ ABSL_GUARDED_BY(mu_) = false;
  std::function<void()> on_gone_ ABSL_GUARDED_BY(mu_);
};

// Writes all of `bytes`, waiting for the socket up to `timeout` in total.
bool WriteAll(int fd, absl::string_view bytes, absl::Duration timeout);

}  // namespace md::service::http

#endif  // MOONDREAM_SERVICE_HTTP_CONNECTION_H_
