#include "service/http_listener.h"

#include <httplib.h>

#include "absl/strings/str_cat.h"

namespace md::service {

absl::StatusOr<std::unique_ptr<HttpListener>> HttpListener::Start(
    const std::string& host, int port,
    const std::function<void(HttpRoutes&)>& routes) {
  std::unique_ptr<HttpListener> listener(new HttpListener());
  listener->server_ = std::make_unique<httplib::Server>();
  routes(*listener->server_);
  if (port == 0) {
    listener->port_ = listener->server_->bind_to_any_port(host);
  } else if (listener->server_->bind_to_port(host, port)) {
    listener->port_ = port;
  }
  if (listener->port_ <= 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", host, ":", port));
  }
  httplib::Server* server = listener->server_.get();
  listener->thread_ = std::thread([server] { server->listen_after_bind(); });
  return listener;
}

void HttpListener::Stop() {
  if (server_ != nullptr) server_->stop();
  if (thread_.joinable()) thread_.join();
}

HttpListener::~HttpListener() { Stop(); }

}  // namespace md::service
