#include "service/http_gateway.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <variant>

#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "base/status_macros.h"
#include "model/skills/skill_table.h"
#include "service/http/http_server.h"
#include "service/metrics.h"

namespace md::service {
namespace {

using Json = nlohmann::json;
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

// An error with the HTTP status to answer it with, decided where the error
// arises (never from its message).
absl::Status WithHttpStatus(absl::Status status, int http_status) {
  status.SetPayload(kHttpStatusPayload, absl::Cord(absl::StrCat(http_status)));
  return status;
}

Json UsageJson(const RequestSummary& s) {
  return {{"prompt_tokens", s.prompt_tokens},
          {"output_tokens", s.output_tokens},
          {"image_cache_hit", s.image_cache_hit}};
}

// JSON bodies only: a form or other media type is 415, not a parse error.
absl::Status CheckContentType(const http::HttpRequest& req) {
  const absl::string_view type = req.Header("content-type");
  if (type.empty()) return absl::OkStatus();
  const absl::string_view media =
      absl::StripAsciiWhitespace(type.substr(0, type.find(';')));
  if (absl::EqualsIgnoreCase(media, "application/json")) {
    return absl::OkStatus();
  }
  return WithHttpStatus(
      absl::InvalidArgumentError(
          absl::StrCat("the body must be application/json, not '", media, "'")),
      415);
}

absl::StatusOr<Json> ParseBody(const http::HttpRequest& req) {
  RETURN_IF_ERROR(CheckContentType(req));
  Json body = Json::parse(req.body, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) {
    return absl::InvalidArgumentError(
        "the body is not valid JSON (or not valid UTF-8)");
  }
  if (!body.is_object()) {
    return absl::InvalidArgumentError("the body must be a JSON object");
  }
  return body;
}

// A JSON field of the expected kind, or an error naming it.
absl::StatusOr<std::optional<std::string>> StringField(const Json& obj,
                                                       const char* name) {
  auto it = obj.find(name);
  if (it == obj.end() || it->is_null()) return std::nullopt;
  if (!it->is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(name, " must be a string"));
  }
  return it->get<std::string>();
}

absl::StatusOr<std::optional<double>> NumberField(const Json& obj,
                                                  const char* name) {
  auto it = obj.find(name);
  if (it == obj.end() || it->is_null()) return std::nullopt;
  if (!it->is_number()) {
    return absl::InvalidArgumentError(absl::StrCat(name, " must be a number"));
  }
  return it->get<double>();
}

absl::StatusOr<std::optional<int>> IntField(const Json& obj, const char* name) {
  ASSIGN_OR_RETURN(std::optional<double> v, NumberField(obj, name));
  if (!v) return std::nullopt;
  if (*v != std::floor(*v)) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " must be an integer"));
  }
  // Out-of-range integers saturate: the limits table then says the range.
  return static_cast<int>(std::clamp<double>(
      *v, std::numeric_limits<int>::min(), std::numeric_limits<int>::max()));
}

absl::StatusOr<bool> BoolField(const Json& obj, const char* name) {
  auto it = obj.find(name);
  if (it == obj.end() || it->is_null()) return false;
  if (!it->is_boolean()) {
    return absl::InvalidArgumentError(absl::StrCat(name, " must be a boolean"));
  }
  return it->get<bool>();
}

absl::StatusOr<Json> ObjectField(const Json& obj, const char* name) {
  auto it = obj.find(name);
  if (it == obj.end() || it->is_null()) return Json::object();
  if (!it->is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(name, " must be an object"));
  }
  return *it;
}

absl::StatusOr<ImageRef> ImageOf(const Json& body) {
  ASSIGN_OR_RETURN(std::optional<std::string> url,
                   StringField(body, "image_url"));
  if (!url || url->empty()) {
    return absl::InvalidArgumentError("image_url is missing");
  }
  ImageRef ref;
  if (absl::StartsWith(*url, "handle:")) {
    ref.handle = url->substr(7);
    return ref;
  }
  ASSIGN_OR_RETURN(ref.bytes, DecodeDataUrl(*url));
  return ref;
}

absl::StatusOr<TextSettings> TextSettingsOf(const Json& body) {
  ASSIGN_OR_RETURN(Json s, ObjectField(body, "settings"));
  TextSettings out;
  ASSIGN_OR_RETURN(out.max_tokens, IntField(s, "max_tokens"));
  ASSIGN_OR_RETURN(std::optional<double> temperature,
                   NumberField(s, "temperature"));
  ASSIGN_OR_RETURN(std::optional<double> top_p, NumberField(s, "top_p"));
  ASSIGN_OR_RETURN(std::optional<double> min_p, NumberField(s, "min_p"));
  if (temperature) out.temperature = static_cast<float>(*temperature);
  if (top_p) out.top_p = static_cast<float>(*top_p);
  if (min_p) out.min_p = static_cast<float>(*min_p);
  auto seed = s.find("seed");
  if (seed != s.end() && !seed->is_null()) {
    if (!seed->is_number_unsigned()) {
      return absl::InvalidArgumentError(
          "settings.seed must be a non-negative integer");
    }
    out.seed = seed->get<uint64_t>();
  }
  ASSIGN_OR_RETURN(out.ignore_eos, BoolField(s, "ignore_eos"));
  return out;
}

absl::StatusOr<Point> PointOf(const Json& body, const char* name) {
  ASSIGN_OR_RETURN(Json p, ObjectField(body, name));
  ASSIGN_OR_RETURN(std::optional<double> x, NumberField(p, "x"));
  ASSIGN_OR_RETURN(std::optional<double> y, NumberField(p, "y"));
  if (!x || !y) {
    return absl::InvalidArgumentError(absl::StrCat(name, " needs x and y"));
  }
  return Point{*x, *y};
}

}  // namespace

int HttpStatusFor(const absl::Status& status) {
  if (auto payload = status.GetPayload(kHttpStatusPayload)) {
    int code = 0;
    if (absl::SimpleAtoi(std::string(*payload), &code)) return code;
  }
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kCancelled:
      return 499;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

absl::StatusOr<std::string> DecodeDataUrl(absl::string_view url) {
  if (absl::StartsWith(url, "http://") || absl::StartsWith(url, "https://")) {
    return absl::InvalidArgumentError(
        "image_url: this server does not fetch URLs; send the image as a "
        "data URL (data:image/jpeg;base64,...)");
  }
  if (!absl::StartsWith(url, "data:")) {
    return absl::InvalidArgumentError(
        "image_url must be a data URL (data:image/jpeg;base64,...)");
  }
  const size_t comma = url.find(',');
  if (comma == absl::string_view::npos) {
    return absl::InvalidArgumentError("image_url: the data URL has no ','");
  }
  const absl::string_view meta = url.substr(5, comma - 5);
  if (!absl::EndsWith(meta, ";base64")) {
    return absl::InvalidArgumentError(
        "image_url: the data URL must be base64 (data:...;base64,...)");
  }
  std::string bytes;
  if (!absl::Base64Unescape(url.substr(comma + 1), &bytes)) {
    return absl::InvalidArgumentError("image_url: malformed base64");
  }
  if (bytes.empty()) {
    return absl::InvalidArgumentError("image_url: the image is empty");
  }
  return bytes;
}

namespace {

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
  absl::StatusOr<Request> Build(Skill skill, const std::string& tenant,
                                const Json& body) {
    ASSIGN_OR_RETURN(ImageRef image, ImageOf(body));
    image.tenant = tenant;
    if (skill == Skill::kCaption || skill == Skill::kQuery) {
      ASSIGN_OR_RETURN(TextSettings settings, TextSettingsOf(body));
      if (skill == Skill::kQuery) {
        ASSIGN_OR_RETURN(std::optional<std::string> question,
                         StringField(body, "question"));
        return service_.Query(image, question.value_or(""), settings);
      }
      ASSIGN_OR_RETURN(std::optional<std::string> length,
                       StringField(body, "length"));
      CaptionLength l = CaptionLength::kNormal;
      if (length && *length == "short") {
        l = CaptionLength::kShort;
      } else if (length && *length != "normal") {
        return absl::InvalidArgumentError(
            "length must be \"short\" or \"normal\"");
      }
      return service_.Caption(image, l, settings);
    }
    if (skill == Skill::kDetect || skill == Skill::kPoint) {
      ASSIGN_OR_RETURN(std::optional<std::string> object,
                       StringField(body, "object"));
      ASSIGN_OR_RETURN(Json settings, ObjectField(body, "settings"));
      ASSIGN_OR_RETURN(std::optional<int> max_objects,
                       IntField(settings, "max_objects"));
      return skill == Skill::kDetect
                 ? service_.Detect(image, object.value_or(""), max_objects)
                 : service_.Point(image, object.value_or(""), max_objects);
    }
    GazeCall call;
    ASSIGN_OR_RETURN(call.prioritize_accuracy,
                     BoolField(body, "prioritize_accuracy"));
    ASSIGN_OR_RETURN(call.force_detect, BoolField(body, "force_detect"));
    // Any uint64, as over gRPC.
    if (auto seed = body.find("seed"); seed != body.end() && !seed->is_null()) {
      if (!seed->is_number_unsigned()) {
        return absl::InvalidArgumentError(
            "seed must be a non-negative integer");
      }
      call.seed = seed->get<uint64_t>();
    }
    if (call.prioritize_accuracy) {
      ASSIGN_OR_RETURN(Json f, ObjectField(body, "face"));
      ASSIGN_OR_RETURN(std::optional<double> x_min, NumberField(f, "x_min"));
      ASSIGN_OR_RETURN(std::optional<double> y_min, NumberField(f, "y_min"));
      ASSIGN_OR_RETURN(std::optional<double> x_max, NumberField(f, "x_max"));
      ASSIGN_OR_RETURN(std::optional<double> y_max, NumberField(f, "y_max"));
      if (x_min && y_min && x_max && y_max) {
        call.face = FaceBox{*x_min, *y_min, *x_max, *y_max};
      }
    } else {
      ASSIGN_OR_RETURN(call.eye, PointOf(body, "eye"));
    }
    return service_.Gaze(image, call);
  }

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
      RETURN_IF_ERROR(service_.CheckRoom(tenant));
      ASSIGN_OR_RETURN(Json body, ParseBody(req));
      ASSIGN_OR_RETURN(stream, BoolField(body, "stream"));
      if (stream && !SpecOf(skill).streams_text) {
        return absl::InvalidArgumentError(
            "stream is only for caption and query");
      }
      ASSIGN_OR_RETURN(Request request, Build(skill, tenant, body));
      request.tenant = tenant;
      request.deadline = absl::Now() + options_.timeout;
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
  gateway->server_ = std::make_unique<http::HttpServer>(server);
  endpoints->Register(*gateway->server_);
  RETURN_IF_ERROR(gateway->server_->Start());
  return gateway;
}

HttpGateway::~HttpGateway() { Stop(); }

int HttpGateway::port() const { return server_->port(); }

void HttpGateway::Stop() {
  if (server_ != nullptr) server_->Stop();
}

}  // namespace md::service
