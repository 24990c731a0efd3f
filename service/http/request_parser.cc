#include "service/http/request_parser.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace md::service::http {
namespace {

// RFC 9110 token characters (method and header names).
bool IsTokenChar(char c) {
  if (absl::ascii_isalnum(static_cast<unsigned char>(c))) return true;
  return absl::string_view("!#$%&'*+-.^_`|~").find(c) !=
         absl::string_view::npos;
}

bool IsToken(absl::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), IsTokenChar);
}

// Field values: visible characters, spaces and tabs (obs-text allowed); no
// control characters, which could split or smuggle headers.
bool IsFieldValue(absl::string_view s) {
  for (char c : s) {
    const unsigned char u = static_cast<unsigned char>(c);
    if ((u < 0x20 && c != '\t') || u == 0x7f) return false;
  }
  return true;
}

}  // namespace

absl::string_view HttpRequest::Header(absl::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (key == name) return value;
  }
  return {};
}

bool HttpRequest::HasHeader(absl::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (key == name) return true;
  }
  return false;
}

bool HttpRequest::KeepAlive() const {
  const std::string connection = absl::AsciiStrToLower(Header("connection"));
  if (version_minor == 0) return absl::StrContains(connection, "keep-alive");
  return !absl::StrContains(connection, "close");
}

bool HttpRequest::ExpectsContinue() const {
  return absl::EqualsIgnoreCase(Header("expect"), "100-continue");
}

void RequestParser::Reset() {
  state_ = State::kHeaders;
  head_.clear();
  request_ = HttpRequest();
  content_length_ = 0;
  error_status_ = 0;
  error_message_.clear();
}

void RequestParser::Fail(int status, std::string message) {
  state_ = State::kError;
  error_status_ = status;
  error_message_ = std::move(message);
}

size_t RequestParser::Feed(absl::string_view bytes) {
  size_t used = 0;
  while (used < bytes.size() &&
         (state_ == State::kHeaders || state_ == State::kBody)) {
    absl::string_view rest = bytes.substr(used);
    if (state_ == State::kHeaders) {
      // Look for the blank line across what we have and what came.
      const size_t before = head_.size();
      const size_t room =
          static_cast<size_t>(limits_.max_header_bytes) + 4 - before;
      const size_t take = std::min(rest.size(), room);
      head_.append(rest.data(), take);
      const size_t start = before >= 3 ? before - 3 : 0;
      const size_t end = head_.find("\r\n\r\n", start);
      if (end == std::string::npos) {
        used += take;
        // Over the limit once no blank line can end the headers within it:
        // up to 3 of its bytes may have come already, and the verdict must
        // not depend on how the bytes were cut.
        if (static_cast<int64_t>(head_.size()) >=
            limits_.max_header_bytes + 4) {
          Fail(431, absl::StrCat("the request headers exceed ",
                                 limits_.max_header_bytes, " bytes"));
        }
        continue;
      }
      used += end + 4 - before;
      head_.resize(end);
      ParseHead();
      continue;
    }
    const int64_t missing =
        content_length_ - static_cast<int64_t>(request_.body.size());
    const size_t take =
        static_cast<size_t>(std::min<int64_t>(missing, rest.size()));
    request_.body.append(rest.data(), take);
    used += take;
    if (static_cast<int64_t>(request_.body.size()) == content_length_) {
      state_ = State::kComplete;
    }
  }
  return used;
}

void RequestParser::ParseHead() {
  std::vector<absl::string_view> lines = absl::StrSplit(head_, "\r\n");
  // Tolerate blank lines before the request line (RFC 9112 §2.2).
  size_t first = 0;
  while (first < lines.size() && lines[first].empty()) ++first;
  if (first == lines.size()) return Fail(400, "empty request");
  if (!ParseRequestLine(lines[first])) return;
  for (size_t i = first + 1; i < lines.size(); ++i) {
    if (!ParseHeaderLine(lines[i])) return;
  }
  if (!CheckFraming()) return;
  state_ = content_length_ == 0 ? State::kComplete : State::kBody;
}

bool RequestParser::ParseRequestLine(absl::string_view line) {
  std::vector<absl::string_view> parts = absl::StrSplit(line, ' ');
  if (parts.size() != 3 || !IsToken(parts[0]) || parts[1].empty()) {
    Fail(400, "malformed request line");
    return false;
  }
  if (parts[2] == "HTTP/1.1") {
    request_.version_minor = 1;
  } else if (parts[2] == "HTTP/1.0") {
    request_.version_minor = 0;
  } else if (absl::StartsWith(parts[2], "HTTP/")) {
    Fail(505, "only HTTP/1.0 and HTTP/1.1 are served");
    return false;
  } else {
    Fail(400, "malformed request line");
    return false;
  }
  for (char c : parts[1]) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) {
      Fail(400, "malformed request target");
      return false;
    }
  }
  request_.method = std::string(parts[0]);
  request_.target = std::string(parts[1]);
  request_.path = request_.target.substr(0, request_.target.find('?'));
  return true;
}

bool RequestParser::ParseHeaderLine(absl::string_view line) {
  if (!line.empty() && (line[0] == ' ' || line[0] == '\t')) {
    Fail(400, "obsolete header line folding is not accepted");
    return false;
  }
  const size_t colon = line.find(':');
  if (colon == absl::string_view::npos || !IsToken(line.substr(0, colon))) {
    Fail(400, "malformed header line");
    return false;
  }
  absl::string_view value = absl::StripAsciiWhitespace(line.substr(colon + 1));
  if (!IsFieldValue(value)) {
    Fail(400, "a header value holds control characters");
    return false;
  }
  request_.headers.emplace_back(absl::AsciiStrToLower(line.substr(0, colon)),
                                std::string(value));
  return true;
}

// How the body is delimited: Content-Length only, one value, in range.
bool RequestParser::CheckFraming() {
  if (request_.HasHeader("transfer-encoding")) {
    Fail(411, "chunked request bodies are not accepted; send Content-Length");
    return false;
  }
  bool seen = false;
  for (const auto& [key, value] : request_.headers) {
    if (key != "content-length") continue;
    int64_t n = -1;
    if (value.empty() ||
        !std::all_of(value.begin(), value.end(),
                     [](char c) { return c >= '0' && c <= '9'; }) ||
        value.size() > 18 || !absl::SimpleAtoi(value, &n)) {
      Fail(400, "Content-Length must be a non-negative integer");
      return false;
    }
    if (seen && n != content_length_) {
      Fail(400, "conflicting Content-Length headers");
      return false;
    }
    seen = true;
    content_length_ = n;
  }
  if (content_length_ > limits_.max_body_bytes) {
    Fail(413, absl::StrCat("the request body is too large: ", content_length_,
                           " bytes; the limit is ", limits_.max_body_bytes));
    return false;
  }
  return true;
}

}  // namespace md::service::http
