// --protocol=http: the HTTP gateway as Moondream's own clients call it (JSON
// bodies, data-URL images, caption and query streamed as server-sent
// events), on libcurl's multi interface. One event-loop thread owns every
// transfer: Send only prepares an easy handle and queues it, so any number of
// requests are in flight without a thread each, and connections are reused
// from the multi handle's cache.
#include <curl/curl.h>

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "tools/bench/serve/client.h"

namespace md::bench::serve {
namespace {

using Json = nlohmann::json;

// curl_multi_poll never sleeps longer than curl's own next timer; this only
// bounds how long a missed wake-up could go unnoticed.
constexpr int kMaxPollMs = 1000;
// Like the gRPC client's WaitForConnected: a server still starting up gets
// this long to answer before the run gives up.
constexpr auto kConnectWait = std::chrono::seconds(10);

// ---- The request ----

// The data URL's media type, from the image's magic bytes.
absl::string_view MediaType(absl::string_view bytes) {
  if (absl::StartsWith(bytes, "\x89PNG")) return "image/png";
  if (bytes.size() >= 12 && absl::StartsWith(bytes, "RIFF") &&
      bytes.substr(8, 4) == "WEBP") {
    return "image/webp";
  }
  return "image/jpeg";
}

Json SettingsJson(const ClientOptions& options) {
  Json settings = {{"max_tokens", options.max_tokens}};
  if (options.ignore_eos) settings["ignore_eos"] = true;
  return settings;
}

// The skill's own fields: everything but the image. The values match the
// gRPC client's, so the two protocols run the same workload.
Json FieldsOf(const PlannedRequest& request, const ClientOptions& options) {
  if (request.skill == "caption") {
    return {{"stream", true}, {"settings", SettingsJson(options)}};
  }
  if (request.skill == "query") {
    return {{"question", request.text},
            {"stream", true},
            {"settings", SettingsJson(options)}};
  }
  if (request.skill == "gaze") return {{"eye", {{"x", 0.5}, {"y", 0.4}}}};
  return {{"object", request.text}};  // detect, point
}

// The JSON body. The base64 image is nearly all of it and needs no
// escaping, so it is spliced in rather than run through the JSON writer.
std::string BodyOf(const Json& fields, const WorkloadImage& image) {
  std::string body =
      absl::StrCat(R"({"image_url":"data:)", MediaType(image.bytes), ";base64,",
                   absl::Base64Escape(image.bytes), "\"");
  const std::string rest = fields.dump();  // "{...}"
  if (rest.size() > 2) {
    absl::StrAppend(&body, ",", absl::string_view(rest).substr(1));
  } else {
    body += "}";
  }
  return body;
}

std::string UrlOf(const ClientOptions& options, absl::string_view path) {
  return absl::StrCat(options.tls ? "https://" : "http://", options.target,
                      path);
}

// What every handle shares: HTTP/1.1 (one request per connection at a time,
// as the official clients and vLLM's benchmark use it), no Nagle delay on
// small writes, TLS roots, and no signals (curl runs on our own threads).
void SetCommonOptions(CURL* easy, const ClientOptions& options) {
  curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_1_1);
  curl_easy_setopt(easy, CURLOPT_TCP_NODELAY, 1L);
  curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(easy, CURLOPT_USERAGENT, "moondream-bench");
  if (options.tls && !options.tls_ca.empty()) {
    curl_easy_setopt(easy, CURLOPT_CAINFO, options.tls_ca.c_str());
  }
}

// ---- One transfer ----

// A request on the wire, owned by the event loop from Send until its `done`
// has run.
struct Transfer {
  CURL* easy = nullptr;
  curl_slist* headers = nullptr;
  std::string body;  // CURLOPT_POSTFIELDS points into it: never moved
  bool streamed = false;
  int cancel_after_chunks = -1;
  const RunClock* clock = nullptr;
  RequestRecord record;
  std::function<void(RequestRecord)> done;

  // What came back: SSE bytes not yet split into events, or a whole JSON
  // body (an answer, or an error's).
  std::string received;
  bool stream_ended = false;  // a completed or an error event arrived
  std::string stream_error;   // that error event's code
  bool abandoned = false;     // the client cut it off on purpose
  char curl_error[CURL_ERROR_SIZE] = {};

  Transfer() = default;
  Transfer(const Transfer&) = delete;
  Transfer& operator=(const Transfer&) = delete;
  // The loop has removed the handle from the multi handle by now.
  ~Transfer() {
    curl_slist_free_all(headers);
    if (easy != nullptr) curl_easy_cleanup(easy);
  }
};

long HttpStatus(CURL* easy) {
  long status = 0;
  curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
  return status;
}

// An integer field of a JSON object, or 0.
int IntField(const Json& object, const char* name) {
  auto it = object.find(name);
  return it != object.end() && it->is_number_integer() ? it->get<int>() : 0;
}

bool TrueField(const Json& object, const char* name) {
  auto it = object.find(name);
  return it != object.end() && it->is_boolean() && it->get<bool>();
}

void FillUsage(const Json& message, RequestRecord& record) {
  auto usage = message.find("usage");
  if (usage == message.end() || !usage->is_object()) return;
  record.input_tokens = IntField(*usage, "prompt_tokens");
  record.output_tokens = IntField(*usage, "output_tokens");
}

// Chunks may carry several tokens each; as in the gRPC client, the tokens no
// chunk was counted for go to the last one.
void GiveRestToLastChunk(RequestRecord& record) {
  const int counted = static_cast<int>(record.chunks.size());
  if (counted > 0 && record.output_tokens > counted) {
    record.chunks.back().tokens += record.output_tokens - counted;
  }
}

// The data of one SSE event: its data: lines, joined (the format allows
// several); comments, event: and id: lines do not matter here.
std::string EventData(absl::string_view event) {
  std::string data;
  for (absl::string_view line : absl::StrSplit(event, '\n')) {
    if (!absl::ConsumePrefix(&line, "data:")) continue;
    absl::ConsumePrefix(&line, " ");
    if (!data.empty()) data += '\n';
    absl::StrAppend(&data, line);
  }
  return data;
}

// An error event's name for errors_by_code: the HTTP status name the gateway
// puts in "code" ("timeout", "unavailable", ...), since mid-stream the
// status line has long said 200.
std::string StreamErrorName(const Json& error) {
  if (error.is_object()) {
    auto code = error.find("code");
    if (code != error.end() && code->is_string())
      return code->get<std::string>();
  }
  return "UNKNOWN";
}

// One event of a caption or query stream: {"chunk": "..."}, then
// {"completed": true, "usage": {...}} or {"error": {...}}.
void OnEvent(Transfer& t, absl::string_view event) {
  const std::string data = EventData(event);
  if (data.empty()) return;
  const double now = t.clock->Now();
  const Json message = Json::parse(data, nullptr, /*allow_exceptions=*/false);
  if (!message.is_object()) {
    t.stream_ended = true;
    t.stream_error = "BAD_EVENT";
    t.record.end_s = now;
    return;
  }
  auto chunk = message.find("chunk");
  if (chunk != message.end() && chunk->is_string() &&
      !chunk->get_ref<const std::string&>().empty()) {
    t.record.chunks.push_back({now, 1});
  }
  if (auto error = message.find("error"); error != message.end()) {
    t.stream_ended = true;
    t.stream_error = StreamErrorName(*error);
    t.record.end_s = now;
  } else if (TrueField(message, "completed")) {
    t.stream_ended = true;
    FillUsage(message, t.record);
    GiveRestToLastChunk(t.record);
    t.record.end_s = now;
  }
}

// Whether the client gives up on this stream now: it was told to after this
// many chunks, and the stream has not already ended by itself.
bool ShouldAbandon(const Transfer& t) {
  return t.streamed && t.cancel_after_chunks >= 0 && !t.stream_ended &&
         static_cast<int>(t.record.chunks.size()) >= t.cancel_after_chunks;
}

// Handles every whole event received so far (events end at a blank line);
// stops at the point where the client abandons the stream, so the chunk
// count is exact.
void ConsumeEvents(Transfer& t) {
  size_t start = 0;
  for (size_t end; (end = t.received.find("\n\n", start)) != std::string::npos;
       start = end + 2) {
    OnEvent(t, absl::string_view(t.received).substr(start, end - start));
    if (ShouldAbandon(t)) {
      start = end + 2;
      break;
    }
  }
  t.received.erase(0, start);
}

// Returning anything but the size from a curl data callback aborts the
// transfer; curl then closes the connection, which is how the server learns
// that the client left (and cancels the request).
size_t Abandon(Transfer& t) {
  t.abandoned = true;
  t.record.end_s = t.clock->Now();
  return 0;
}

// CURLOPT_HEADERFUNCTION. At the blank line that ends the headers, a stream
// to abandon right after sending (cancel_after_chunks 0) is abandoned: a 200
// means the request is already in the engine, so the cancellation is real
// work for the server rather than a request it never saw.
size_t OnHeader(char* data, size_t size, size_t n, void* user) {
  Transfer& t = *static_cast<Transfer*>(user);
  const size_t bytes = size * n;
  const bool end_of_headers = absl::string_view(data, bytes) == "\r\n" ||
                              absl::string_view(data, bytes) == "\n";
  if (end_of_headers && HttpStatus(t.easy) == 200 && ShouldAbandon(t)) {
    return Abandon(t);
  }
  return bytes;
}

// CURLOPT_WRITEFUNCTION. A 200 stream is split into events as it comes (SSE
// may end lines with \r\n; JSON escapes \r, so dropping it is safe);
// anything else is one JSON body, read once the transfer is done.
size_t OnBody(char* data, size_t size, size_t n, void* user) {
  Transfer& t = *static_cast<Transfer*>(user);
  const size_t bytes = size * n;
  if (!t.streamed || HttpStatus(t.easy) != 200) {
    t.received.append(data, bytes);
    return bytes;
  }
  for (size_t i = 0; i < bytes; ++i) {
    if (data[i] != '\r') t.received.push_back(data[i]);
  }
  ConsumeEvents(t);
  return ShouldAbandon(t) ? Abandon(t) : bytes;
}

size_t Discard(char* data, size_t size, size_t n, void* user) {
  return size * n;
}

// curl's failures, named for errors_by_code in the spirit of gRPC's codes.
std::string CurlErrorName(CURLcode code) {
  switch (code) {
    case CURLE_COULDNT_CONNECT:
      return "CONNECTION_FAILED";
    case CURLE_COULDNT_RESOLVE_HOST:
      return "RESOLVE_FAILED";
    case CURLE_OPERATION_TIMEDOUT:
      return "DEADLINE_EXCEEDED";  // --timeout, as gRPC names it
    case CURLE_GOT_NOTHING:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_PARTIAL_FILE:
      return "CONNECTION_LOST";
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
      return "TLS_FAILED";
    default:
      return absl::StrCat("CURLE_", static_cast<int>(code));
  }
}

// A 200 stream: it succeeded only if it ended with a completed event.
void ConcludeStream(Transfer& t) {
  RequestRecord& r = t.record;
  if (!t.stream_error.empty()) {
    r.error = t.stream_error;
  } else if (!t.stream_ended) {
    r.error = "STREAM_ENDED_EARLY";
  } else {
    r.ok = true;
  }
}

// A 200 answer of detect, point or gaze: one JSON object, E2EL only.
void ConcludeAnswer(Transfer& t) {
  const Json answer =
      Json::parse(t.received, nullptr, /*allow_exceptions=*/false);
  if (!answer.is_object()) {
    t.record.error = "BAD_RESPONSE";
    return;
  }
  FillUsage(answer, t.record);
  t.record.ok = true;
}

// Fills in the record of a transfer that curl has finished, one way or
// another.
void Conclude(Transfer& t, CURLcode result) {
  RequestRecord& r = t.record;
  // Streams end at their last event; everything else now.
  if (!t.stream_ended && !t.abandoned) r.end_s = t.clock->Now();
  if (t.abandoned) {
    r.cancelled = true;
    r.error = "CANCELLED";
    return;
  }
  if (result != CURLE_OK) {
    r.error = CurlErrorName(result);
    return;
  }
  const long status = HttpStatus(t.easy);
  if (status != 200) {
    r.error = std::to_string(status);  // "429", as errors_by_code counts it
    return;
  }
  if (t.streamed) {
    ConcludeStream(t);
  } else {
    ConcludeAnswer(t);
  }
}

// The easy handle for one planned request, ready to add to the multi handle.
std::unique_ptr<Transfer> Prepare(const PlannedRequest& request,
                                  const WorkloadImage& image,
                                  const std::string& api_key,
                                  const RunClock& clock,
                                  const ClientOptions& options) {
  auto t = std::make_unique<Transfer>();
  t->streamed = request.skill == "caption" || request.skill == "query";
  t->cancel_after_chunks = request.cancel_after_chunks;
  t->clock = &clock;
  t->record.skill = request.skill;
  t->record.streamed = t->streamed;
  t->body = BodyOf(FieldsOf(request, options), image);
  t->easy = curl_easy_init();
  if (t->easy == nullptr) return t;  // the loop reports it
  CURL* easy = t->easy;
  SetCommonOptions(easy, options);
  const std::string url = UrlOf(options, absl::StrCat("/v1/", request.skill));
  curl_easy_setopt(easy, CURLOPT_URL, url.c_str());  // curl copies strings
  curl_easy_setopt(easy, CURLOPT_POSTFIELDS, t->body.data());
  curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE,
                   static_cast<curl_off_t>(t->body.size()));
  t->headers = curl_slist_append(t->headers, "Content-Type: application/json");
  // No "Expect: 100-continue" round trip before a large body.
  t->headers = curl_slist_append(t->headers, "Expect:");
  if (t->streamed) {
    t->headers = curl_slist_append(t->headers, "Accept: text/event-stream");
  }
  if (!api_key.empty()) {
    t->headers = curl_slist_append(
        t->headers, absl::StrCat("X-Moondream-Auth: ", api_key).c_str());
  }
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, t->headers);
  curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, OnHeader);
  curl_easy_setopt(easy, CURLOPT_HEADERDATA, t.get());
  curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, OnBody);
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, t.get());
  curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, t->curl_error);
  if (options.timeout_s > 0) {
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS,
                     static_cast<long>(options.timeout_s * 1000));
  }
  curl_easy_setopt(easy, CURLOPT_PRIVATE, t.get());
  return t;
}

// ---- The client ----

class HttpClient final : public Client {
 public:
  HttpClient(ClientOptions options, CURLM* multi)
      : options_(std::move(options)),
        multi_(multi),
        loop_([this] { Loop(); }) {}

  // Requests still in flight end now, as failures ("CANCELLED"); their
  // `done` runs before this returns.
  ~HttpClient() override {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
    }
    curl_multi_wakeup(multi_);
    loop_.join();
    curl_multi_cleanup(multi_);
  }

  void Send(const PlannedRequest& request, const WorkloadImage& image,
            const std::string& api_key, const RunClock& clock,
            std::function<void(RequestRecord)> done) override {
    std::unique_ptr<Transfer> t =
        Prepare(request, image, api_key, clock, options_);
    t->done = std::move(done);
    // After the body is built, like the gRPC client's Begin: the clock
    // measures the server and the wire, not base64.
    t->record.send_s = clock.Now();
    {
      absl::MutexLock lock(&mu_);
      queued_.push_back(std::move(t));
    }
    curl_multi_wakeup(multi_);  // outside the lock: the loop may want it
  }

 private:
  // Adopt what Send queued, let curl move bytes, hand back what finished,
  // then sleep until a socket, one of curl's timers or Send wakes it.
  void Loop() {
    while (AdoptQueued()) {
      int running = 0;
      curl_multi_perform(multi_, &running);
      ReapFinished();
      curl_multi_poll(multi_, nullptr, 0, kMaxPollMs, nullptr);
    }
    AbortAll();
  }

  // Moves the queued transfers onto the multi handle; false once stopping.
  bool AdoptQueued() {
    std::vector<std::unique_ptr<Transfer>> queued;
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return false;
      queued.swap(queued_);
    }
    for (std::unique_ptr<Transfer>& t : queued) {
      if (t->easy == nullptr ||
          curl_multi_add_handle(multi_, t->easy) != CURLM_OK) {
        EndWithError(*t, "CURL_SETUP_FAILED");
        continue;
      }
      CURL* easy = t->easy;
      active_.emplace(easy, std::move(t));
    }
    return true;
  }

  void ReapFinished() {
    int left = 0;
    while (CURLMsg* msg = curl_multi_info_read(multi_, &left)) {
      if (msg->msg != CURLMSG_DONE) continue;
      // Removing the handle invalidates `msg`: read it first.
      CURL* easy = msg->easy_handle;
      const CURLcode result = msg->data.result;
      auto it = active_.find(easy);
      std::unique_ptr<Transfer> t = std::move(it->second);
      active_.erase(it);
      curl_multi_remove_handle(multi_, easy);
      Conclude(*t, result);
      t->done(std::move(t->record));
    }
  }

  // At shutdown: every transfer still queued or on the wire ends now, as a
  // failure the run can see.
  void AbortAll() {
    std::vector<std::unique_ptr<Transfer>> queued;
    {
      absl::MutexLock lock(&mu_);
      queued.swap(queued_);
    }
    for (std::unique_ptr<Transfer>& t : queued) EndWithError(*t, "CANCELLED");
    for (auto& [easy, t] : active_) {
      curl_multi_remove_handle(multi_, easy);
      EndWithError(*t, "CANCELLED");
    }
    active_.clear();
  }

  static void EndWithError(Transfer& t, const char* error) {
    t.record.end_s = t.clock->Now();
    t.record.ok = false;
    t.record.error = error;
    t.done(std::move(t.record));
  }

  const ClientOptions options_;
  CURLM* const multi_;  // the loop's; curl_multi_wakeup is safe from anywhere
  absl::Mutex mu_;
  std::vector<std::unique_ptr<Transfer>> queued_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // On the multi handle; the loop thread's alone.
  std::unordered_map<CURL*, std::unique_ptr<Transfer>> active_;
  std::thread loop_;  // last: starts once everything above exists
};

// One GET /health, the way a run's requests connect.
CURLcode ProbeHealth(const ClientOptions& options, char* error) {
  CURL* easy = curl_easy_init();
  if (easy == nullptr) return CURLE_FAILED_INIT;
  SetCommonOptions(easy, options);
  const std::string url = UrlOf(options, "/health");
  curl_easy_setopt(easy, CURLOPT_URL, url.c_str());
  curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, Discard);
  curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, error);
  curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, 2000L);
  const CURLcode result = curl_easy_perform(easy);
  curl_easy_cleanup(easy);
  return result;
}

// Waits until the server answers at all (any HTTP status: a proxy need not
// route /health), so a wrong --target or CA fails the run at once instead of
// as every request's error.
absl::Status WaitForServer(const ClientOptions& options) {
  const auto deadline = std::chrono::steady_clock::now() + kConnectWait;
  char error[CURL_ERROR_SIZE] = {};
  for (;;) {
    error[0] = '\0';
    const CURLcode result = ProbeHealth(options, error);
    if (result == CURLE_OK) return absl::OkStatus();
    if (std::chrono::steady_clock::now() >= deadline) {
      return absl::UnavailableError(absl::StrCat(
          "cannot reach ", UrlOf(options, "/health"), " within 10 s: ",
          error[0] != '\0' ? error : curl_easy_strerror(result)));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<Client>> CreateHttpClient(
    const ClientOptions& options) {
  // Process-wide and not to be raced: once, before the first handle.
  static const CURLcode init = curl_global_init(CURL_GLOBAL_DEFAULT);
  if (init != CURLE_OK) {
    return absl::InternalError(
        absl::StrCat("curl_global_init: ", curl_easy_strerror(init)));
  }
  if (absl::Status ready = WaitForServer(options); !ready.ok()) return ready;
  CURLM* multi = curl_multi_init();
  if (multi == nullptr) return absl::InternalError("curl_multi_init failed");
  // HTTP/1.1 carries one request per connection at a time: concurrency needs
  // as many connections as requests in flight, with no cap per host.
  curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, 0L);
  curl_multi_setopt(multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, 0L);
  curl_multi_setopt(multi, CURLMOPT_PIPELINING,
                    static_cast<long>(CURLPIPE_NOTHING));
  return std::make_unique<HttpClient>(options, multi);
}

}  // namespace md::bench::serve
