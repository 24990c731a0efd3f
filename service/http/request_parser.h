// An incremental HTTP/1.1 request parser: bytes in as they arrive, a
// complete request (or the error to answer with) out. Pure: no sockets, no
// clocks, so it is unit-tested and fuzzed on its own; the server
// (http_server.h) owns deadlines.
//
//   kHeaders ──(blank line)──► kBody ──(Content-Length bytes)──► kComplete
//       │                         │
//       └──► kError (status, message: 400, 413, 414, 431, 501, 505, 411)
//
// What it accepts: a request line "METHOD SP target SP HTTP/1.x", header
// lines until an empty one (names case-insensitive, stored lower-case),
// then exactly Content-Length body bytes. Chunked request bodies are refused
// (411: our API takes JSON bodies of known length); a body over the limit
// is refused from the header, before a byte of it is read.
#ifndef MOONDREAM_SERVICE_HTTP_REQUEST_PARSER_H_
#define MOONDREAM_SERVICE_HTTP_REQUEST_PARSER_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"

namespace md::service::http {

struct HttpRequest {
  std::string method;
  std::string target;  // As sent: path and query.
  std::string path;    // Without the query.
  int version_minor = 1;
  // Lower-case names, in arrival order (repeated names kept).
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;

  // The first value of `name` (lower-case), or "" when absent.
  absl::string_view Header(absl::string_view name) const;
  bool HasHeader(absl::string_view name) const;
  // HTTP/1.1 keeps the connection unless "Connection: close"; 1.0 closes
  // unless "keep-alive".
  bool KeepAlive() const;
  // "Expect: 100-continue".
  bool ExpectsContinue() const;
};

struct ParserLimits {
  int64_t max_header_bytes = 16 * 1024;  // Request line and headers.
  int64_t max_body_bytes = int64_t{32} << 20;
};

class RequestParser {
 public:
  enum class State { kHeaders, kBody, kComplete, kError };

  explicit RequestParser(ParserLimits limits = {}) : limits_(limits) {}

  // Consumes bytes; returns how many it used (it stops at the end of a
  // complete request, so pipelined bytes after it are left to the caller).
  size_t Feed(absl::string_view bytes);

  State state() const { return state_; }
  // Headers are complete (state kBody or kComplete): the request's method,
  // target and headers are known, the body may still be arriving.
  bool headers_done() const {
    return state_ == State::kBody || state_ == State::kComplete;
  }
  int64_t content_length() const { return content_length_; }
  const HttpRequest& request() const { return request_; }
  HttpRequest TakeRequest() { return std::move(request_); }
  // For kError: the status to answer with and why.
  int error_status() const { return error_status_; }
  const std::string& error_message() const { return error_message_; }

  // Ready for the next request on the same connection.
  void Reset();

 private:
  void ParseHead();
  bool ParseRequestLine(absl::string_view line);
  bool ParseHeaderLine(absl::string_view line);
  bool CheckFraming();
  void Fail(int status, std::string message);

  ParserLimits limits_;
  State state_ = State::kHeaders;
  std::string head_;  // Bytes of the request line and headers so far.
  HttpRequest request_;
  int64_t content_length_ = 0;
  int error_status_ = 0;
  std::string error_message_;
};

}  // namespace md::service::http

#endif  // MOONDREAM_SERVICE_HTTP_REQUEST_PARSER_H_
