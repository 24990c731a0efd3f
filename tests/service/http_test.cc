// The Moondream-compatible HTTP gateway over loopback, in process: every
// endpoint, server-sent events, handles, health and readiness, the replica
// header on every response, the connection age, and a table of bad requests
// answered with the right status and a JSON error.
#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "model/bundle.h"
#include "service/auth.h"
#include "service/http_gateway.h"
#include "service/service.h"

namespace md::service {
namespace {

using Json = nlohmann::json;

constexpr char kKey[] = "http-key";

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

std::string PngBytes(const std::string& name) {
  return ReadBytes(std::string(MD_SOURCE_DIR) + "/tests/data/golden/images/" +
                   name + ".png");
}

std::string DataUrl(const std::string& name) {
  return "data:image/png;base64," + absl::Base64Escape(PngBytes(name));
}

std::unique_ptr<Service> MakeService(int max_queue = 64) {
  SetComputeThreads(2);
  auto bundle =
      LoadModelBundle(std::string(MD_SOURCE_DIR) + "/models/tiny-random",
                      "moondream2", ModelOptions{});
  EXPECT_TRUE(bundle.ok()) << bundle.status();
  auto keys = ApiKeys::FromText(std::string(kKey) + " web\n");
  EXPECT_TRUE(keys.ok());
  scheduler::EngineOptions engine;
  engine.n_slots = 4;
  engine.max_queue = max_queue;
  ServiceLimits limits;
  limits.max_image_bytes = 1 << 20;
  limits.max_image_pixels = 1'000'000;
  limits.max_text_bytes = 256;
  auto service =
      Service::Create(*std::move(bundle), engine, limits, *std::move(keys));
  EXPECT_TRUE(service.ok()) << service.status();
  return service.ok() ? std::move(*service) : nullptr;
}

// A gateway for `service` on a free loopback port.
absl::StatusOr<std::unique_ptr<HttpGateway>> StartLoopbackGateway(
    Service& service, RequestObserver* observer = nullptr,
    const std::function<void(HttpOptions&)>& tweak = {}) {
  HttpOptions options;
  options.host = "127.0.0.1";
  options.port = 0;
  if (tweak) tweak(options);
  return HttpGateway::Start(service, options, observer);
}

struct Reply {
  int status = 0;
  Json body;
  std::string raw;
  std::string retry_after;
};

Reply PostTo(int port, const std::string& path, const std::string& body,
             const std::string& key = kKey) {
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(60, 0);
  httplib::Headers headers;
  if (!key.empty()) headers.emplace("X-Moondream-Auth", key);
  auto res = client.Post(path.c_str(), headers, body, "application/json");
  Reply reply;
  if (!res) return reply;
  reply.status = res->status;
  reply.raw = res->body;
  reply.retry_after = res->get_header_value("Retry-After");
  reply.body = Json::parse(res->body, nullptr, false);
  return reply;
}

class HttpTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    service_ = MakeService().release();
    HttpOptions options;
    options.host = "127.0.0.1";
    options.port = 0;
    options.max_body_bytes = 3 << 20;
    auto gateway = HttpGateway::Start(*service_, options);
    ASSERT_TRUE(gateway.ok()) << gateway.status();
    gateway_ = gateway->release();
  }
  static void TearDownTestSuite() {
    delete gateway_;
    delete service_;
  }

  Reply Post(const std::string& path, const Json& body,
             const std::string& key = kKey) {
    return PostTo(gateway_->port(), path, body.dump(), key);
  }

  static Service* service_;
  static HttpGateway* gateway_;
};

Service* HttpTest::service_ = nullptr;
HttpGateway* HttpTest::gateway_ = nullptr;

TEST_F(HttpTest, EveryEndpointAnswersInTheMoondreamShape) {
  const std::string image = DataUrl("gray_200x150");
  Reply caption = Post("/v1/caption", {{"image_url", image},
                                       {"length", "short"},
                                       {"settings", {{"max_tokens", 6}}}});
  ASSERT_EQ(caption.status, 200) << caption.raw;
  EXPECT_TRUE(caption.body["caption"].is_string());

  Reply query = Post("/v1/query", {{"image_url", image},
                                   {"question", "What is it?"},
                                   {"settings", {{"max_tokens", 6}}}});
  ASSERT_EQ(query.status, 200) << query.raw;
  EXPECT_TRUE(query.body["answer"].is_string());
  EXPECT_TRUE(query.body["usage"]["image_cache_hit"].get<bool>());

  Reply detect = Post("/v1/detect", {{"image_url", image},
                                     {"object", "face"},
                                     {"settings", {{"max_objects", 2}}}});
  ASSERT_EQ(detect.status, 200) << detect.raw;
  ASSERT_TRUE(detect.body["objects"].is_array());
  EXPECT_LE(detect.body["objects"].size(), 2u);
  for (const Json& box : detect.body["objects"]) {
    EXPECT_TRUE(box.contains("x_min") && box.contains("y_max"));
  }

  Reply point = Post("/v1/point", {{"image_url", image}, {"object", "cup"}});
  ASSERT_EQ(point.status, 200) << point.raw;
  EXPECT_TRUE(point.body["points"].is_array());

  Reply gaze = Post("/v1/gaze",
                    {{"image_url", image}, {"eye", {{"x", 0.3}, {"y", 0.4}}}});
  ASSERT_EQ(gaze.status, 200) << gaze.raw;
  EXPECT_TRUE(gaze.body.contains("gaze"));
}

// data: {"chunk": ...} events, then data: {"completed": true}; the pieces
// make the same answer as the non-streaming call.
TEST_F(HttpTest, StreamIsServerSentEventsOfChunksThenCompleted) {
  const Json request = {{"image_url", DataUrl("rgb_378x378")},
                        {"question", "Describe the image."},
                        {"settings", {{"max_tokens", 12}}}};
  Reply whole = Post("/v1/query", request);
  ASSERT_EQ(whole.status, 200) << whole.raw;

  Json streamed = request;
  streamed["stream"] = true;
  httplib::Client client("127.0.0.1", gateway_->port());
  client.set_read_timeout(60, 0);
  auto res = client.Post("/v1/query", {{"X-Moondream-Auth", kKey}},
                         streamed.dump(), "application/json");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200);
  EXPECT_TRUE(absl::StartsWith(res->get_header_value("Content-Type"),
                               "text/event-stream"));
  std::string text;
  int n_chunks = 0;
  bool completed = false;
  for (absl::string_view event : absl::StrSplit(res->body, "\n\n")) {
    if (event.empty()) continue;
    ASSERT_TRUE(absl::StartsWith(event, "data: ")) << event;
    Json data = Json::parse(event.substr(6));
    ASSERT_FALSE(completed) << "event after completed";
    if (data.contains("chunk")) {
      text += data["chunk"].get<std::string>();
      ++n_chunks;
    } else {
      EXPECT_TRUE(data["completed"].get<bool>());
      completed = true;
    }
  }
  EXPECT_TRUE(completed);
  EXPECT_GE(n_chunks, 1);
  EXPECT_EQ(text, whole.body["answer"].get<std::string>());
}

TEST_F(HttpTest, HandlesFromEncodeImageWork) {
  auto info = service_->EncodeImage(PngBytes("rgba_480x360"), "web");
  ASSERT_TRUE(info.ok()) << info.status();
  Reply by_handle = Post("/v1/point", {{"image_url", "handle:" + info->handle},
                                       {"object", "dog"}});
  Reply by_bytes = Post(
      "/v1/point", {{"image_url", DataUrl("rgba_480x360")}, {"object", "dog"}});
  ASSERT_EQ(by_handle.status, 200) << by_handle.raw;
  ASSERT_EQ(by_bytes.status, 200);
  EXPECT_EQ(by_handle.body["points"], by_bytes.body["points"]);
}

TEST_F(HttpTest, HealthAndReadiness) {
  httplib::Client client("127.0.0.1", gateway_->port());
  auto health = client.Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  auto ready = client.Get("/ready");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 200);
  auto missing = client.Get("/v2/nothing");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  EXPECT_EQ(Json::parse(missing->body)["error"]["code"], "not_found");
}

// Success, streaming, inline answers (health, 404) and errors alike, so a
// client behind a load balancer can count which replica served it.
TEST_F(HttpTest, EveryResponseNamesTheReplica) {
  auto gateway = StartLoopbackGateway(
      *service_, nullptr, [](HttpOptions& o) { o.replica_name = "replica-h"; });
  ASSERT_TRUE(gateway.ok()) << gateway.status();
  httplib::Client client("127.0.0.1", (*gateway)->port());
  client.set_read_timeout(60, 0);
  const httplib::Headers auth = {{"X-Moondream-Auth", kKey}};
  const Json query = {{"image_url", DataUrl("gray_200x150")},
                      {"question", "What?"},
                      {"settings", {{"max_tokens", 4}}}};
  Json stream = query;
  stream["stream"] = true;
  std::vector<std::pair<std::string, httplib::Result>> answers;
  answers.emplace_back("health", client.Get("/health"));
  answers.emplace_back("ready", client.Get("/ready"));
  answers.emplace_back("404", client.Get("/v2/nothing"));
  answers.emplace_back("405", client.Get("/v1/query"));
  answers.emplace_back(
      "401", client.Post("/v1/query", query.dump(), "application/json"));
  answers.emplace_back("query", client.Post("/v1/query", auth, query.dump(),
                                            "application/json"));
  answers.emplace_back("stream", client.Post("/v1/query", auth, stream.dump(),
                                             "application/json"));
  for (const auto& [name, res] : answers) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(res);
    EXPECT_EQ(res->get_header_value("X-Moondream-Replica"), "replica-h");
  }
  EXPECT_EQ(answers[5].second->status, 200);
  EXPECT_EQ(answers[6].second->status, 200);
  // Not named unless asked: the suite's gateway has no replica name.
  auto plain = httplib::Client("127.0.0.1", gateway_->port()).Get("/health");
  ASSERT_TRUE(plain);
  EXPECT_FALSE(plain->has_header("X-Moondream-Replica"));
}

// The gateway passes its connection age to the server (the ageing itself is
// tested in http_server_test): at zero, no connection outlives its answer.
TEST_F(HttpTest, MaxConnectionAgeClosesKeptAliveConnections) {
  auto gateway = StartLoopbackGateway(*service_, nullptr, [](HttpOptions& o) {
    o.max_connection_age = absl::ZeroDuration();
  });
  ASSERT_TRUE(gateway.ok()) << gateway.status();
  httplib::Client client("127.0.0.1", (*gateway)->port());
  client.set_keep_alive(true);
  auto aged = client.Get("/ready");
  ASSERT_TRUE(aged);
  EXPECT_EQ(aged->status, 200);
  EXPECT_EQ(aged->get_header_value("Connection"), "close");
  httplib::Client fresh("127.0.0.1", gateway_->port());
  fresh.set_keep_alive(true);
  auto kept = fresh.Get("/ready");
  ASSERT_TRUE(kept);
  EXPECT_NE(kept->get_header_value("Connection"), "close");
}

struct BadCase {
  std::string name;
  int status;
  std::string message;
  std::function<Reply(int port)> send;
};

std::vector<BadCase> BadCases() {
  const std::string image = DataUrl("gray_200x150");
  auto post = [](std::string path, Json body, std::string key = kKey) {
    return [path, body, key](int port) {
      return PostTo(port, path, body.dump(), key);
    };
  };
  auto raw = [](std::string path, std::string body) {
    return [path, body](int port) { return PostTo(port, path, body); };
  };
  const Json good = {{"image_url", image}, {"question", "What?"}};
  auto with = [&good](const char* key, Json value) {
    Json body = good;
    body[key] = std::move(value);
    return body;
  };
  // An image over the pixel limit (1 megapixel here) but under the byte
  // limit: a 2000 x 1000 BMP header is enough to be refused before decoding.
  std::string big_bmp(54, '\0');
  big_bmp[0] = 'B';
  big_bmp[1] = 'M';
  auto put32 = [&big_bmp](int at, uint32_t v) {
    for (int i = 0; i < 4; ++i) big_bmp[at + i] = static_cast<char>(v >> 8 * i);
  };
  put32(2, 54);
  put32(10, 54);
  put32(14, 40);
  put32(18, 2000);
  put32(22, 1000);
  big_bmp[26] = 1;
  big_bmp[28] = 24;
  const std::string big_bmp_url =
      "data:image/bmp;base64," + absl::Base64Escape(big_bmp);
  return {
      {"missing key", 401, "missing API key", post("/v1/query", good, "")},
      {"wrong key", 401, "unknown API key", post("/v1/query", good, "nope")},
      {"malformed JSON", 400, "not valid JSON", raw("/v1/query", "{\"a\":")},
      {"JSON array", 400, "JSON object", raw("/v1/query", "[1,2]")},
      {"invalid UTF-8 in JSON", 400, "UTF-8",
       raw("/v1/query", "{\"question\": \"caf\xC3\"}")},
      {"missing image_url", 400, "image_url is missing",
       post("/v1/query", {{"question", "q"}})},
      {"image_url not a string", 400, "image_url must be a string",
       post("/v1/query", with("image_url", 42))},
      {"http image_url", 400, "does not fetch URLs",
       post("/v1/query", with("image_url", "https://example.com/a.jpg"))},
      {"not a data URL", 400, "data URL",
       post("/v1/query", with("image_url", "ftp:whatever"))},
      {"data URL without comma", 400, "no ','",
       post("/v1/query", with("image_url", "data:image/png;base64"))},
      {"data URL not base64", 400, "base64",
       post("/v1/query", with("image_url", "data:image/png,abc"))},
      {"malformed base64", 400, "malformed base64",
       post("/v1/query", with("image_url", "data:image/png;base64,@@@@"))},
      {"empty data URL", 400, "empty",
       post("/v1/query", with("image_url", "data:image/png;base64,"))},
      {"not an image", 400, "image",
       post("/v1/query",
            with("image_url",
                 "data:image/png;base64," + absl::Base64Escape("plain text")))},
      {"image over the byte limit", 413, "limit",
       post("/v1/query", with("image_url", "data:image/png;base64," +
                                               absl::Base64Escape(std::string(
                                                   (1 << 20) + 10, 'x'))))},
      {"image over the pixel limit", 413, "pixels",
       post("/v1/query", with("image_url", big_bmp_url))},
      {"body over the size limit", 413, "too large",
       raw("/v1/query", std::string(4 << 20, ' '))},
      {"unknown handle", 404, "handle",
       post("/v1/query", with("image_url", "handle:missing"))},
      {"question not a string", 400, "question must be a string",
       post("/v1/query", with("question", 7))},
      {"empty question", 400, "question is empty",
       post("/v1/query", with("question", ""))},
      {"over-long question", 400, "limit",
       post("/v1/query", with("question", std::string(300, 'q')))},
      {"max_tokens not a number", 400, "max_tokens must be a number",
       post("/v1/query", with("settings", {{"max_tokens", "ten"}}))},
      {"max_tokens fractional", 400, "integer",
       post("/v1/query", with("settings", {{"max_tokens", 2.5}}))},
      {"max_tokens zero", 400, "max_tokens",
       post("/v1/query", with("settings", {{"max_tokens", 0}}))},
      {"temperature out of range", 400, "temperature",
       post("/v1/query", with("settings", {{"temperature", 9}}))},
      {"top_p zero", 400, "top_p",
       post("/v1/query", with("settings", {{"top_p", 0}}))},
      {"negative seed", 400, "seed",
       post("/v1/query", with("settings", {{"seed", -1}}))},
      {"stream not a boolean", 400, "stream must be a boolean",
       post("/v1/query", with("stream", "yes"))},
      {"settings not an object", 400, "settings must be an object",
       post("/v1/query", with("settings", 3))},
      {"bad caption length", 400, "length",
       post("/v1/caption", {{"image_url", image}, {"length", "epic"}})},
      {"stream on detect", 400, "stream is only",
       post("/v1/detect",
            {{"image_url", image}, {"object", "x"}, {"stream", true}})},
      {"detect without object", 400, "object is empty",
       post("/v1/detect", {{"image_url", image}})},
      {"max_objects too large", 400, "max_objects",
       post("/v1/point", {{"image_url", image},
                          {"object", "x"},
                          {"settings", {{"max_objects", 99}}}})},
      {"gaze without eye", 400, "eye needs x and y",
       post("/v1/gaze", {{"image_url", image}})},
      {"gaze eye out of range", 400, "eye.x",
       post("/v1/gaze",
            {{"image_url", image}, {"eye", {{"x", -1}, {"y", 0.5}}}})},
      {"accurate gaze without face", 400, "face",
       post("/v1/gaze", {{"image_url", image}, {"prioritize_accuracy", true}})},
      // Issue 13 #10: statuses come from typed errors, never from messages.
      {"truncated PNG (a decode error, not a size)", 400, "image",
       post("/v1/query",
            with("image_url",
                 "data:image/png;base64," +
                     absl::Base64Escape(
                         PngBytes("gray_200x150").substr(0, 120))))},
      {"form-encoded body", 415, "application/json",
       [good](int port) {
         httplib::Client client("127.0.0.1", port);
         auto res = client.Post("/v1/query", {{"X-Moondream-Auth", kKey}},
                                "a=1&b=2", "application/x-www-form-urlencoded");
         Reply reply;
         if (!res) return reply;
         reply.status = res->status;
         reply.raw = res->body;
         reply.body = Json::parse(res->body, nullptr, false);
         return reply;
       }},
      {"wrong method", 405, "POST",
       [](int port) {
         httplib::Client client("127.0.0.1", port);
         auto res = client.Get("/v1/query");
         Reply reply;
         if (!res) return reply;
         reply.status = res->status;
         reply.raw = res->body;
         reply.body = Json::parse(res->body, nullptr, false);
         EXPECT_EQ(res->get_header_value("Allow"), "POST");
         return reply;
       }},
      {"max_tokens past int range", 400, "max_tokens must be in",
       post("/v1/query", with("settings", {{"max_tokens", 2147483647}}))},
  };
}

TEST_F(HttpTest, BadRequestsGetTheRightStatusAndAJsonError) {
  const std::vector<BadCase> cases = BadCases();
  ASSERT_GE(cases.size(), 30u);
  for (const BadCase& bad : cases) {
    SCOPED_TRACE(bad.name);
    const Reply reply = bad.send(gateway_->port());
    EXPECT_EQ(reply.status, bad.status) << reply.raw;
    ASSERT_TRUE(reply.body.is_object()) << reply.raw;
    ASSERT_TRUE(reply.body.contains("error")) << reply.raw;
    EXPECT_TRUE(absl::StrContains(
        reply.body["error"]["message"].get<std::string>(), bad.message))
        << reply.raw;
  }
  // Healthy afterwards.
  Reply after = Post("/v1/query", {{"image_url", DataUrl("gray_200x150")},
                                   {"question", "ok?"},
                                   {"settings", {{"max_tokens", 2}}}});
  EXPECT_EQ(after.status, 200) << after.raw;
}

// Issue 13 #10: a gaze seed is any uint64, as over gRPC.
TEST_F(HttpTest, GazeSeedTakesTheWholeUint64Range) {
  Reply reply =
      Post("/v1/gaze",
           {{"image_url", DataUrl("gray_200x150")},
            {"prioritize_accuracy", true},
            {"face",
             {{"x_min", 0.2}, {"y_min", 0.2}, {"x_max", 0.4}, {"y_max", 0.4}}},
            {"seed", uint64_t{18446744073709551615u}}});
  EXPECT_EQ(reply.status, 200) << reply.raw;
}

// Issue 13 #8: with no room, a request is refused before its image is
// decoded (a corrupt image still gets 429, not 400).
TEST(HttpOverloadTest, OverloadIsRefusedBeforeTheImageIsDecoded) {
  std::unique_ptr<Service> service = MakeService(/*max_queue=*/0);
  ASSERT_NE(service, nullptr);
  auto gateway = StartLoopbackGateway(*service);
  ASSERT_TRUE(gateway.ok()) << gateway.status();
  const Json body = {
      {"image_url", "data:image/png;base64," + absl::Base64Escape("not png")},
      {"question", "q"}};
  Reply reply = PostTo((*gateway)->port(), "/v1/query", body.dump());
  EXPECT_EQ(reply.status, 429) << reply.raw;
}

TEST(HttpOverloadTest, FullQueueIs429WithRetryAfter) {
  std::unique_ptr<Service> service = MakeService(/*max_queue=*/0);
  ASSERT_NE(service, nullptr);
  auto gateway = StartLoopbackGateway(*service);
  ASSERT_TRUE(gateway.ok()) << gateway.status();
  const Json body = {{"image_url", DataUrl("gray_200x150")}, {"question", "q"}};
  Reply reply = PostTo((*gateway)->port(), "/v1/query", body.dump());
  EXPECT_EQ(reply.status, 429) << reply.raw;
  EXPECT_EQ(reply.retry_after, "1");
  EXPECT_EQ(reply.body["error"]["code"], "overloaded");
}

TEST(HttpOverloadTest, DrainingIs503AndNotReady) {
  std::unique_ptr<Service> service = MakeService();
  ASSERT_NE(service, nullptr);
  auto gateway = StartLoopbackGateway(*service);
  ASSERT_TRUE(gateway.ok()) << gateway.status();
  (*gateway)->SetNotReady();
  ASSERT_TRUE(service->Drain(absl::Seconds(10)));
  const Json body = {{"image_url", DataUrl("gray_200x150")}, {"question", "q"}};
  Reply reply = PostTo((*gateway)->port(), "/v1/query", body.dump());
  EXPECT_EQ(reply.status, 503) << reply.raw;
  httplib::Client client("127.0.0.1", (*gateway)->port());
  auto ready = client.Get("/ready");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 503);
}

// A request admitted before the drain (still decoding its image) reaches the
// engine: Drain waits for it, while new requests are refused at once.
TEST(ServiceDrainTest, DrainWaitsForAdmittedRequestsAndRefusesNewOnes) {
  std::unique_ptr<Service> service = MakeService();
  ASSERT_NE(service, nullptr);
  absl::StatusOr<Service::Admission> admitted = service->Admit("default");
  ASSERT_TRUE(admitted.ok()) << admitted.status();
  std::optional<Service::Admission> ticket(*std::move(admitted));
  absl::Notification drained;
  bool drained_in_time = false;
  std::thread drainer([&] {
    drained_in_time = service->Drain(absl::Seconds(20));
    drained.Notify();
  });
  absl::Status refusal;
  for (int i = 0; i < 500 && refusal.ok(); ++i) {
    absl::StatusOr<Service::Admission> late = service->Admit("default");
    refusal = late.status();
    if (refusal.ok()) absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(refusal.code(), absl::StatusCode::kUnavailable) << refusal;
  EXPECT_FALSE(drained.WaitForNotificationWithTimeout(absl::Milliseconds(200)))
      << "the drain did not wait for the admitted request";
  ticket.reset();
  EXPECT_TRUE(drained.WaitForNotificationWithTimeout(absl::Seconds(10)));
  drainer.join();
  EXPECT_TRUE(drained_in_time);
}

TEST(HttpOverloadTest, TimeoutIs504AndFreesTheSlot) {
  std::unique_ptr<Service> service = MakeService();
  ASSERT_NE(service, nullptr);
  auto gateway = StartLoopbackGateway(*service, nullptr, [](HttpOptions& o) {
    o.timeout = absl::Milliseconds(1);
  });
  ASSERT_TRUE(gateway.ok()) << gateway.status();
  const Json body = {{"image_url", DataUrl("rgb_shapes_1000x700")},
                     {"question", "q"},
                     {"settings", {{"max_tokens", 500}, {"ignore_eos", true}}}};
  Reply reply = PostTo((*gateway)->port(), "/v1/query", body.dump());
  EXPECT_EQ(reply.status, 504) << reply.raw;
  EXPECT_EQ(reply.body["error"]["code"], "timeout");
  ASSERT_TRUE(service->engine().WaitIdle(absl::Seconds(60)));
  EXPECT_EQ(service->engine().Stats().slots_in_use, 0);
}

// Counts how requests ended, by status code.
class CountingObserver final : public RequestObserver {
 public:
  void OnRequestDone(absl::string_view, absl::string_view,
                     const absl::Status& status,
                     const scheduler::RequestSummary&, bool) override {
    absl::MutexLock lock(&mu_);
    ++by_code_[status.code()];
  }
  void OnInterTokenGap(absl::Duration) override {}
  int Count(absl::StatusCode code) {
    absl::MutexLock lock(&mu_);
    return by_code_[code];
  }
  bool WaitFor(absl::StatusCode code, int n) {
    absl::MutexLock lock(&mu_);
    auto reached = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return by_code_[code] >= n;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&reached), absl::Seconds(60));
  }

 private:
  absl::Mutex mu_;
  std::map<absl::StatusCode, int> by_code_ ABSL_GUARDED_BY(mu_);
};

int RawConnect(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr = {};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  return fd;
}

std::string PostBytes(const Json& body) {
  const std::string text = body.dump();
  return absl::StrCat("POST /v1/query HTTP/1.1\r\nX-Moondream-Auth: ", kKey,
                      "\r\nContent-Type: application/json\r\n"
                      "Content-Length: ",
                      text.size(), "\r\n\r\n", text);
}

// Issue 13 #7 and #9: a client that leaves, streaming or not, cancels its
// request (the slot is freed at once) and the end is counted.
TEST(HttpDisconnectTest, ALeavingClientCancelsItsRequestAndIsCounted) {
  std::unique_ptr<Service> service = MakeService();
  ASSERT_NE(service, nullptr);
  CountingObserver observer;
  auto gateway = StartLoopbackGateway(*service, &observer);
  ASSERT_TRUE(gateway.ok()) << gateway.status();
  for (bool stream : {false, true}) {
    SCOPED_TRACE(stream);
    const int before = observer.Count(absl::StatusCode::kCancelled);
    const Json body = {
        {"image_url", DataUrl("gray_200x150")},
        {"question", "Tell me everything."},
        {"stream", stream},
        {"settings", {{"max_tokens", 500}, {"ignore_eos", true}}}};
    const int fd = RawConnect((*gateway)->port());
    const std::string request = PostBytes(body);
    ASSERT_EQ(send(fd, request.data(), request.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(request.size()));
    // Running: it holds a slot.
    for (int i = 0; i < 600 && service->engine().Stats().slots_in_use == 0;
         ++i) {
      absl::SleepFor(absl::Milliseconds(10));
    }
    ASSERT_EQ(service->engine().Stats().slots_in_use, 1);
    close(fd);
    ASSERT_TRUE(observer.WaitFor(absl::StatusCode::kCancelled, before + 1));
    ASSERT_TRUE(service->engine().WaitIdle(absl::Seconds(60)));
    EXPECT_EQ(service->engine().Stats().slots_in_use, 0);
  }
  EXPECT_EQ(service->engine().Stats().completed, 0);
}

// Issue 13 #3: handles and cached images belong to their tenant. Another
// tenant cannot use a handle, gets its own for the same bytes, and sees no
// cache hit for an image only someone else sent.
TEST(HttpTenantTest, TenantsCannotSeeEachOthersImages) {
  SetComputeThreads(2);
  auto bundle =
      LoadModelBundle(std::string(MD_SOURCE_DIR) + "/models/tiny-random",
                      "moondream2", ModelOptions{});
  ASSERT_TRUE(bundle.ok());
  auto keys = ApiKeys::FromText("key-a alpha\nkey-b beta\n");
  ASSERT_TRUE(keys.ok());
  auto service = Service::Create(*std::move(bundle), {}, ServiceLimits{},
                                 *std::move(keys));
  ASSERT_TRUE(service.ok()) << service.status();
  auto gateway = StartLoopbackGateway(**service);
  ASSERT_TRUE(gateway.ok()) << gateway.status();
  const int port = (*gateway)->port();

  const std::string png = PngBytes("rgba_480x360");
  auto handle_a = (*service)->EncodeImage(png, "alpha");
  auto handle_b = (*service)->EncodeImage(png, "beta");
  ASSERT_TRUE(handle_a.ok() && handle_b.ok());
  EXPECT_NE(handle_a->handle, handle_b->handle);

  const Json by_a_handle = {{"image_url", "handle:" + handle_a->handle},
                            {"question", "q"},
                            {"settings", {{"max_tokens", 2}}}};
  EXPECT_EQ(PostTo(port, "/v1/query", by_a_handle.dump(), "key-a").status, 200);
  Reply stolen = PostTo(port, "/v1/query", by_a_handle.dump(), "key-b");
  EXPECT_EQ(stolen.status, 404) << stolen.raw;

  // Alpha has sent this image (cached for alpha); beta never has.
  const Json by_bytes = {{"image_url", DataUrl("rgba_480x360")},
                         {"question", "q"},
                         {"settings", {{"max_tokens", 2}}}};
  Reply alpha = PostTo(port, "/v1/query", by_bytes.dump(), "key-a");
  ASSERT_EQ(alpha.status, 200) << alpha.raw;
  EXPECT_TRUE(alpha.body["usage"]["image_cache_hit"].get<bool>());
  Reply beta = PostTo(port, "/v1/query", by_bytes.dump(), "key-b");
  ASSERT_EQ(beta.status, 200) << beta.raw;
  EXPECT_FALSE(beta.body["usage"]["image_cache_hit"].get<bool>());
}

}  // namespace
}  // namespace md::service
