// The gRPC server end to end over loopback, in process: every RPC on the
// tiny test model, streaming, handles, auth, a table of bad requests (each
// with its code and message, the server healthy after), cancellation and
// deadlines that free the slot, health by service name through a drain, the
// replica named in every call's metadata, connections aged out with GOAWAY,
// and metrics scrapes (load gauges per tenant, vLLM's names on request).
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "model/bundle.h"
#include "moondream/v1/moondream.grpc.pb.h"
#include "service/auth.h"
#include "service/grpc_server.h"
#include "service/metrics.h"
#include "service/service.h"

namespace md::service {
namespace {

namespace pb = ::moondream::v1;

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

std::string GoldenPng(const std::string& name) {
  return ReadBytes(std::string(MD_SOURCE_DIR) + "/tests/data/golden/images/" +
                   name + ".png");
}

constexpr char kKey[] = "secret-key-1";       // team-a
constexpr char kOtherKey[] = "secret-key-2";  // team-b
constexpr char kReplica[] = "replica-test";

class GrpcTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    SetComputeThreads(2);
    auto bundle =
        LoadModelBundle(std::string(MD_SOURCE_DIR) + "/models/tiny-random",
                        "moondream2", ModelOptions{});
    ASSERT_TRUE(bundle.ok()) << bundle.status();
    auto keys = ApiKeys::FromText(
        "# test keys\nsecret-key-1 team-a\n"
        "secret-key-2 team-b\n");
    ASSERT_TRUE(keys.ok()) << keys.status();
    metrics_ = new Metrics();
    scheduler::EngineOptions engine;
    engine.n_slots = 4;
    engine.max_queue = 64;
    ServiceLimits limits;
    limits.max_image_bytes = 4 << 20;
    limits.max_text_bytes = 256;
    auto service = Service::Create(
        *std::move(bundle), engine, limits, *std::move(keys),
        [](const scheduler::StepReport& r) { metrics_->OnStep(r); });
    ASSERT_TRUE(service.ok()) << service.status();
    service_ = service->release();
    metrics_->AttachEngine(&service_->engine(),
                           [s = service_] { return s->preparing(); });
    GrpcOptions options;
    options.address = "127.0.0.1:0";
    options.max_message_bytes = 8 << 20;
    options.replica_name = kReplica;
    auto server = GrpcServer::Start(*service_, options, metrics_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = server->release();
    channel_ = new std::shared_ptr<grpc::Channel>(
        grpc::CreateChannel("127.0.0.1:" + std::to_string(server_->port()),
                            grpc::InsecureChannelCredentials()));
  }

  static void TearDownTestSuite() {
    delete server_;
    delete service_;
    delete metrics_;
    delete channel_;
  }

  std::unique_ptr<pb::Moondream::Stub> Stub() {
    return pb::Moondream::NewStub(*channel_);
  }

  static void Authorize(grpc::ClientContext& context,
                        const std::string& key = kKey) {
    context.AddMetadata("x-moondream-auth", key);
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(60));
  }

  static pb::Image PngImage(const std::string& name = "rgb_378x378") {
    pb::Image image;
    image.set_data(GoldenPng(name));
    return image;
  }

  struct Streamed {
    grpc::Status status;
    std::string text;
    std::vector<pb::TextChunk> chunks;
  };

  Streamed RunQuery(const pb::QueryRequest& request,
                    const std::string& key = kKey) {
    grpc::ClientContext context;
    Authorize(context, key);
    auto reader = Stub()->Query(&context, request);
    Streamed out;
    pb::TextChunk chunk;
    while (reader->Read(&chunk)) {
      out.text += chunk.text();
      out.chunks.push_back(chunk);
    }
    out.status = reader->Finish();
    return out;
  }

  void ExpectIdle() {
    scheduler::Engine& engine = service_->engine();
    ASSERT_TRUE(engine.WaitIdle(absl::Seconds(60)));
    const scheduler::EngineStats s = engine.Stats();
    EXPECT_EQ(s.slots_in_use, 0);
    EXPECT_EQ(s.queue_length, 0);
    EXPECT_EQ(s.running_requests, 0);
    EXPECT_TRUE(s.tenants.empty());
  }

  static Metrics* metrics_;
  static Service* service_;
  static GrpcServer* server_;
  static std::shared_ptr<grpc::Channel>* channel_;
};

Metrics* GrpcTest::metrics_ = nullptr;
Service* GrpcTest::service_ = nullptr;
GrpcServer* GrpcTest::server_ = nullptr;
std::shared_ptr<grpc::Channel>* GrpcTest::channel_ = nullptr;

TEST_F(GrpcTest, ModelInfoSaysTheWeightsAreRandom) {
  grpc::ClientContext context;
  Authorize(context);
  pb::ModelInfo info;
  ASSERT_TRUE(Stub()->GetModelInfo(&context, {}, &info).ok());
  EXPECT_TRUE(info.random_weights());
  EXPECT_EQ(info.image_positions(), 730);
  EXPECT_EQ(info.slots(), 4);
  EXPECT_GT(info.context_length(), 730);
  EXPECT_EQ(info.dtype(), "fp32");
}

TEST_F(GrpcTest, QueryStreamsTextThenAFinalMessage) {
  pb::QueryRequest request;
  *request.mutable_image() = PngImage();
  request.set_question("What is in the image?");
  request.mutable_settings()->set_max_tokens(16);
  Streamed out = RunQuery(request);
  ASSERT_TRUE(out.status.ok()) << out.status.error_message();
  ASSERT_FALSE(out.chunks.empty());
  const pb::TextChunk& last = out.chunks.back();
  EXPECT_TRUE(last.finished());
  EXPECT_TRUE(last.finish_reason() == "eos" ||
              last.finish_reason() == "max_tokens")
      << last.finish_reason();
  EXPECT_GT(last.usage().prompt_tokens(), 0);
  for (size_t i = 0; i + 1 < out.chunks.size(); ++i) {
    EXPECT_FALSE(out.chunks[i].finished());
  }
  // Greedy decoding: the same request gives the same text.
  EXPECT_EQ(RunQuery(request).text, out.text);
  ExpectIdle();
}

TEST_F(GrpcTest, CaptionShortAndNormalStream) {
  for (auto length : {pb::CaptionRequest::SHORT, pb::CaptionRequest::NORMAL}) {
    grpc::ClientContext context;
    Authorize(context);
    pb::CaptionRequest request;
    *request.mutable_image() = PngImage("gray_200x150");
    request.set_length(length);
    request.mutable_settings()->set_max_tokens(8);
    auto reader = Stub()->Caption(&context, request);
    pb::TextChunk chunk, last;
    int n = 0;
    while (reader->Read(&chunk)) {
      last = chunk;
      ++n;
    }
    ASSERT_TRUE(reader->Finish().ok());
    EXPECT_GE(n, 1);
    EXPECT_TRUE(last.finished());
  }
}

TEST_F(GrpcTest, HandleStandsInForTheBytesAndHitsTheImageCache) {
  grpc::ClientContext context;
  Authorize(context);
  pb::EncodeImageRequest encode;
  *encode.mutable_image() = PngImage("rgb_shapes_1000x700");
  pb::ImageHandle handle;
  ASSERT_TRUE(Stub()->EncodeImage(&context, encode, &handle).ok());
  EXPECT_EQ(handle.width(), 1000);
  EXPECT_EQ(handle.height(), 700);
  ASSERT_FALSE(handle.handle().empty());

  pb::QueryRequest by_bytes;
  *by_bytes.mutable_image() = PngImage("rgb_shapes_1000x700");
  by_bytes.set_question("Describe it.");
  by_bytes.mutable_settings()->set_max_tokens(6);
  pb::QueryRequest by_handle = by_bytes;
  by_handle.mutable_image()->set_handle(handle.handle());
  const Streamed a = RunQuery(by_bytes);
  const Streamed b = RunQuery(by_handle);
  ASSERT_TRUE(a.status.ok() && b.status.ok());
  EXPECT_EQ(a.text, b.text);
  EXPECT_TRUE(b.chunks.back().usage().image_cache_hit());
}

TEST_F(GrpcTest, DetectPointAndGazeAnswer) {
  {
    grpc::ClientContext context;
    Authorize(context);
    pb::DetectRequest request;
    *request.mutable_image() = PngImage();
    request.set_object("face");
    request.set_max_objects(5);
    pb::DetectResponse response;
    ASSERT_TRUE(Stub()->Detect(&context, request, &response).ok());
    EXPECT_LE(response.objects_size(), 5);
    for (const auto& box : response.objects()) {
      EXPECT_LE(box.x_min(), box.x_max());
      EXPECT_GE(box.x_min(), 0);
      EXPECT_LE(box.y_max(), 1.5);
    }
  }
  {
    grpc::ClientContext context;
    Authorize(context);
    pb::PointRequest request;
    *request.mutable_image() = PngImage();
    request.set_object("cup");
    pb::PointResponse response;
    ASSERT_TRUE(Stub()->Point(&context, request, &response).ok());
    EXPECT_LE(response.points_size(), 50);
  }
  for (bool accurate : {false, true}) {
    grpc::ClientContext context;
    Authorize(context);
    pb::DetectGazeRequest request;
    *request.mutable_image() = PngImage("rgba_480x360");
    request.mutable_eye()->set_x(0.4);
    request.mutable_eye()->set_y(0.3);
    if (accurate) {
      request.set_prioritize_accuracy(true);
      auto* face = request.mutable_face();
      face->set_x_min(0.3);
      face->set_y_min(0.2);
      face->set_x_max(0.6);
      face->set_y_max(0.5);
      request.set_seed(7);
    }
    pb::DetectGazeResponse response;
    grpc::Status status = Stub()->DetectGaze(&context, request, &response);
    if (accurate) {
      // 20 probes on a server of 4 slots: they run in waves (issue 12; it
      // used to be refused with FAILED_PRECONDITION).
      ASSERT_TRUE(status.ok()) << status.error_message();
      EXPECT_GT(response.usage().output_tokens(), 0);
    } else {
      ASSERT_TRUE(status.ok()) << status.error_message();
      // Decode decisions: the first token (with x read from the same
      // state), then y after feeding x; no gaze ends at the first token.
      EXPECT_EQ(response.usage().output_tokens(), response.has_gaze() ? 2 : 1);
    }
  }
  ExpectIdle();
}

// ---- Bad requests ----

struct BadCase {
  std::string name;
  grpc::StatusCode code;
  std::string message;  // A substring the message must hold.
  std::function<grpc::Status(pb::Moondream::Stub&)> call;
};

grpc::Status CallQuery(pb::Moondream::Stub& stub, const pb::QueryRequest& r,
                       const std::string& key = kKey) {
  grpc::ClientContext context;
  if (!key.empty()) context.AddMetadata("x-moondream-auth", key);
  auto reader = stub.Query(&context, r);
  pb::TextChunk chunk;
  while (reader->Read(&chunk)) {
  }
  return reader->Finish();
}

pb::QueryRequest GoodQuery() {
  pb::QueryRequest r;
  r.mutable_image()->set_data(GoldenPng("gray_200x150"));
  r.set_question("What?");
  r.mutable_settings()->set_max_tokens(4);
  return r;
}

template <typename Mutate>
std::function<grpc::Status(pb::Moondream::Stub&)> Query(
    Mutate mutate, std::string key = kKey) {
  return [mutate, key](pb::Moondream::Stub& stub) {
    pb::QueryRequest r = GoodQuery();
    mutate(r);
    return CallQuery(stub, r, key);
  };
}

template <typename Request, typename Response, typename Method>
std::function<grpc::Status(pb::Moondream::Stub&)> Unary(Method method,
                                                        Request request) {
  return [method, request](pb::Moondream::Stub& stub) {
    grpc::ClientContext context;
    context.AddMetadata("x-moondream-auth", kKey);
    Response response;
    return (stub.*method)(&context, request, &response);
  };
}

std::vector<BadCase> BadCases() {
  using C = grpc::StatusCode;
  const std::string png = GoldenPng("gray_200x150");
  std::vector<BadCase> cases = {
      {"no api key", C::UNAUTHENTICATED, "missing API key",
       Query([](auto&) {}, "")},
      {"unknown api key", C::UNAUTHENTICATED, "unknown API key",
       Query([](auto&) {}, "wrong")},
      {"no image", C::INVALID_ARGUMENT, "image is missing",
       Query([](auto& r) { r.clear_image(); })},
      {"empty image bytes", C::INVALID_ARGUMENT, "image",
       Query([](auto& r) { r.mutable_image()->set_data(""); })},
      {"not an image", C::INVALID_ARGUMENT, "image",
       Query([](auto& r) { r.mutable_image()->set_data("hello, world"); })},
      {"truncated png", C::INVALID_ARGUMENT, "image", Query([png](auto& r) {
         r.mutable_image()->set_data(png.substr(0, png.size() / 2));
       })},
      {"png header only", C::INVALID_ARGUMENT, "image", Query([png](auto& r) {
         r.mutable_image()->set_data(png.substr(0, 40));
       })},
      {"image over the byte limit", C::INVALID_ARGUMENT, "limit",
       Query([](auto& r) {
         r.mutable_image()->set_data(std::string(5 << 20, 'x'));
       })},
      {"message over the size limit", C::RESOURCE_EXHAUSTED, "",
       Query([](auto& r) {
         r.mutable_image()->set_data(std::string(9 << 20, 'x'));
       })},
      {"unknown handle", C::NOT_FOUND, "handle",
       Query([](auto& r) { r.mutable_image()->set_handle("no-such-handle"); })},
      {"empty question", C::INVALID_ARGUMENT, "question is empty",
       Query([](auto& r) { r.set_question(""); })},
      {"over-long question", C::INVALID_ARGUMENT, "limit",
       Query([](auto& r) { r.set_question(std::string(300, 'a')); })},
      {"invalid utf-8", C::INVALID_ARGUMENT, "UTF-8",
       Query([](auto& r) { r.set_question("caf\xC3"); })},
      {"overlong utf-8", C::INVALID_ARGUMENT, "UTF-8",
       Query([](auto& r) { r.set_question("\xC0\xAF"); })},
      {"utf-16 surrogate", C::INVALID_ARGUMENT, "UTF-8",
       Query([](auto& r) { r.set_question("\xED\xA0\x80"); })},
      {"max_tokens zero", C::INVALID_ARGUMENT, "max_tokens",
       Query([](auto& r) { r.mutable_settings()->set_max_tokens(0); })},
      {"max_tokens negative", C::INVALID_ARGUMENT, "max_tokens",
       Query([](auto& r) { r.mutable_settings()->set_max_tokens(-3); })},
      {"max_tokens past the context", C::INVALID_ARGUMENT, "max_tokens",
       Query([](auto& r) { r.mutable_settings()->set_max_tokens(100000); })},
      {"max_tokens that cannot fit after the image", C::OUT_OF_RANGE,
       "positions",
       Query([](auto& r) { r.mutable_settings()->set_max_tokens(2000); })},
      {"negative temperature", C::INVALID_ARGUMENT, "temperature",
       Query([](auto& r) { r.mutable_settings()->set_temperature(-1); })},
      {"huge temperature", C::INVALID_ARGUMENT, "temperature",
       Query([](auto& r) { r.mutable_settings()->set_temperature(50); })},
      {"nan temperature", C::INVALID_ARGUMENT, "temperature",
       Query([](auto& r) { r.mutable_settings()->set_temperature(NAN); })},
      {"top_p zero", C::INVALID_ARGUMENT, "top_p",
       Query([](auto& r) { r.mutable_settings()->set_top_p(0); })},
      {"top_p above one", C::INVALID_ARGUMENT, "top_p",
       Query([](auto& r) { r.mutable_settings()->set_top_p(1.5); })},
      {"min_p negative", C::INVALID_ARGUMENT, "min_p",
       Query([](auto& r) { r.mutable_settings()->set_min_p(-0.5); })},
  };
  pb::DetectRequest detect;
  detect.mutable_image()->set_data(png);
  pb::DetectRequest no_object = detect;
  cases.push_back({"detect without object", C::INVALID_ARGUMENT,
                   "object is empty",
                   Unary<pb::DetectRequest, pb::DetectResponse>(
                       &pb::Moondream::Stub::Detect, no_object)});
  pb::DetectRequest too_many = detect;
  too_many.set_object("cat");
  too_many.set_max_objects(500);
  cases.push_back({"max_objects over 50", C::INVALID_ARGUMENT, "max_objects",
                   Unary<pb::DetectRequest, pb::DetectResponse>(
                       &pb::Moondream::Stub::Detect, too_many)});
  pb::PointRequest point;
  point.mutable_image()->set_data(png);
  point.set_object("cat");
  point.set_max_objects(0);
  cases.push_back({"point max_objects zero", C::INVALID_ARGUMENT, "max_objects",
                   Unary<pb::PointRequest, pb::PointResponse>(
                       &pb::Moondream::Stub::Point, point)});
  pb::DetectGazeRequest gaze;
  gaze.mutable_image()->set_data(png);
  cases.push_back({"gaze without eye", C::INVALID_ARGUMENT, "eye",
                   Unary<pb::DetectGazeRequest, pb::DetectGazeResponse>(
                       &pb::Moondream::Stub::DetectGaze, gaze)});
  pb::DetectGazeRequest far_eye = gaze;
  far_eye.mutable_eye()->set_x(1.5);
  far_eye.mutable_eye()->set_y(0.5);
  cases.push_back({"eye outside the image", C::INVALID_ARGUMENT, "eye.x",
                   Unary<pb::DetectGazeRequest, pb::DetectGazeResponse>(
                       &pb::Moondream::Stub::DetectGaze, far_eye)});
  pb::DetectGazeRequest no_face = gaze;
  no_face.set_prioritize_accuracy(true);
  cases.push_back({"accurate gaze without face", C::INVALID_ARGUMENT, "face",
                   Unary<pb::DetectGazeRequest, pb::DetectGazeResponse>(
                       &pb::Moondream::Stub::DetectGaze, no_face)});
  pb::DetectGazeRequest inverted = no_face;
  auto* face = inverted.mutable_face();
  face->set_x_min(0.6);
  face->set_x_max(0.3);
  face->set_y_min(0.2);
  face->set_y_max(0.5);
  cases.push_back({"inverted face box", C::INVALID_ARGUMENT, "x_min <= x_max",
                   Unary<pb::DetectGazeRequest, pb::DetectGazeResponse>(
                       &pb::Moondream::Stub::DetectGaze, inverted)});
  pb::EncodeImageRequest encode_handle;
  encode_handle.mutable_image()->set_handle("abc");
  cases.push_back({"EncodeImage of a handle", C::INVALID_ARGUMENT,
                   "image bytes",
                   Unary<pb::EncodeImageRequest, pb::ImageHandle>(
                       &pb::Moondream::Stub::EncodeImage, encode_handle)});
  pb::EncodeImageRequest encode_garbage;
  encode_garbage.mutable_image()->set_data(std::string(1000, '\0'));
  cases.push_back({"EncodeImage of garbage", C::INVALID_ARGUMENT, "image",
                   Unary<pb::EncodeImageRequest, pb::ImageHandle>(
                       &pb::Moondream::Stub::EncodeImage, encode_garbage)});
  return cases;
}

TEST_F(GrpcTest, BadRequestsGetTheRightCodeAndMessage) {
  const std::vector<BadCase> cases = BadCases();
  ASSERT_GE(cases.size(), 30u);
  auto stub = Stub();
  for (const BadCase& bad : cases) {
    SCOPED_TRACE(bad.name);
    const grpc::Status status = bad.call(*stub);
    EXPECT_EQ(status.error_code(), bad.code) << status.error_message();
    EXPECT_TRUE(absl::StrContains(status.error_message(), bad.message))
        << status.error_message();
  }
  // Still healthy and serving.
  const Streamed after = RunQuery(GoodQuery());
  EXPECT_TRUE(after.status.ok()) << after.status.error_message();
  ExpectIdle();
}

// ---- Cancellation and deadlines ----

TEST_F(GrpcTest, ClientCancellationFreesTheSlot) {
  const scheduler::EngineStats before = service_->engine().Stats();
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<pb::TextChunk>>> readers;
  auto stub = Stub();
  // Twice as many long streams as slots: four run, four wait, and none
  // can end before the cancellation reaches it (1000 tokens, past eos).
  for (int i = 0; i < 8; ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    Authorize(*contexts.back());
    pb::QueryRequest r = GoodQuery();
    r.mutable_settings()->set_max_tokens(1000);
    r.mutable_settings()->set_temperature(2.0f);
    r.mutable_settings()->set_seed(i);
    r.mutable_settings()->set_ignore_eos(true);  // No answer ends early.
    readers.push_back(stub->Query(contexts.back().get(), r));
  }
  pb::TextChunk chunk;
  ASSERT_TRUE(readers[0]->Read(&chunk));  // Streaming: the engine is busy.
  for (auto& context : contexts) context->TryCancel();
  int n_cancelled = 0;
  for (auto& reader : readers) {
    while (reader->Read(&chunk)) {
    }
    const grpc::Status status = reader->Finish();
    if (status.error_code() == grpc::CANCELLED) ++n_cancelled;
  }
  EXPECT_EQ(n_cancelled, 8);
  ExpectIdle();
  // Every call that reached the engine ended there, cancelled unless it
  // had already run its 1000 tokens (the tiny model in bf16 can, on a fast
  // or briefly descheduled run: seen once in CI), and every slot is free
  // (ExpectIdle). How many reached it depends on timing: a call cancelled
  // while its image decodes never does.
  const scheduler::EngineStats after = service_->engine().Stats();
  const int64_t submitted = after.submitted - before.submitted;
  const int64_t cancelled = after.cancelled - before.cancelled;
  EXPECT_GE(submitted, 1);
  EXPECT_GE(cancelled, 1);
  EXPECT_EQ(cancelled + (after.completed - before.completed), submitted);
  EXPECT_EQ(after.failed, before.failed);
}

TEST_F(GrpcTest, DeadlineEndsTheCallAndFreesTheSlot) {
  const scheduler::EngineStats before = service_->engine().Stats();
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<pb::TextChunk>>> readers;
  auto stub = Stub();
  // Six times as many streams as slots, with a deadline the later ones
  // cannot meet: they expire in the queue (or while running).
  for (int i = 0; i < 24; ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    contexts.back()->AddMetadata("x-moondream-auth", kKey);
    contexts.back()->set_deadline(std::chrono::system_clock::now() +
                                  std::chrono::milliseconds(150));
    pb::QueryRequest r = GoodQuery();
    r.mutable_settings()->set_max_tokens(1000);
    r.mutable_settings()->set_temperature(2.0f);
    r.mutable_settings()->set_seed(100 + i);
    readers.push_back(stub->Query(contexts.back().get(), r));
  }
  int n_deadline = 0;
  for (auto& reader : readers) {
    pb::TextChunk chunk;
    while (reader->Read(&chunk)) {
    }
    const grpc::Status status = reader->Finish();
    if (status.error_code() == grpc::DEADLINE_EXCEEDED) ++n_deadline;
  }
  EXPECT_GT(n_deadline, 0);
  ExpectIdle();
  const scheduler::EngineStats after = service_->engine().Stats();
  EXPECT_GT(after.expired_queued + after.expired_running + after.cancelled,
            before.expired_queued + before.expired_running + before.cancelled);
}

// ---- TLS ----

TEST_F(GrpcTest, TlsServerAnswersTlsClientsOnly) {
  const std::string key = ::testing::TempDir() + "/tls_key.pem";
  const std::string cert = ::testing::TempDir() + "/tls_cert.pem";
  const std::string make_cert =
      "openssl req -x509 -newkey rsa:2048 -nodes -keyout " + key + " -out " +
      cert +
      " -days 1 -subj /CN=localhost -addext subjectAltName=DNS:localhost "
      ">/dev/null 2>&1";
  ASSERT_EQ(std::system(make_cert.c_str()), 0) << make_cert;

  GrpcOptions options;
  options.address = "127.0.0.1:0";
  options.tls_cert_file = cert;
  options.tls_key_file = key;
  auto server = GrpcServer::Start(*service_, options);
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string target = "127.0.0.1:" + std::to_string((*server)->port());

  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = ReadBytes(cert);
  grpc::ChannelArguments args;
  args.SetSslTargetNameOverride("localhost");
  auto tls = pb::Moondream::NewStub(
      grpc::CreateCustomChannel(target, grpc::SslCredentials(ssl), args));
  grpc::ClientContext context;
  Authorize(context);
  pb::ModelInfo info;
  const grpc::Status status = tls->GetModelInfo(&context, {}, &info);
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(info.image_positions(), 730);

  auto plain = pb::Moondream::NewStub(
      grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  grpc::ClientContext plain_context;
  Authorize(plain_context);
  plain_context.set_deadline(std::chrono::system_clock::now() +
                             std::chrono::seconds(5));
  EXPECT_FALSE(plain->GetModelInfo(&plain_context, {}, &info).ok());

  options.tls_key_file = "";
  EXPECT_EQ(GrpcServer::Start(*service_, options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.tls_key_file = "/no/such/key.pem";
  EXPECT_EQ(GrpcServer::Start(*service_, options).status().code(),
            absl::StatusCode::kNotFound);
}

// ---- Health, replica name, connection age ----

// grpc.health.v1.Health/Check by hand (no health stubs are built here): the
// request's field 1 is the service name, the answer's field 1 its status.
constexpr int kServing = 1;
constexpr int kNotServing = 2;

std::pair<grpc::StatusCode, int> CheckHealth(
    const std::shared_ptr<grpc::Channel>& channel, const std::string& service) {
  std::string request;
  if (!service.empty()) {
    request =
        absl::StrCat("\x0a", std::string(1, char(service.size())), service);
  }
  grpc::Slice slice(request);
  grpc::ByteBuffer in(&slice, 1);
  grpc::ByteBuffer out;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(10));
  grpc::Status status;
  absl::Notification done;
  grpc::GenericStub(channel).UnaryCall(&context, "/grpc.health.v1.Health/Check",
                                       grpc::StubOptions(), &in, &out,
                                       [&](grpc::Status s) {
                                         status = std::move(s);
                                         done.Notify();
                                       });
  done.WaitForNotification();
  std::vector<grpc::Slice> slices;
  std::string answer;
  if (status.ok() && out.Dump(&slices).ok()) {
    for (const grpc::Slice& s : slices) {
      answer.append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
  }
  const int serving = answer.size() == 2 && answer[0] == '\x08' ? answer[1] : 0;
  return {status.error_code(), serving};
}

TEST_F(GrpcTest, HealthNamesTheServiceAndTurnsNotServingOnDrain) {
  GrpcOptions options;
  options.address = "127.0.0.1:0";
  auto server = GrpcServer::Start(*service_, options);
  ASSERT_TRUE(server.ok()) << server.status();
  auto channel =
      grpc::CreateChannel("127.0.0.1:" + std::to_string((*server)->port()),
                          grpc::InsecureChannelCredentials());
  const std::string named = pb::Moondream::service_full_name();
  EXPECT_EQ(named, "moondream.v1.Moondream");
  EXPECT_EQ(CheckHealth(channel, ""), std::pair(grpc::OK, kServing));
  EXPECT_EQ(CheckHealth(channel, named), std::pair(grpc::OK, kServing));
  EXPECT_EQ(CheckHealth(channel, "no.such.Service").first, grpc::NOT_FOUND);

  (*server)->SetNotServing();  // The drain's first step.
  EXPECT_EQ(CheckHealth(channel, ""), std::pair(grpc::OK, kNotServing));
  EXPECT_EQ(CheckHealth(channel, named), std::pair(grpc::OK, kNotServing));
}

std::string ReplicaOf(
    const std::multimap<grpc::string_ref, grpc::string_ref>& metadata) {
  auto it = metadata.find("x-moondream-replica");
  return it == metadata.end()
             ? ""
             : std::string(it->second.data(), it->second.size());
}

// Answers carry the name in their initial metadata (a streaming client
// sees it with the first message) and every call in its trailers; a refused
// call keeps its trailers-only answer, which client retry policies need in
// order to retry it on another replica.
TEST_F(GrpcTest, EveryCallNamesTheReplica) {
  auto stub = Stub();
  {
    grpc::ClientContext context;
    Authorize(context);
    pb::ModelInfo info;
    ASSERT_TRUE(stub->GetModelInfo(&context, {}, &info).ok());
    EXPECT_EQ(ReplicaOf(context.GetServerInitialMetadata()), kReplica);
    EXPECT_EQ(ReplicaOf(context.GetServerTrailingMetadata()), kReplica);
  }
  {
    grpc::ClientContext context;
    Authorize(context);
    pb::EncodeImageRequest encode;
    *encode.mutable_image() = PngImage("gray_200x150");
    pb::ImageHandle handle;
    ASSERT_TRUE(stub->EncodeImage(&context, encode, &handle).ok());
    EXPECT_EQ(ReplicaOf(context.GetServerInitialMetadata()), kReplica);
  }
  {
    grpc::ClientContext context;
    Authorize(context);
    auto reader = stub->Query(&context, GoodQuery());
    pb::TextChunk chunk;
    ASSERT_TRUE(reader->Read(&chunk));
    EXPECT_EQ(ReplicaOf(context.GetServerInitialMetadata()), kReplica);
    while (reader->Read(&chunk)) {
    }
    ASSERT_TRUE(reader->Finish().ok());
    EXPECT_EQ(ReplicaOf(context.GetServerTrailingMetadata()), kReplica);
  }
  {
    grpc::ClientContext context;
    Authorize(context);
    pb::DetectRequest request;
    *request.mutable_image() = PngImage("gray_200x150");
    request.set_object("face");
    pb::DetectResponse response;
    ASSERT_TRUE(stub->Detect(&context, request, &response).ok());
    EXPECT_EQ(ReplicaOf(context.GetServerInitialMetadata()), kReplica);
  }
  {
    grpc::ClientContext context;
    Authorize(context, "wrong-key");
    auto reader = stub->Query(&context, GoodQuery());
    pb::TextChunk chunk;
    EXPECT_FALSE(reader->Read(&chunk));
    EXPECT_EQ(reader->Finish().error_code(), grpc::UNAUTHENTICATED);
    EXPECT_EQ(ReplicaOf(context.GetServerInitialMetadata()), "");
    EXPECT_EQ(ReplicaOf(context.GetServerTrailingMetadata()), kReplica);
  }
  {
    grpc::ClientContext context;
    Authorize(context, "wrong-key");
    pb::ModelInfo info;
    EXPECT_EQ(stub->GetModelInfo(&context, {}, &info).error_code(),
              grpc::UNAUTHENTICATED);
    EXPECT_EQ(ReplicaOf(context.GetServerInitialMetadata()), "");
    EXPECT_EQ(ReplicaOf(context.GetServerTrailingMetadata()), kReplica);
  }
}

// With a maximum age of 1 s the server sends GOAWAY: the client's channel
// leaves READY by itself, and its next call reconnects. Without one, an
// idle channel stays READY.
TEST_F(GrpcTest, MaxConnectionAgeMakesClientsReconnect) {
  for (bool aged : {true, false}) {
    SCOPED_TRACE(aged ? "aged" : "not aged");
    GrpcOptions options;
    options.address = "127.0.0.1:0";
    if (aged) {
      options.max_connection_age = absl::Seconds(1);
      options.max_connection_age_grace = absl::Seconds(1);
    }
    auto server = GrpcServer::Start(*service_, options);
    ASSERT_TRUE(server.ok()) << server.status();
    auto channel =
        grpc::CreateChannel("127.0.0.1:" + std::to_string((*server)->port()),
                            grpc::InsecureChannelCredentials());
    auto stub = pb::Moondream::NewStub(channel);
    auto model_info = [&stub] {
      grpc::ClientContext context;
      Authorize(context);
      pb::ModelInfo info;
      return stub->GetModelInfo(&context, {}, &info);
    };
    ASSERT_TRUE(model_info().ok());
    ASSERT_EQ(channel->GetState(false), GRPC_CHANNEL_READY);
    // The age, gRPC's jitter (up to 10%) and slack; the control waits less.
    const auto wait = std::chrono::milliseconds(aged ? 5000 : 2500);
    EXPECT_EQ(channel->WaitForStateChange(
                  GRPC_CHANNEL_READY, std::chrono::system_clock::now() + wait),
              aged);
    EXPECT_TRUE(model_info().ok());
  }
  GrpcOptions negative;
  negative.address = "127.0.0.1:0";
  negative.max_connection_age = absl::Seconds(-1);
  EXPECT_EQ(GrpcServer::Start(*service_, negative).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// ---- Metrics ----

// The samples of a Prometheus text scrape, by series: name{labels}.
std::map<std::string, double> Samples(const std::string& text) {
  std::map<std::string, double> samples;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (line.empty() || line[0] == '#') continue;
    const size_t space = line.rfind(' ');
    double value = 0;
    if (space == absl::string_view::npos ||
        !absl::SimpleAtod(line.substr(space + 1), &value)) {
      continue;
    }
    samples[std::string(line.substr(0, space))] = value;
  }
  return samples;
}

bool SameLoad(const scheduler::EngineStats& a,
              const scheduler::EngineStats& b) {
  return a.queue_length == b.queue_length &&
         a.running_requests == b.running_requests && a.tenants == b.tenants;
}

TEST(MetricsCompatTest, IsEmptyOrVllm) {
  EXPECT_EQ(*ParseMetricsCompat(""), MetricsCompat::kNone);
  EXPECT_EQ(*ParseMetricsCompat("vllm"), MetricsCompat::kVllm);
  const auto other = ParseMetricsCompat("sglang");
  EXPECT_EQ(other.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(other.status().message(), "'vllm'"))
      << other.status();
  EXPECT_TRUE(absl::StrContains(other.status().message(), "sglang"));
}

// Eight streams on four slots, five of team-a and three of team-b, held
// until cancelled: the load gauges read four running and four waiting, per
// tenant too, and the vllm: names (compat only) read the same.
TEST_F(GrpcTest, LoadMetricsCountRequestsPerTenant) {
  ExpectIdle();
  MetricsOptions compat_options;
  compat_options.compat = MetricsCompat::kVllm;
  compat_options.model_name = "moondream2";
  compat_options.tenants = {"team-a", "team-b"};
  Metrics compat(compat_options);
  compat.AttachEngine(&service_->engine());
  const std::string model = "{model_name=\"moondream2\"}";

  // Idle: zero, with the tenants named at start-up already there.
  std::map<std::string, double> idle = Samples(compat.Scrape());
  for (const std::string series :
       {"moondream_num_requests_waiting", "moondream_num_requests_running",
        "moondream_kv_cache_usage_perc",
        "vllm:num_requests_waiting{model_name=\"moondream2\"}",
        "moondream_tenant_requests_waiting{tenant=\"team-b\"}",
        "moondream_tenant_requests_running{tenant=\"team-b\"}"}) {
    ASSERT_TRUE(idle.contains(series)) << series;
    EXPECT_EQ(idle[series], 0) << series;
  }

  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<pb::TextChunk>>> readers;
  auto stub = Stub();
  for (int i = 0; i < 8; ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    Authorize(*contexts.back(), i < 5 ? kKey : kOtherKey);
    pb::QueryRequest r = GoodQuery();
    r.mutable_settings()->set_max_tokens(1000);
    r.mutable_settings()->set_temperature(2.0f);
    r.mutable_settings()->set_seed(200 + i);
    r.mutable_settings()->set_ignore_eos(true);  // No answer ends early.
    readers.push_back(stub->Query(contexts.back().get(), r));
  }
  // A scrape reads the gauges the engine published after its last step:
  // take one between two equal snapshots of them.
  std::map<std::string, double> load;
  scheduler::EngineStats stats;
  bool steady = false;
  for (const absl::Time end = absl::Now() + absl::Seconds(60);
       !steady && absl::Now() < end;) {
    const scheduler::EngineStats before = service_->engine().Stats();
    load = Samples(compat.Scrape());
    stats = service_->engine().Stats();
    steady = before.running_requests == 4 && before.queue_length == 4 &&
             SameLoad(before, stats);
    if (!steady) absl::SleepFor(absl::Milliseconds(2));
  }
  const std::string native = metrics_->Scrape();
  for (auto& context : contexts) context->TryCancel();
  for (auto& reader : readers) {
    pb::TextChunk chunk;
    while (reader->Read(&chunk)) {
    }
    reader->Finish();
  }
  ASSERT_TRUE(steady) << "never 4 running and 4 waiting";

  EXPECT_EQ(load["moondream_num_requests_waiting"], 4);
  EXPECT_EQ(load["moondream_num_requests_running"], 4);
  EXPECT_EQ(load["moondream_queue_length"], 4);  // The old names stay.
  EXPECT_EQ(load["moondream_running_slots"], 4);
  const double kv = load["moondream_kv_cache_usage_perc"];
  EXPECT_GT(kv, 0);
  EXPECT_LE(kv, 1);
  EXPECT_EQ(load["moondream_kv_usage_ratio"], kv);
  EXPECT_EQ(load["vllm:num_requests_waiting" + model], 4);
  EXPECT_EQ(load["vllm:num_requests_running" + model], 4);
  EXPECT_EQ(load["vllm:kv_cache_usage_perc" + model], kv);
  EXPECT_EQ(load["vllm:gpu_cache_usage_perc" + model], kv);
  for (const auto& [tenant, n] :
       {std::pair{"team-a", 5}, std::pair{"team-b", 3}}) {
    SCOPED_TRACE(tenant);
    const std::string label = absl::StrCat("{tenant=\"", tenant, "\"}");
    const double waiting = load["moondream_tenant_requests_waiting" + label];
    const double running = load["moondream_tenant_requests_running" + label];
    EXPECT_EQ(waiting, stats.tenants[tenant].waiting);
    EXPECT_EQ(running, stats.tenants[tenant].running);
    EXPECT_EQ(waiting + running, n);
  }
  // Without the compat option: our names only.
  EXPECT_FALSE(absl::StrContains(native, "vllm:")) << native;
  EXPECT_TRUE(absl::StrContains(native, "moondream_num_requests_waiting "));

  // Idle again: zero, and a tenant once seen keeps its series (the suite's
  // metrics were told no tenants at start-up).
  ExpectIdle();
  std::map<std::string, double> after = Samples(metrics_->Scrape());
  for (const std::string series :
       {"moondream_num_requests_waiting", "moondream_num_requests_running",
        "moondream_kv_cache_usage_perc",
        "moondream_tenant_requests_waiting{tenant=\"team-a\"}",
        "moondream_tenant_requests_running{tenant=\"team-b\"}"}) {
    ASSERT_TRUE(after.contains(series)) << series;
    EXPECT_EQ(after[series], 0) << series;
  }
  compat.AttachEngine(nullptr);
}

// A request admitted and still decoding its image is load a router should
// see: the waiting gauge counts it before it reaches the engine.
TEST_F(GrpcTest, WaitingGaugeCountsRequestsStillDecoding) {
  ExpectIdle();
  absl::StatusOr<Service::Admission> decoding = service_->Admit("default");
  ASSERT_TRUE(decoding.ok()) << decoding.status();
  std::map<std::string, double> load = Samples(metrics_->Scrape());
  EXPECT_EQ(load["moondream_num_requests_waiting"], 1);
  EXPECT_EQ(load["moondream_queue_length"], 0);  // Not in the engine yet.
  { Service::Admission done = *std::move(decoding); }
  load = Samples(metrics_->Scrape());
  EXPECT_EQ(load["moondream_num_requests_waiting"], 0);
}

TEST_F(GrpcTest, MetricsScrapeIsPrometheusTextWithEveryFamily) {
  RunQuery(GoodQuery());
  ExpectIdle();
  const std::string text = metrics_->Scrape();
  // Every sample line: name{labels} value.
  const std::regex sample(
      R"(^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? [-+0-9.eEInfa]+$)");
  std::set<std::string> typed;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (line.empty()) continue;
    if (absl::StartsWith(line, "# TYPE ")) {
      std::vector<std::string> parts = absl::StrSplit(line, ' ');
      ASSERT_EQ(parts.size(), 4u) << line;
      typed.insert(parts[2]);
      continue;
    }
    if (absl::StartsWith(line, "# HELP ")) continue;
    EXPECT_TRUE(std::regex_match(std::string(line), sample)) << line;
  }
  for (const char* family : {"moondream_queue_seconds",
                             "moondream_time_to_first_token_seconds",
                             "moondream_inter_token_latency_seconds",
                             "moondream_request_duration_seconds",
                             "moondream_requests_total",
                             "moondream_tokens_in_total",
                             "moondream_tokens_out_total",
                             "moondream_image_cache_hits_total",
                             "moondream_image_cache_misses_total",
                             "moondream_image_cache_entries",
                             "moondream_image_cache_pinned_entries",
                             "moondream_queue_length",
                             "moondream_running_slots",
                             "moondream_kv_usage_ratio",
                             "moondream_batch_size",
                             "moondream_num_requests_waiting",
                             "moondream_num_requests_running",
                             "moondream_kv_cache_usage_perc",
                             "moondream_tenant_requests_waiting",
                             "moondream_tenant_requests_running"}) {
    EXPECT_TRUE(typed.contains(family)) << family;
  }
  EXPECT_FALSE(absl::StrContains(text, "vllm:"));
  EXPECT_TRUE(absl::StrContains(
      text,
      "moondream_requests_total{skill=\"query\",status=\"ok\","
      "tenant=\"team-a\"}"))
      << text;
}

}  // namespace
}  // namespace md::service
