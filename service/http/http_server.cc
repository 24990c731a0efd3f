#include "service/http/http_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "base/log.h"
#include "service/http/connection.h"

namespace md::service::http {
namespace {

bool SetNonBlocking(int fd) {
  const int flags = fcntl(fd, F_GETFL, 0);
  return flags >= 0 && fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0;
}

constexpr absl::Duration kLoopTick = absl::Milliseconds(100);
// Writes from the loop thread (errors, /health) wait at most this long:
// a client that does not read cannot stall every other connection.
constexpr absl::Duration kInlineWriteTimeout = absl::Milliseconds(500);
// How long an answered-and-closing connection's input is still drained.
constexpr absl::Duration kLingerTime = absl::Seconds(2);

}  // namespace

// ---- The server ----

class HttpServer::Impl {
 public:
  explicit Impl(ServerOptions options) : options_(std::move(options)) {}
  ~Impl() { Stop(); }

  struct RouteEntry {
    std::string method;
    std::string path;
    Handler handler;
    Dispatch dispatch;
  };
  std::vector<RouteEntry> routes;

  absl::Status Start();
  void StopAccepting();
  void Stop();
  int port() const { return port_; }

 private:
  struct WorkItem {
    std::shared_ptr<Connection> connection;
    HttpRequest request;
    const RouteEntry* route;
  };

  // Loop thread.
  void Loop();
  void Accept();
  void Read(const std::shared_ptr<Connection>& c);
  void Drain(const std::shared_ptr<Connection>& c);
  void OnBytes(const std::shared_ptr<Connection>& c, absl::string_view bytes);
  void Dispatch(const std::shared_ptr<Connection>& c);
  void RespondInline(const std::shared_ptr<Connection>& c, int status,
                     absl::string_view message, const HeaderList& headers = {});
  void Finish(const std::shared_ptr<Connection>& c, bool keep_alive);
  void Unwatch(Connection& c);
  void Close(const std::shared_ptr<Connection>& c);
  void TakeReturned();
  void SweepDeadlines();
  void CloseAll();
  void CloseListenerAndIdle();
  bool closing_seen_ = false;  // Loop thread's copy of closing_.

  // Worker threads.
  void Work();
  bool HasWorkOrStop() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !work_.empty() || stopping_;
  }
  void Return(std::shared_ptr<Connection> c, bool keep_alive);
  void Wake();

  const ServerOptions options_;
  int listen_fd_ = -1;
  int epoll_fd_ = -1;
  int wake_fd_ = -1;
  int port_ = 0;
  bool started_ = false;
  bool stopped_ = false;

  // Loop thread only.
  absl::flat_hash_map<int, std::shared_ptr<Connection>> connections_;
  absl::Time last_sweep_ = absl::Now();

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;  // StopAccepting was called.
  std::deque<WorkItem> work_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<std::shared_ptr<Connection>, bool>> returned_
      ABSL_GUARDED_BY(mu_);

  std::thread loop_;
  std::vector<std::thread> workers_;
};

absl::Status HttpServer::Impl::Start() {
  addrinfo hints = {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string port = std::to_string(options_.port);
  const int rc =
      getaddrinfo(options_.host.empty() ? nullptr : options_.host.c_str(),
                  port.c_str(), &hints, &found);
  if (rc != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot resolve '", options_.host, "': ", gai_strerror(rc)));
  }
  std::string error = "no address";
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    const int fd =
        socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    const int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, 1024) == 0 &&
        SetNonBlocking(fd)) {
      listen_fd_ = fd;
      break;
    }
    error = std::strerror(errno);
    close(fd);
  }
  freeaddrinfo(found);
  if (listen_fd_ < 0) {
    return absl::UnavailableError(absl::StrCat(
        "cannot listen on ", options_.host, ":", options_.port, ": ", error));
  }
  sockaddr_storage addr = {};
  socklen_t len = sizeof(addr);
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.ss_family == AF_INET6
                    ? reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port
                    : reinterpret_cast<sockaddr_in*>(&addr)->sin_port);

  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (epoll_fd_ < 0 || wake_fd_ < 0) {
    return absl::InternalError("cannot create the event loop");
  }
  for (int fd : {listen_fd_, wake_fd_}) {
    epoll_event ev = {};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
  }
  started_ = true;
  loop_ = std::thread([this] { Loop(); });
  for (int i = 0; i < std::max(1, options_.workers); ++i) {
    workers_.emplace_back([this] { Work(); });
  }
  return absl::OkStatus();
}

void HttpServer::Impl::StopAccepting() {
  if (!started_ || stopped_) return;
  {
    absl::MutexLock lock(&mu_);
    closing_ = true;
  }
  Wake();
}

void HttpServer::Impl::Stop() {
  if (!started_ || stopped_) return;
  stopped_ = true;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  Wake();
  loop_.join();
  for (std::thread& t : workers_) t.join();
  {
    absl::MutexLock lock(&mu_);
    work_.clear();
    returned_.clear();
  }
  connections_.clear();
  for (int fd : {listen_fd_, epoll_fd_, wake_fd_}) {
    if (fd >= 0) close(fd);
  }
}

void HttpServer::Impl::Wake() {
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(wake_fd_, &one, sizeof(one));
}

void HttpServer::Impl::Loop() {
  std::vector<epoll_event> events(256);
  for (;;) {
    const int n =
        epoll_wait(epoll_fd_, events.data(), static_cast<int>(events.size()),
                   static_cast<int>(absl::ToInt64Milliseconds(kLoopTick)));
    bool closing;
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) break;
      closing = closing_;
    }
    if (closing && !closing_seen_) CloseListenerAndIdle();
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      if (fd == listen_fd_) {
        Accept();
        continue;
      }
      if (fd == wake_fd_) {
        uint64_t count;
        [[maybe_unused]] ssize_t r = read(wake_fd_, &count, sizeof(count));
        continue;
      }
      auto it = connections_.find(fd);
      if (it == connections_.end()) continue;
      std::shared_ptr<Connection> c = it->second;
      if (c->state == Connection::State::kReading) {
        Read(c);
      } else if (c->state == Connection::State::kDraining) {
        Drain(c);
      } else if (events[i].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        // The client left while its request is handled.
        Unwatch(*c);
        c->MarkGone();
      }
    }
    TakeReturned();
    SweepDeadlines();
  }
  CloseAll();
}

void HttpServer::Impl::CloseListenerAndIdle() {
  closing_seen_ = true;
  epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, listen_fd_, nullptr);
  close(listen_fd_);
  listen_fd_ = -1;
  std::vector<std::shared_ptr<Connection>> idle;
  for (auto& [fd, c] : connections_) {
    if (c->state == Connection::State::kReading && !c->got_bytes) {
      idle.push_back(c);
    }
  }
  for (const auto& c : idle) Close(c);
}

void HttpServer::Impl::Accept() {
  for (;;) {
    const int fd =
        accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;  // EAGAIN, or an error the next accept may not have.
    if (static_cast<int>(connections_.size()) >= options_.max_connections) {
      close(fd);
      continue;
    }
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    auto c = std::make_shared<Connection>(fd, options_.limits);
    epoll_event ev = {};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.fd = fd;
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) continue;
    connections_[fd] = std::move(c);
  }
}

void HttpServer::Impl::Read(const std::shared_ptr<Connection>& c) {
  char buffer[16384];
  while (c->state == Connection::State::kReading) {
    const ssize_t n = recv(c->fd, buffer, sizeof(buffer), 0);
    if (n > 0) {
      OnBytes(c, absl::string_view(buffer, static_cast<size_t>(n)));
      if (!connections_.contains(c->fd)) return;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    Close(c);  // EOF or an error.
    return;
  }
}

void HttpServer::Impl::Drain(const std::shared_ptr<Connection>& c) {
  char buffer[16384];
  for (;;) {
    const ssize_t n = recv(c->fd, buffer, sizeof(buffer), 0);
    if (n > 0) continue;
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    Close(c);
    return;
  }
}

void HttpServer::Impl::OnBytes(const std::shared_ptr<Connection>& c,
                               absl::string_view bytes) {
  if (!c->got_bytes) {
    c->got_bytes = true;
    c->request_started = absl::Now();
  }
  const bool had_headers = c->parser.headers_done();
  const size_t used = c->parser.Feed(bytes);
  switch (c->parser.state()) {
    case RequestParser::State::kError:
      return RespondInline(c, c->parser.error_status(),
                           c->parser.error_message());
    case RequestParser::State::kBody:
      if (!had_headers) {
        c->headers_at = absl::Now();
        if (c->parser.request().ExpectsContinue() && !c->sent_continue) {
          c->sent_continue = true;
          if (!WriteAll(c->fd, "HTTP/1.1 100 Continue\r\n\r\n",
                        kInlineWriteTimeout)) {
            Close(c);
          }
        }
      }
      return;
    case RequestParser::State::kComplete:
      c->leftover = std::string(bytes.substr(used));
      return Dispatch(c);
    case RequestParser::State::kHeaders:
      return;
  }
}

void HttpServer::Impl::Dispatch(const std::shared_ptr<Connection>& c) {
  c->state = Connection::State::kHandling;
  // While it is handled, only its hang-up is watched.
  epoll_event ev = {};
  ev.events = EPOLLRDHUP;
  ev.data.fd = c->fd;
  epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, c->fd, &ev);

  HttpRequest request = c->parser.TakeRequest();
  const RouteEntry* route = nullptr;
  std::vector<std::string> allowed;
  for (const RouteEntry& r : routes) {
    if (r.path != request.path) continue;
    allowed.push_back(r.method);
    if (r.method == request.method ||
        (request.method == "HEAD" && r.method == "GET")) {
      route = &r;
    }
  }
  if (route == nullptr) {
    if (allowed.empty()) {
      return RespondInline(c, 404, "no such endpoint");
    }
    return RespondInline(c, 405,
                         absl::StrCat("use ", absl::StrJoin(allowed, " or "),
                                      " for ", request.path),
                         {{"Allow", absl::StrJoin(allowed, ", ")}});
  }
  if (route->dispatch == Dispatch::kInline) {
    bool keep_alive;
    {
      Exchange exchange(c, std::move(request), options_);
      route->handler(exchange);
      if (!exchange.responded()) {
        exchange.Respond(500, "application/json",
                         R"({"error":{"message":"no response"}})");
      }
      keep_alive = exchange.keep_alive();
    }
    return Finish(c, keep_alive);
  }
  {
    absl::MutexLock lock(&mu_);
    if (static_cast<int>(work_.size()) < options_.max_waiting) {
      work_.push_back({c, std::move(request), route});
      return;
    }
  }
  RespondInline(c, 503, "the server is busy; retry shortly",
                {{"Retry-After", "1"}});
}

// An error or refusal answered from the loop thread; the connection closes.
void HttpServer::Impl::RespondInline(const std::shared_ptr<Connection>& c,
                                     int status, absl::string_view message,
                                     const HeaderList& headers) {
  std::string body = absl::StrCat(R"({"error":{"code":")",
                                  ErrorCodeName(status), R"(","message":")");
  for (char ch : message) {
    if (ch == '"' || ch == '\\') body.push_back('\\');
    if (static_cast<unsigned char>(ch) >= 0x20) body.push_back(ch);
  }
  body += "\"}}";
  std::string head = absl::StrCat(
      "HTTP/1.1 ", status, " ", ReasonPhrase(status), "\r\n",
      "Content-Type: application/json\r\nContent-Length: ", body.size(),
      "\r\nConnection: close\r\n");
  for (const HeaderList* list : {&options_.response_headers, &headers}) {
    for (const auto& [name, value] : *list) {
      absl::StrAppend(&head, name, ": ", value, "\r\n");
    }
  }
  absl::StrAppend(&head, "\r\n", body);
  if (!WriteAll(c->fd, head, kInlineWriteTimeout)) return Close(c);
  shutdown(c->fd, SHUT_WR);
  c->state = Connection::State::kDraining;
  c->drain_until = absl::Now() + kLingerTime;
  epoll_event ev = {};
  ev.events = EPOLLIN | EPOLLRDHUP;
  ev.data.fd = c->fd;
  epoll_ctl(epoll_fd_, c->watching ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &ev);
  c->watching = true;
}

void HttpServer::Impl::Finish(const std::shared_ptr<Connection>& c,
                              bool keep_alive) {
  if (!connections_.contains(c->fd)) return;
  if (!keep_alive || closing_seen_ || c->IsGone()) return Close(c);
  c->state = Connection::State::kReading;
  c->parser.Reset();
  c->got_bytes = false;
  c->sent_continue = false;
  c->idle_since = absl::Now();
  epoll_event ev = {};
  ev.events = EPOLLIN | EPOLLRDHUP;
  ev.data.fd = c->fd;
  epoll_ctl(epoll_fd_, c->watching ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &ev);
  c->watching = true;
  if (!c->leftover.empty()) {
    const std::string pipelined = std::move(c->leftover);
    c->leftover.clear();
    OnBytes(c, pipelined);
  }
}

void HttpServer::Impl::Unwatch(Connection& c) {
  if (!c.watching) return;
  epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, c.fd, nullptr);
  c.watching = false;
}

void HttpServer::Impl::Close(const std::shared_ptr<Connection>& c) {
  Unwatch(*c);
  shutdown(c->fd, SHUT_RDWR);
  c->MarkGone();
  // The descriptor itself closes with the last reference (a worker may
  // still hold one), so it is never reused under a handler's feet.
  connections_.erase(c->fd);
}

void HttpServer::Impl::TakeReturned() {
  std::vector<std::pair<std::shared_ptr<Connection>, bool>> returned;
  {
    absl::MutexLock lock(&mu_);
    returned.swap(returned_);
  }
  for (auto& [c, keep_alive] : returned) Finish(c, keep_alive);
}

void HttpServer::Impl::SweepDeadlines() {
  const absl::Time now = absl::Now();
  if (now - last_sweep_ < kLoopTick) return;
  last_sweep_ = now;
  std::vector<std::pair<std::shared_ptr<Connection>, int>> expired;
  for (auto& [fd, c] : connections_) {
    if (c->state == Connection::State::kDraining && now > c->drain_until) {
      expired.push_back({c, 0});
      continue;
    }
    if (c->state != Connection::State::kReading) continue;
    if (!c->got_bytes) {
      if (now - c->idle_since > options_.idle_timeout)
        expired.push_back({c, 0});
    } else if (!c->parser.headers_done()) {
      if (now - c->request_started > options_.header_timeout) {
        expired.push_back({c, 408});
      }
    } else if (now - c->headers_at > options_.body_timeout) {
      expired.push_back({c, 408});
    }
  }
  for (auto& [c, status] : expired) {
    if (status == 0) {
      Close(c);
    } else {
      RespondInline(c, status, "the request took too long to arrive");
    }
  }
}

void HttpServer::Impl::CloseAll() {
  std::vector<std::shared_ptr<Connection>> all;
  for (auto& [fd, c] : connections_) all.push_back(c);
  for (auto& c : all) {
    if (c->state == Connection::State::kHandling) {
      // Handlers waiting on their request learn to give up.
      Unwatch(*c);
      c->MarkGone();
    } else {
      Close(c);
    }
  }
}

void HttpServer::Impl::Work() {
  for (;;) {
    WorkItem item;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(this, &Impl::HasWorkOrStop));
      if (work_.empty()) return;  // Stopping, nothing left.
      item = std::move(work_.front());
      work_.pop_front();
    }
    bool keep_alive = false;
    {
      Exchange exchange(item.connection, std::move(item.request), options_);
      try {
        if (item.connection->IsGone()) {
          // Gone before it started: nothing to run.
        } else {
          item.route->handler(exchange);
        }
      } catch (const std::exception& e) {
        LogEvent(LogLevel::kError, "http_handler_failed",
                 {{"path", exchange.request().path}, {"error", e.what()}});
      } catch (...) {
        LogEvent(LogLevel::kError, "http_handler_failed",
                 {{"path", exchange.request().path}, {"error", "unknown"}});
      }
      if (!exchange.responded()) {
        exchange.Respond(500, "application/json",
                         R"({"error":{"message":"internal error"}})");
      }
      exchange.EndStream();
      keep_alive = exchange.keep_alive();
    }
    Return(std::move(item.connection), keep_alive);
  }
}

void HttpServer::Impl::Return(std::shared_ptr<Connection> c, bool keep_alive) {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    returned_.emplace_back(std::move(c), keep_alive);
  }
  Wake();
}

// ---- HttpServer ----

HttpServer::HttpServer(ServerOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {}
HttpServer::~HttpServer() { Stop(); }

void HttpServer::Route(std::string method, std::string path, Handler handler,
                       Dispatch dispatch) {
  impl_->routes.push_back(
      {std::move(method), std::move(path), std::move(handler), dispatch});
}

absl::Status HttpServer::Start() { return impl_->Start(); }
int HttpServer::port() const { return impl_->port(); }
void HttpServer::StopAccepting() { impl_->StopAccepting(); }

void HttpServer::Stop() { impl_->Stop(); }

}  // namespace md::service::http
