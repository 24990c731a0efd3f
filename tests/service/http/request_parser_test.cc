// The HTTP/1.1 request parser, fed as bytes arrive (whole, byte by byte,
// split anywhere): every well-formed request parses the same, every
// malformed one gets the status a client should see.
#include "service/http/request_parser.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace md::service::http {
namespace {

using State = RequestParser::State;

// Feeds `bytes` in pieces of `step`, stopping at the end of a request.
RequestParser Parse(const std::string& bytes, size_t step,
                    ParserLimits limits = {}) {
  RequestParser parser(limits);
  size_t at = 0;
  while (at < bytes.size() && (parser.state() == State::kHeaders ||
                               parser.state() == State::kBody)) {
    const size_t n = std::min(step, bytes.size() - at);
    const size_t used = parser.Feed(absl::string_view(bytes).substr(at, n));
    at += used;
    if (used < n) break;
  }
  return parser;
}

constexpr char kPost[] =
    "POST /v1/query?x=1 HTTP/1.1\r\n"
    "Host: a\r\n"
    "Content-Type: application/json\r\n"
    "X-Moondream-Auth:  key1 \r\n"
    "Content-Length: 11\r\n"
    "\r\n"
    "{\"q\": \"hi\"}";

TEST(RequestParserTest, ParsesTheSameWhateverTheSplit) {
  for (size_t step : {size_t{1}, size_t{2}, size_t{7}, size_t{4096}}) {
    SCOPED_TRACE(step);
    RequestParser parser = Parse(kPost, step);
    ASSERT_EQ(parser.state(), State::kComplete) << parser.error_message();
    const HttpRequest& r = parser.request();
    EXPECT_EQ(r.method, "POST");
    EXPECT_EQ(r.target, "/v1/query?x=1");
    EXPECT_EQ(r.path, "/v1/query");
    EXPECT_EQ(r.Header("x-moondream-auth"), "key1");
    EXPECT_EQ(r.Header("content-type"), "application/json");
    EXPECT_EQ(r.body, "{\"q\": \"hi\"}");
    EXPECT_TRUE(r.KeepAlive());
  }
}

TEST(RequestParserTest, StopsAtTheEndOfARequest) {
  const std::string two = std::string(kPost) + "GET /health HTTP/1.1\r\n\r\n";
  RequestParser parser;
  const size_t used = parser.Feed(two);
  EXPECT_EQ(parser.state(), State::kComplete);
  EXPECT_EQ(used, std::string(kPost).size());
  parser.Reset();
  parser.Feed(absl::string_view(two).substr(used));
  EXPECT_EQ(parser.state(), State::kComplete);
  EXPECT_EQ(parser.request().path, "/health");
  EXPECT_TRUE(parser.request().body.empty());
}

TEST(RequestParserTest, HeadersAreKnownBeforeTheBody) {
  RequestParser parser;
  parser.Feed(
      "POST /v1/query HTTP/1.1\r\nExpect: 100-continue\r\n"
      "Content-Length: 5\r\n\r\nab");
  EXPECT_EQ(parser.state(), State::kBody);
  EXPECT_TRUE(parser.headers_done());
  EXPECT_TRUE(parser.request().ExpectsContinue());
  EXPECT_EQ(parser.content_length(), 5);
}

TEST(RequestParserTest, ConnectionSemanticsFollowTheVersion) {
  EXPECT_FALSE(Parse("GET / HTTP/1.1\r\nConnection: close\r\n\r\n", 64)
                   .request()
                   .KeepAlive());
  EXPECT_FALSE(Parse("GET / HTTP/1.0\r\n\r\n", 64).request().KeepAlive());
  EXPECT_TRUE(Parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 64)
                  .request()
                  .KeepAlive());
}

TEST(RequestParserTest, MalformedRequestsGetTheRightStatus) {
  struct Bad {
    const char* name;
    std::string bytes;
    int status;
  };
  const std::string big_header(20000, 'a');
  const std::vector<Bad> table = {
      {"no version", "GET /\r\n\r\n", 400},
      {"bad version", "GET / HTTP/2.0\r\n\r\n", 505},
      {"not http", "GET / FTP/1.1\r\n\r\n", 400},
      {"bad method", "G(T / HTTP/1.1\r\n\r\n", 400},
      {"header without colon", "GET / HTTP/1.1\r\nHost\r\n\r\n", 400},
      {"folded header", "GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n", 400},
      {"control character", "GET / HTTP/1.1\r\nA: b\x01\r\n\r\n", 400},
      {"negative length", "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400},
      {"huge length",
       "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", 400},
      {"conflicting lengths",
       "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
       400},
      {"chunked body", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
       411},
      {"body over the limit", "POST / HTTP/1.1\r\nContent-Length: 2000\r\n\r\n",
       413},
      {"headers over the limit",
       "GET / HTTP/1.1\r\nA: " + big_header + "\r\n\r\n", 431},
  };
  for (const Bad& bad : table) {
    SCOPED_TRACE(bad.name);
    for (size_t step : {size_t{1}, size_t{1 << 20}}) {
      RequestParser parser = Parse(
          bad.bytes, step, {.max_header_bytes = 16384, .max_body_bytes = 1000});
      EXPECT_EQ(parser.state(), State::kError);
      EXPECT_EQ(parser.error_status(), bad.status) << parser.error_message();
      EXPECT_FALSE(parser.error_message().empty());
    }
  }
}

// Found by http_request_fuzz: cut after the blank line's first bytes,
// headers of exactly the limit were refused (431), whole they were accepted.
TEST(RequestParserTest, TheHeaderLimitDoesNotDependOnTheSplit) {
  const ParserLimits limits{.max_header_bytes = 64, .max_body_bytes = 10};
  for (int size : {63, 64, 65}) {
    SCOPED_TRACE(size);
    std::string head = "GET / HTTP/1.1\r\nX: ";
    head.append(size - head.size(), 'a');
    const std::string bytes = head + "\r\n\r\n";
    for (size_t step : {size_t{1}, size_t{2}, size_t{3}, bytes.size()}) {
      SCOPED_TRACE(step);
      RequestParser parser = Parse(bytes, step, limits);
      if (size <= 64) {
        EXPECT_EQ(parser.state(), State::kComplete) << parser.error_message();
      } else {
        EXPECT_EQ(parser.error_status(), 431);
      }
    }
  }
}

TEST(RequestParserTest, AnOversizedBodyIsRefusedBeforeItArrives) {
  RequestParser parser({.max_body_bytes = 10});
  parser.Feed(
      "POST / HTTP/1.1\r\nExpect: 100-continue\r\n"
      "Content-Length: 11\r\n\r\n");
  EXPECT_EQ(parser.state(), State::kError);
  EXPECT_EQ(parser.error_status(), 413);
}

}  // namespace
}  // namespace md::service::http
