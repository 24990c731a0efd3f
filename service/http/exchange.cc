// Responses (Exchange), status names, and writing to a connection.
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>

#include "absl/strings/str_cat.h"
#include "service/http/connection.h"
#include "service/http/http_server.h"

namespace md::service::http {

bool WriteAll(int fd, absl::string_view bytes, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!bytes.empty()) {
    const ssize_t n = send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n > 0) {
      bytes.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      const int64_t ms = absl::ToInt64Milliseconds(deadline - absl::Now());
      if (ms <= 0) return false;
      pollfd p{fd, POLLOUT, 0};
      if (poll(&p, 1, static_cast<int>(ms)) < 0 && errno != EINTR) {
        return false;
      }
      continue;
    }
    return false;
  }
  return true;
}

const char* ReasonPhrase(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 411:
      return "Length Required";
    case 413:
      return "Content Too Large";
    case 415:
      return "Unsupported Media Type";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 499:
      return "Client Closed Request";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Status";
  }
}

const char* ErrorCodeName(int status) {
  switch (status) {
    case 400:
      return "invalid_request";
    case 401:
      return "unauthenticated";
    case 403:
      return "permission_denied";
    case 404:
      return "not_found";
    case 405:
      return "method_not_allowed";
    case 408:
      return "request_timeout";
    case 411:
      return "length_required";
    case 413:
      return "too_large";
    case 415:
      return "unsupported_media_type";
    case 429:
      return "overloaded";
    case 431:
      return "headers_too_large";
    case 499:
      return "cancelled";
    case 503:
      return "unavailable";
    case 504:
      return "timeout";
    case 505:
      return "http_version_not_supported";
    default:
      return "internal";
  }
}

// ---- Exchange ----

Exchange::Exchange(std::shared_ptr<Connection> connection, HttpRequest request,
                   const ServerOptions& options)
    : connection_(std::move(connection)),
      request_(std::move(request)),
      options_(options),
      keep_alive_(request_.KeepAlive() && absl::Now() - connection_->opened <
                                              options.max_connection_age) {}

Exchange::~Exchange() { connection_->ClearOnGone(); }

bool Exchange::client_gone() const { return connection_->IsGone(); }

void Exchange::OnClientGone(std::function<void()> fn) {
  connection_->OnGone(std::move(fn));
}

bool Exchange::Write(absl::string_view bytes) {
  if (connection_->IsGone()) return false;
  if (!WriteAll(connection_->fd, bytes, options_.write_timeout)) {
    connection_->MarkGone();
    return false;
  }
  return true;
}

std::string Exchange::Head(int status, absl::string_view content_type,
                           const HeaderList& headers, bool chunked,
                           int64_t content_length) {
  std::string head =
      absl::StrCat("HTTP/1.1 ", status, " ", ReasonPhrase(status), "\r\n");
  if (!content_type.empty()) {
    absl::StrAppend(&head, "Content-Type: ", content_type, "\r\n");
  }
  if (chunked) {
    absl::StrAppend(&head, "Transfer-Encoding: chunked\r\n");
  } else if (content_length >= 0) {
    absl::StrAppend(&head, "Content-Length: ", content_length, "\r\n");
  }
  for (const HeaderList* list : {&options_.response_headers, &headers}) {
    for (const auto& [name, value] : *list) {
      absl::StrAppend(&head, name, ": ", value, "\r\n");
    }
  }
  if (!keep_alive_) absl::StrAppend(&head, "Connection: close\r\n");
  absl::StrAppend(&head, "\r\n");
  return head;
}

void Exchange::Respond(int status, absl::string_view content_type,
                       absl::string_view body, const HeaderList& headers) {
  if (responded_) return;
  responded_ = true;
  std::string bytes = Head(status, content_type, headers, /*chunked=*/false,
                           static_cast<int64_t>(body.size()));
  if (request_.method != "HEAD") bytes.append(body.data(), body.size());
  Write(bytes);
}

bool Exchange::StartStream(int status, absl::string_view content_type,
                           const HeaderList& headers) {
  if (responded_) return false;
  responded_ = true;
  streaming_ = true;
  // HTTP/1.0 has no chunked encoding: the end of the body is the close.
  const bool chunked = request_.version_minor >= 1;
  if (!chunked) keep_alive_ = false;
  return Write(Head(status, content_type, headers, chunked, -1));
}

bool Exchange::Send(absl::string_view data) {
  if (!streaming_ || data.empty()) return !client_gone();
  if (request_.version_minor == 0) return Write(data);
  return Write(absl::StrCat(absl::Hex(data.size()), "\r\n", data, "\r\n"));
}

void Exchange::EndStream() {
  if (!streaming_) return;
  streaming_ = false;
  if (request_.version_minor >= 1) Write("0\r\n\r\n");
}

}  // namespace md::service::http
