#include "service/http_gateway.h"

#include <httplib.h>

#include <cmath>
#include <deque>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <variant>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "model/status_macros.h"
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

const char* ErrorCode(int http_status) {
  switch (http_status) {
    case 400:
      return "invalid_request";
    case 401:
      return "unauthenticated";
    case 404:
      return "not_found";
    case 413:
      return "too_large";
    case 429:
      return "overloaded";
    case 499:
      return "cancelled";
    case 503:
      return "unavailable";
    case 504:
      return "timeout";
    default:
      return "internal";
  }
}

Json ErrorJson(const absl::Status& status, int http_status) {
  return {{"error",
           {{"code", ErrorCode(http_status)},
            {"status", StatusLabel(status)},
            {"message", std::string(status.message())}}}};
}

void SendError(httplib::Response& res, const absl::Status& status) {
  const int http_status = HttpStatusFor(status);
  res.status = http_status;
  if (http_status == 429) res.set_header("Retry-After", "1");
  res.set_content(ErrorJson(status, http_status).dump(), "application/json");
}

Json UsageJson(const RequestSummary& s) {
  return {{"prompt_tokens", s.prompt_tokens},
          {"output_tokens", s.output_tokens},
          {"image_cache_hit", s.image_cache_hit}};
}

absl::StatusOr<Json> ParseBody(const httplib::Request& req) {
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
  if (*v != std::floor(*v) || std::abs(*v) > 1e9) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " must be an integer"));
  }
  return static_cast<int>(*v);
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

  void Register(httplib::Server& server) {
    server.set_payload_max_length(options_.max_body_bytes);
    const int threads = options_.threads;
    server.new_task_queue = [threads] {
      return new httplib::ThreadPool(threads);
    };
    server.Get("/health", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(R"({"status":"ok"})", "application/json");
    });
    server.Get(
        "/ready", [this](const httplib::Request&, httplib::Response& res) {
          const bool ready = ready_.load();
          res.status = ready ? 200 : 503;
          res.set_content(
              ready ? R"({"status":"ready"})" : R"({"status":"draining"})",
              "application/json");
        });
    Route(server, "/v1/caption", "caption");
    Route(server, "/v1/query", "query");
    Route(server, "/v1/detect", "detect");
    Route(server, "/v1/point", "point");
    Route(server, "/v1/gaze", "gaze");
    server.set_error_handler([](const httplib::Request&,
                                httplib::Response& res) {
      if (!res.body.empty()) return;
      const absl::Status status =
          res.status == 413
              ? absl::InvalidArgumentError("the request body is too large")
          : res.status == 404 ? absl::NotFoundError("no such endpoint")
                              : absl::InvalidArgumentError("bad request");
      res.set_content(ErrorJson(status, res.status).dump(), "application/json");
    });
  }

 private:
  void Route(httplib::Server& server, const std::string& path,
             const std::string& skill) {
    server.Post(path, [this, skill](const httplib::Request& req,
                                    httplib::Response& res) {
      Handle(skill, req, res);
    });
  }

  absl::StatusOr<Request> Build(const std::string& skill, const Json& body) {
    ASSIGN_OR_RETURN(ImageRef image, ImageOf(body));
    if (skill == "caption" || skill == "query") {
      ASSIGN_OR_RETURN(TextSettings settings, TextSettingsOf(body));
      if (skill == "query") {
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
    if (skill == "detect" || skill == "point") {
      ASSIGN_OR_RETURN(std::optional<std::string> object,
                       StringField(body, "object"));
      ASSIGN_OR_RETURN(Json settings, ObjectField(body, "settings"));
      ASSIGN_OR_RETURN(std::optional<int> max_objects,
                       IntField(settings, "max_objects"));
      return skill == "detect"
                 ? service_.Detect(image, object.value_or(""), max_objects)
                 : service_.Point(image, object.value_or(""), max_objects);
    }
    GazeCall call;
    ASSIGN_OR_RETURN(call.prioritize_accuracy,
                     BoolField(body, "prioritize_accuracy"));
    ASSIGN_OR_RETURN(call.force_detect, BoolField(body, "force_detect"));
    ASSIGN_OR_RETURN(std::optional<int> seed, IntField(body, "seed"));
    if (seed) {
      if (*seed < 0) {
        return absl::InvalidArgumentError("seed must be >= 0");
      }
      call.seed = static_cast<uint64_t>(*seed);
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

  void Report(const std::string& skill, const std::string& tenant,
              const absl::Status& status, const RequestSummary& summary,
              bool reached_engine) {
    if (observer_ != nullptr) {
      observer_->OnRequestDone(skill, tenant.empty() ? "unknown" : tenant,
                               status, summary, reached_engine);
    }
  }

  void Handle(const std::string& skill, const httplib::Request& req,
              httplib::Response& res) {
    std::string key = req.get_header_value("X-Moondream-Auth");
    if (key.empty()) key = req.get_header_value("Authorization");
    std::string tenant;
    bool stream = false;
    auto sink = std::make_shared<GatewaySink>();
    uint64_t id = 0;
    absl::Status submitted = [&]() -> absl::Status {
      ASSIGN_OR_RETURN(tenant, service_.Authenticate(key));
      ASSIGN_OR_RETURN(Json body, ParseBody(req));
      ASSIGN_OR_RETURN(stream, BoolField(body, "stream"));
      if (stream && skill != "caption" && skill != "query") {
        return absl::InvalidArgumentError(
            "stream is only for caption and query");
      }
      ASSIGN_OR_RETURN(Request request, Build(skill, body));
      request.tenant = tenant;
      request.deadline = absl::Now() + options_.timeout;
      request.sink = sink;
      ASSIGN_OR_RETURN(id, service_.Submit(std::move(request)));
      return absl::OkStatus();
    }();
    if (!submitted.ok()) {
      Report(skill, tenant, submitted, {}, false);
      SendError(res, submitted);
      return;
    }
    if (stream) {
      StreamText(skill, tenant, id, sink, res);
    } else {
      Answer(skill, tenant, id, *sink, res);
    }
  }

  // Waits for the end and answers with one JSON object.
  void Answer(const std::string& skill, const std::string& tenant, uint64_t id,
              GatewaySink& sink, httplib::Response& res) {
    std::string text;
    for (;;) {
      // The engine enforces the deadline; the margin only guards a stall.
      std::optional<Event> event =
          sink.Next(options_.timeout + absl::Seconds(30));
      if (!event.has_value()) {
        service_.Cancel(id);
        SendError(res, absl::DeadlineExceededError("the request timed out"));
        return;
      }
      if (auto* t = std::get_if<TextEvent>(&*event)) {
        text += t->text;
        continue;
      }
      const DoneEvent& done = std::get<DoneEvent>(*event);
      Report(skill, tenant, done.status, done.summary, true);
      if (!done.status.ok()) {
        SendError(res, done.status);
        return;
      }
      Json out = {{"request_id", std::to_string(id)},
                  {"usage", UsageJson(done.summary)}};
      if (skill == "caption") out["caption"] = text;
      if (skill == "query") out["answer"] = text;
      if (skill == "caption" || skill == "query") {
        out["finish_reason"] = StopReasonName(done.summary.stop);
      }
      if (skill == "detect") out["objects"] = sink.objects();
      if (skill == "point") out["points"] = sink.points();
      if (skill == "gaze") out["gaze"] = sink.gaze();
      res.set_content(out.dump(), "application/json");
      return;
    }
  }

  // Server-sent events: data: {"chunk": "..."} per piece, then
  // data: {"completed": true, ...} (or data: {"error": ...}).
  void StreamText(const std::string& skill, const std::string& tenant,
                  uint64_t id, std::shared_ptr<GatewaySink> sink,
                  httplib::Response& res) {
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, skill, tenant, id, sink](size_t, httplib::DataSink& out) {
          std::optional<Event> event =
              sink->Next(options_.timeout + absl::Seconds(30));
          auto send = [&out](const Json& data) {
            const std::string line =
                absl::StrCat("data: ", data.dump(), "\n\n");
            return out.write(line.data(), line.size());
          };
          if (!event.has_value()) {
            service_.Cancel(id);
            send(ErrorJson(absl::DeadlineExceededError("timed out"), 504));
            out.done();
            return false;
          }
          if (auto* t = std::get_if<TextEvent>(&*event)) {
            if (!send({{"chunk", t->text}})) {
              service_.Cancel(id);  // The client went away.
              return false;
            }
            return true;
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
          out.done();
          return true;
        },
        [this, id, sink](bool success) {
          if (!success) service_.Cancel(id);
        });
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
  ASSIGN_OR_RETURN(gateway->listener_,
                   HttpListener::Start(options.host, options.port,
                                       [&endpoints](HttpRoutes& server) {
                                         endpoints->Register(server);
                                       }));
  return gateway;
}

HttpGateway::~HttpGateway() {
  if (listener_ != nullptr) listener_->Stop();
}

}  // namespace md::service
