#include "service/http_gateway.h"

#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <variant>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "base/status_macros.h"
#include "model/skills/skill_table.h"
#include "service/http/http_server.h"
#include "service/metrics.h"

namespace md::service {
namespace {

using scheduler::Request;
using scheduler::RequestSummary;

// ---- Results of one request, as the engine produces them ----

struct TextEvent {
  std::string text;
};
struct DoneEvent {
  absl::Status status;
  RequestSummary summary;
};
using Event = std::variant<TextEvent, DoneEvent>;

// Collects a request's outputs for the HTTP handler thread, which either
// streams the events as they come or waits for the end.
class GatewaySink final : public scheduler::RequestSink {
 public:
  void OnToken(int token, absl::string_view text) override {
    if (text.empty()) return;
    Push(TextEvent{std::string(text)});
  }
  void OnTextTail(absl::string_view text) override {
    Push(TextEvent{std::string(text)});
  }
  void OnBox(const Box& box) override {
    absl::MutexLock lock(&mu_);
    objects_.push_back({{"x_min", box.x_min},
                        {"y_min", box.y_min},
                        {"x_max", box.x_max},
                        {"y_max", box.y_max}});
  }
  void OnPoint(const md::Point& point) override {
    absl::MutexLock lock(&mu_);
    points_.push_back({{"x", point.x}, {"y", point.y}});
  }
  void OnGaze(const std::optional<md::Point>& gaze) override {
    absl::MutexLock lock(&mu_);
    gaze_ =
        gaze.has_value() ? Json{{"x", gaze->x}, {"y", gaze->y}} : Json(nullptr);
  }
  void OnDone(const absl::Status& status,
              const RequestSummary& summary) override {
    Push(DoneEvent{status, summary});
  }

  // The next event, or nullopt after `timeout`.
  std::optional<Event> Next(absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return !events_.empty();
    };
    if (!mu_.AwaitWithTimeout(absl::Condition(&ready), timeout)) {
      return std::nullopt;
    }
    Event event = std::move(events_.front());
    events_.pop_front();
    return event;
  }

  Json objects() {
    absl::MutexLock lock(&mu_);
    return objects_;
  }
  Json points() {
    absl::MutexLock lock(&mu_);
    return points_;
  }
  Json gaze() {
    absl::MutexLock lock(&mu_);
    return gaze_;
  }

 private:
  void Push(Event event) {
    absl::MutexLock lock(&mu_);
    events_.push_back(std::move(event));
  }

  absl::Mutex mu_;
  std::deque<Event> events_ ABSL_GUARDED_BY(mu_);
  Json objects_ ABSL_GUARDED_BY(mu_) = Json::array();
  Json points_ ABSL_GUARDED_BY(mu_) = Json::array();
  Json gaze_ ABSL_GUARDED_BY(mu_) = nullptr;
};

// ---- Requests ----

Json ErrorJson(const absl::Status& status, int http_status) {
  return {{"error",
           {{"code", http::ErrorCodeName(http_status)},
            {"status", StatusLabel(status)},
            {"message", std::string(status.message())}}}};
}

void SendError(http::Exchange& exchange, const absl::Status& status) {
  const int http_status = HttpStatusFor(status);
  http::HeaderList headers;
  if (http_status == 429) headers.emplace_back("Retry-After", "1");
  exchange.Respond(http_status, "application/json",
                   ErrorJson(status, http_status).dump(), headers);
}

void SendJson(http::Exchange& exchange, const Json& body) {
  exchange.Respond(200, "application/json", body.dump());
}

Json UsageJson(const RequestSummary& s) {
  return {{"prompt_tokens", s.prompt_tokens},
          {"output_tokens", s.output_tokens},
          {"image_cache_hit", s.image_cache_hit}};
}

// One endpoint's handling: authenticate, parse, build, submit, answer.
class Endpoints {
 public:
  Endpoints(Service& service, const HttpOptions& options,
            RequestObserver* observer, std::atomic<bool>& ready)
      : service_(service),
        options_(options),
        observer_(observer),
        ready_(ready) {}

  void Register(http::HttpServer& server) {
    // Health answers on the server's own thread: busy workers or slow
    // clients never delay it.
    server.Route(
        "GET", "/health",
        [](http::Exchange& exchange) {
          exchange.Respond(200, "application/json", R"({"status":"ok"})");
        },
        http::Dispatch::kInline);
    server.Route(
        "GET", "/ready",
        [this](http::Exchange& exchange) {
          const bool ready = ready_.load();
          exchange.Respond(
              ready ? 200 : 503, "application/json",
              ready ? R"({"status":"ready"})" : R"({"status":"draining"})");
        },
        http::Dispatch::kInline);
    for (const SkillSpec& spec : SkillTable()) {
      const Skill skill = spec.skill;
      server.Route(
          "POST", absl::StrCat("/v1/", spec.name),
          [this, skill](http::Exchange& exchange) { Handle(skill, exchange); });
    }
  }

 private:
  void Report(Skill skill, const std::string& tenant,
              const absl::Status& status, const RequestSummary& summary,
              bool reached_engine) {
    if (observer_ != nullptr) {
      observer_->OnRequestDone(std::string(SkillName(skill)),
                               tenant.empty() ? "unknown" : tenant, status,
                               summary, reached_engine);
    }
  }

  void Handle(Skill skill, http::Exchange& exchange) {
    const absl::Time arrived = absl::Now();
    const http::HttpRequest& req = exchange.request();
    std::string key(req.Header("x-moondream-auth"));
    if (key.empty()) key = std::string(req.Header("authorization"));
    std::string tenant;
    bool stream = false;
    auto sink = std::make_shared<GatewaySink>();
    uint64_t id = 0;
    absl::Status submitted = [&]() -> absl::Status {
      ASSIGN_OR_RETURN(tenant, service_.Authenticate(key));
      // Overload is refused before the body is parsed and the image decoded.
      ASSIGN_OR_RETURN(Service::Admission admission, service_.Admit(tenant));
      ASSIGN_OR_RETURN(Json body,
                       ParseJsonBody(req.Header("content-type"), req.body));
      ASSIGN_OR_RETURN(HttpCall call, ParseHttpCall(skill, body));
      stream = call.stream;
      call.call.image.tenant = tenant;
      ASSIGN_OR_RETURN(Request request, service_.Build(call.call));
      request.tenant = tenant;
      request.deadline = arrived + options_.timeout;
      request.arrived = arrived;
      request.sink = sink;
      ASSIGN_OR_RETURN(id, service_.Submit(std::move(request)));
      return absl::OkStatus();
    }();
    if (!submitted.ok()) {
      Report(skill, tenant, submitted, {}, false);
      SendError(exchange, submitted);
      return;
    }
    // A client that leaves stops its request at the engine's next step; the
    // handler still waits for the end, to count it.
    exchange.OnClientGone([this, id] { service_.Cancel(id); });
    if (stream) {
      StreamText(skill, tenant, id, *sink, exchange);
    } else {
      Answer(skill, tenant, id, *sink, exchange);
    }
  }

  // Waits for the end and answers with one JSON object.
  void Answer(Skill skill, const std::string& tenant, uint64_t id,
              GatewaySink& sink, http::Exchange& exchange) {
    std::string text;
    for (;;) {
      // The engine enforces the deadline; the margin only guards a stall.
      std::optional<Event> event =
          sink.Next(options_.timeout + absl::Seconds(30));
      if (!event.has_value()) {
        service_.Cancel(id);
        SendError(exchange,
                  absl::DeadlineExceededError("the request timed out"));
        return;
      }
      if (auto* t = std::get_if<TextEvent>(&*event)) {
        text += t->text;
        continue;
      }
      const DoneEvent& done = std::get<DoneEvent>(*event);
      Report(skill, tenant, done.status, done.summary, true);
      if (!done.status.ok()) {
        SendError(exchange, done.status);
        return;
      }
      Json out = {{"request_id", std::to_string(id)},
                  {"usage", UsageJson(done.summary)}};
      if (skill == Skill::kCaption) out["caption"] = text;
      if (skill == Skill::kQuery) out["answer"] = text;
      if (SpecOf(skill).streams_text) {
        out["finish_reason"] = StopReasonName(done.summary.stop);
      }
      if (skill == Skill::kDetect) out["objects"] = sink.objects();
      if (skill == Skill::kPoint) out["points"] = sink.points();
      if (skill == Skill::kGaze) out["gaze"] = sink.gaze();
      SendJson(exchange, out);
      return;
    }
  }

  // Server-sent events: data: {"chunk": "..."} per piece, then
  // data: {"completed": true, ...} (or data: {"error": ...}). When the
  // client leaves, the request is cancelled (OnClientGone) and its end is
  // still awaited and counted.
  void StreamText(Skill skill, const std::string& tenant, uint64_t id,
                  GatewaySink& sink, http::Exchange& exchange) {
    exchange.StartStream(200, "text/event-stream",
                         {{"Cache-Control", "no-cache"}});
    auto send = [&exchange](const Json& data) {
      return exchange.Send(absl::StrCat("data: ", data.dump(), "\n\n"));
    };
    for (;;) {
      std::optional<Event> event =
          sink.Next(options_.timeout + absl::Seconds(30));
      if (!event.has_value()) {
        service_.Cancel(id);
        send(ErrorJson(absl::DeadlineExceededError("timed out"), 504));
        exchange.EndStream();
        return;
      }
      if (auto* t = std::get_if<TextEvent>(&*event)) {
        send({{"chunk", t->text}});
        continue;
      }
      const DoneEvent& done = std::get<DoneEvent>(*event);
      Report(skill, tenant, done.status, done.summary, true);
      if (done.status.ok()) {
        send({{"completed", true},
              {"request_id", std::to_string(id)},
              {"finish_reason", StopReasonName(done.summary.stop)},
              {"usage", UsageJson(done.summary)}});
      } else {
        send(ErrorJson(done.status, HttpStatusFor(done.status)));
      }
      exchange.EndStream();
      return;
    }
  }

  Service& service_;
  const HttpOptions options_;
  RequestObserver* observer_;
  std::atomic<bool>& ready_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<HttpGateway>> HttpGateway::Start(
    Service& service, const HttpOptions& options, RequestObserver* observer) {
  std::unique_ptr<HttpGateway> gateway(new HttpGateway());
  auto endpoints =
      std::make_shared<Endpoints>(service, options, observer, gateway->ready_);
  gateway->endpoints_ = endpoints;
  http::ServerOptions server;
  server.host = options.host;
  server.port = options.port;
  server.limits.max_body_bytes = options.max_body_bytes;
  server.workers = options.threads;
  server.header_timeout = options.header_timeout;
  server.body_timeout = options.body_timeout;
  server.response_headers = options.response_headers;
  if (!options.replica_name.empty()) {
    server.response_headers.emplace_back("X-Moondream-Replica",
                                         options.replica_name);
  }
  server.max_connection_age = options.max_connection_age;
  gateway->server_ = std::make_unique<http::HttpServer>(server);
  endpoints->Register(*gateway->server_);
  RETURN_IF_ERROR(gateway->server_->Start());
  return gateway;
}

HttpGateway::~HttpGateway() { Stop(); }

int HttpGateway::port() const { return server_->port(); }

void HttpGateway::StopAccepting() {
  if (server_ != nullptr) server_->StopAccepting();
}

void HttpGateway::Stop() {
  if (server_ != nullptr) server_->Stop();
}

}  // namespace md::service
