// The HTTP server over real loopback sockets: slow clients cost no thread
// and cannot stop /health, request deadlines close dribbling clients, 100-
// continue is answered (or refused) from the headers, wrong methods get 405,
// a handler learns when its client leaves, a connection past its maximum
// age closes after its next answer, and StopAccepting (a drain) refuses new
// connections while requests in flight finish.
#include "service/http/http_server.h"

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"

namespace md::service::http {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

int Connect(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr = {};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

void SendAll(int fd, const std::string& bytes) {
  size_t at = 0;
  while (at < bytes.size()) {
    const ssize_t n =
        send(fd, bytes.data() + at, bytes.size() - at, MSG_NOSIGNAL);
    if (n <= 0) return;
    at += static_cast<size_t>(n);
  }
}

// Reads until `until` appears, the peer closes, or `timeout` passes.
std::string ReadUntil(int fd, const std::string& until,
                      absl::Duration timeout = absl::Seconds(10)) {
  std::string got;
  const absl::Time deadline = absl::Now() + timeout;
  while (until.empty() || got.find(until) == std::string::npos) {
    const int64_t ms = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (ms <= 0) break;
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(ms)) <= 0) break;
    char buffer[4096];
    const ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
    if (n <= 0) break;
    got.append(buffer, static_cast<size_t>(n));
  }
  return got;
}

// One request on a fresh connection; the whole response.
std::string Exchange1(int port, const std::string& request,
                      absl::Duration timeout = absl::Seconds(10)) {
  const int fd = Connect(port);
  SendAll(fd, request);
  std::string response = ReadUntil(fd, "", timeout);
  close(fd);
  return response;
}

class HttpServerTest : public ::testing::Test {
 protected:
  void StartServer(ServerOptions options = {}) {
    options.host = "127.0.0.1";
    options.port = 0;
    options.response_headers = {{"X-Test-Server", "one"}};
    server_ = std::make_unique<HttpServer>(options);
    server_->Route(
        "GET", "/health",
        [](Exchange& e) { e.Respond(200, "application/json", "{}"); },
        Dispatch::kInline);
    server_->Route("POST", "/echo", [](Exchange& e) {
      e.Respond(200, "text/plain", e.request().body);
    });
    server_->Route("GET", "/stream", [](Exchange& e) {
      e.StartStream(200, "text/event-stream");
      e.Send("data: 1\n\n");
      e.Send("data: 2\n\n");
      e.EndStream();
    });
    server_->Route("GET", "/wait", [this](Exchange& e) {
      e.OnClientGone([this] { gone_.Notify(); });
      waiting_.Notify();
      gone_.WaitForNotificationWithTimeout(absl::Seconds(20));
      e.Respond(200, "text/plain", "late");
    });
    server_->Route("GET", "/held", [this](Exchange& e) {
      held_.Notify();
      release_.WaitForNotificationWithTimeout(absl::Seconds(20));
      e.Respond(200, "text/plain", "released");
    });
    ASSERT_TRUE(server_->Start().ok());
  }

  // The handlers use the notifications: the server (its workers) goes first.
  absl::Notification waiting_;
  absl::Notification gone_;
  absl::Notification held_;
  absl::Notification release_;
  std::unique_ptr<HttpServer> server_;
};

TEST_F(HttpServerTest, AnswersWithLengthAndServerHeaders) {
  StartServer();
  const std::string r = Exchange1(
      server_->port(),
      "POST /echo HTTP/1.1\r\nContent-Length: 5\r\nConnection: close\r\n\r\n"
      "hello");
  EXPECT_THAT(r, StartsWith("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(r, HasSubstr("Content-Length: 5\r\n"));
  EXPECT_THAT(r, HasSubstr("X-Test-Server: one\r\n"));
  EXPECT_THAT(r, HasSubstr("\r\n\r\nhello"));
}

TEST_F(HttpServerTest, KeepAliveAndPipelinedRequestsShareAConnection) {
  StartServer();
  const int fd = Connect(server_->port());
  SendAll(fd,
          "POST /echo HTTP/1.1\r\nContent-Length: 3\r\n\r\none"
          "POST /echo HTTP/1.1\r\nContent-Length: 3\r\n\r\ntwo");
  const std::string r = ReadUntil(fd, "two");
  EXPECT_THAT(r, HasSubstr("\r\n\r\none"));
  EXPECT_THAT(r, HasSubstr("\r\n\r\ntwo"));
  SendAll(fd, "GET /health HTTP/1.1\r\n\r\n");
  EXPECT_THAT(ReadUntil(fd, "{}"), StartsWith("HTTP/1.1 200"));
  close(fd);
}

// A kept-alive connection past max_connection_age gets its next answer with
// Connection: close, and is closed after it (the client reconnects, maybe
// to another replica); a younger one stays open.
TEST_F(HttpServerTest, AConnectionPastItsAgeClosesAfterItsNextAnswer) {
  ServerOptions options;
  options.max_connection_age = absl::Milliseconds(300);
  StartServer(options);
  const int fd = Connect(server_->port());
  SendAll(fd, "GET /health HTTP/1.1\r\n\r\n");
  const std::string young = ReadUntil(fd, "{}");
  EXPECT_THAT(young, StartsWith("HTTP/1.1 200"));
  EXPECT_THAT(young, Not(HasSubstr("Connection: close")));
  absl::SleepFor(absl::Milliseconds(400));
  SendAll(fd, "POST /echo HTTP/1.1\r\nContent-Length: 3\r\n\r\nold");
  // Read to the end: the server closes the connection after the answer.
  const std::string old = ReadUntil(fd, "");
  EXPECT_THAT(old, StartsWith("HTTP/1.1 200"));
  EXPECT_THAT(old, HasSubstr("Connection: close\r\n"));
  EXPECT_THAT(old, HasSubstr("\r\n\r\nold"));
  char byte;
  // Closed, not merely quiet.
  EXPECT_EQ(recv(fd, &byte, 1, MSG_DONTWAIT), 0);
  close(fd);
}

// Whether the peer has closed `fd` (recv sees the end) within `timeout`.
bool ClosedByPeer(int fd, absl::Duration timeout = absl::Seconds(5)) {
  pollfd p{fd, POLLIN, 0};
  if (poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(timeout))) <= 0) {
    return false;
  }
  char byte;
  return recv(fd, &byte, 1, MSG_DONTWAIT) == 0;
}

// A drain: the listener closes (a balancer's connect is refused, so it
// picks another server), an idle kept-alive connection is closed, and a
// request in flight still gets its answer, after which its connection closes.
TEST_F(HttpServerTest, StopAcceptingRefusesNewConnectionsAndFinishesInFlight) {
  StartServer();
  const int idle = Connect(server_->port());
  SendAll(idle, "GET /health HTTP/1.1\r\n\r\n");
  ASSERT_THAT(ReadUntil(idle, "{}"), StartsWith("HTTP/1.1 200"));
  const int busy = Connect(server_->port());
  SendAll(busy, "GET /held HTTP/1.1\r\n\r\n");
  ASSERT_TRUE(held_.WaitForNotificationWithTimeout(absl::Seconds(10)));

  server_->StopAccepting();
  EXPECT_TRUE(ClosedByPeer(idle));
  int refused = -1;
  for (int i = 0; i < 50 && refused < 0; ++i) {
    const int fd = Connect(server_->port());
    if (fd < 0) {
      refused = i;
    } else {
      close(fd);
      absl::SleepFor(absl::Milliseconds(20));
    }
  }
  EXPECT_GE(refused, 0) << "the listener still accepts after 1 s";

  release_.Notify();
  const std::string answer = ReadUntil(busy, "");
  EXPECT_THAT(answer, StartsWith("HTTP/1.1 200"));
  EXPECT_THAT(answer, HasSubstr("\r\n\r\nreleased"));
  char byte;
  EXPECT_EQ(recv(busy, &byte, 1, MSG_DONTWAIT), 0);
  close(idle);
  close(busy);
}

TEST_F(HttpServerTest, WrongMethodIs405WithAllowAndUnknownPathIs404) {
  StartServer();
  const std::string r =
      Exchange1(server_->port(), "GET /echo HTTP/1.1\r\n\r\n");
  EXPECT_THAT(r, StartsWith("HTTP/1.1 405 "));
  EXPECT_THAT(r, HasSubstr("Allow: POST\r\n"));
  EXPECT_THAT(Exchange1(server_->port(), "GET /nope HTTP/1.1\r\n\r\n"),
              StartsWith("HTTP/1.1 404 "));
}

TEST_F(HttpServerTest, ContinueIsSentOnlyForABodyThatFits) {
  ServerOptions options;
  options.limits.max_body_bytes = 100;
  StartServer(options);
  // Too large (or malformed): refused from the headers, no 100 first, at
  // once (the client need not send a byte of the body).
  for (const char* length : {"1000000000", "-5"}) {
    SCOPED_TRACE(length);
    const absl::Time start = absl::Now();
    const std::string r =
        Exchange1(server_->port(), std::string("POST /echo HTTP/1.1\r\n"
                                               "Expect: 100-continue\r\n"
                                               "Content-Length: ") +
                                       length + "\r\n\r\n");
    EXPECT_THAT(r, ::testing::AnyOf(StartsWith("HTTP/1.1 413 "),
                                    StartsWith("HTTP/1.1 400 ")));
    EXPECT_THAT(r, ::testing::Not(HasSubstr("100 Continue")));
    EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  }
  const int fd = Connect(server_->port());
  SendAll(fd,
          "POST /echo HTTP/1.1\r\nExpect: 100-continue\r\n"
          "Content-Length: 2\r\n\r\n");
  EXPECT_THAT(ReadUntil(fd, "\r\n\r\n"), StartsWith("HTTP/1.1 100 Continue"));
  SendAll(fd, "ok");
  EXPECT_THAT(ReadUntil(fd, "\r\n\r\nok"), StartsWith("HTTP/1.1 200"));
  close(fd);
}

TEST_F(HttpServerTest, StreamsChunked) {
  StartServer();
  const std::string r = Exchange1(
      server_->port(), "GET /stream HTTP/1.1\r\nConnection: close\r\n\r\n");
  EXPECT_THAT(r, HasSubstr("Transfer-Encoding: chunked\r\n"));
  EXPECT_THAT(r,
              HasSubstr("9\r\ndata: 1\n\n\r\n9\r\ndata: 2\n\n\r\n0\r\n\r\n"));
}

// Slow clients (one header byte every so often) hold no thread: with 200 of
// them connected, /health and the workers still answer at once.
TEST_F(HttpServerTest, SlowClientsDoNotStopHealth) {
  ServerOptions options;
  options.workers = 2;
  StartServer(options);
  std::vector<int> slow;
  for (int i = 0; i < 200; ++i) {
    const int fd = Connect(server_->port());
    ASSERT_GE(fd, 0);
    SendAll(fd, "GET /health HTTP/1.1\r\nX-Slow: ");
    slow.push_back(fd);
  }
  for (int round = 0; round < 3; ++round) {
    for (int fd : slow) SendAll(fd, "a");
    const absl::Time start = absl::Now();
    EXPECT_THAT(Exchange1(server_->port(),
                          "GET /health HTTP/1.1\r\nConnection: close\r\n\r\n",
                          absl::Seconds(5)),
                StartsWith("HTTP/1.1 200"));
    EXPECT_THAT(Exchange1(server_->port(),
                          "POST /echo HTTP/1.1\r\nContent-Length: 1\r\n"
                          "Connection: close\r\n\r\nx",
                          absl::Seconds(5)),
                StartsWith("HTTP/1.1 200"));
    EXPECT_LT(absl::Now() - start, absl::Seconds(1));
    absl::SleepFor(absl::Milliseconds(200));
  }
  for (int fd : slow) close(fd);
}

// A client dribbling its headers is cut off at the header deadline (408),
// however often it sends a byte.
TEST_F(HttpServerTest, HeadersMustArriveWithinTheDeadline) {
  ServerOptions options;
  options.header_timeout = absl::Milliseconds(600);
  StartServer(options);
  const int fd = Connect(server_->port());
  SendAll(fd, "GET /health HTTP/1.1\r\n");
  std::string got;
  for (int i = 0; i < 20 && got.empty(); ++i) {
    SendAll(fd, "X: y\r\n");
    got = ReadUntil(fd, "\r\n\r\n", absl::Milliseconds(150));
  }
  EXPECT_THAT(got, StartsWith("HTTP/1.1 408 "));
  close(fd);
}

TEST_F(HttpServerTest, AHandlerLearnsItsClientLeft) {
  StartServer();
  const int fd = Connect(server_->port());
  SendAll(fd, "GET /wait HTTP/1.1\r\n\r\n");
  ASSERT_TRUE(waiting_.WaitForNotificationWithTimeout(absl::Seconds(10)));
  close(fd);
  EXPECT_TRUE(gone_.WaitForNotificationWithTimeout(absl::Seconds(10)));
}

TEST_F(HttpServerTest, StopEndsWaitingHandlers) {
  StartServer();
  const int fd = Connect(server_->port());
  SendAll(fd, "GET /wait HTTP/1.1\r\n\r\n");
  ASSERT_TRUE(waiting_.WaitForNotificationWithTimeout(absl::Seconds(10)));
  const absl::Time start = absl::Now();
  server_->Stop();
  EXPECT_TRUE(gone_.HasBeenNotified());
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  close(fd);
}

}  // namespace
}  // namespace md::service::http
