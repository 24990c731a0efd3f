#include <grpcpp/grpcpp.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "base/files.h"
#include "moondream/v1/moondream.grpc.pb.h"
#include "tools/bench/serve/client.h"

namespace md::bench::serve {
namespace {

namespace pb = ::moondream::v1;

// Common to every call: context (deadline, key), the record, the callback.
struct CallBase {
  grpc::ClientContext context;
  RequestRecord record;
  const RunClock* clock = nullptr;
  std::function<void(RequestRecord)> done;

  void Begin(const PlannedRequest& request, const std::string& api_key,
             const RunClock& run_clock, double timeout_s) {
    clock = &run_clock;
    record.skill = request.skill;
    if (!api_key.empty()) context.AddMetadata("x-moondream-auth", api_key);
    context.set_deadline(
        std::chrono::system_clock::now() +
        std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000)));
    record.send_s = clock->Now();
  }

  void Finish(const grpc::Status& status) {
    record.end_s = clock->Now();
    record.ok = status.ok();
    // A stream that ended on its own before the client's cancel landed
    // is a completion like any other.
    record.cancelled = cancel_requested && !status.ok();
    if (!status.ok()) record.error = GrpcCodeName(status.error_code());
    done(std::move(record));
  }

  bool cancel_requested = false;
};

void FillUsage(const pb::Usage& usage, RequestRecord& record) {
  record.input_tokens = usage.prompt_tokens();
  record.output_tokens = usage.output_tokens();
}

// Caption and Query: a stream of text pieces; each piece with text is a
// chunk, and the last message's usage says how many tokens there were.
class TextCall final : public grpc::ClientReadReactor<pb::TextChunk>,
                       public CallBase {
 public:
  // The request lives as long as the call: gRPC serializes it at StartCall.
  pb::CaptionRequest caption;
  pb::QueryRequest query;

  void Start(int cancel_after_chunks) {
    cancel_after_chunks_ = cancel_after_chunks;
    StartRead(&chunk_);
    if (cancel_after_chunks_ != 0) {
      StartCall();
      return;
    }
    // Cancelled from this thread, the call could end and delete itself on a
    // gRPC thread while TryCancel still runs: the hold keeps it alive.
    AddHold();
    StartCall();
    Cancel();
    RemoveHold();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // The stream ended; OnDone follows.
    if (!chunk_.text().empty()) {
      record.chunks.push_back({clock->Now(), 1});
      if (static_cast<int>(record.chunks.size()) == cancel_after_chunks_) {
        Cancel();
      }
    }
    if (chunk_.finished()) {
      FillUsage(chunk_.usage(), record);
      // Pieces may carry several tokens each; the rest go to the last one.
      const int counted = static_cast<int>(record.chunks.size());
      if (counted > 0 && record.output_tokens > counted) {
        record.chunks.back().tokens += record.output_tokens - counted;
      }
    }
    StartRead(&chunk_);
  }

  void OnDone(const grpc::Status& status) override {
    Finish(status);
    delete this;
  }

 private:
  // The client walks away; gRPC still ends the call through OnDone.
  void Cancel() {
    cancel_requested = true;
    context.TryCancel();
  }

  pb::TextChunk chunk_;
  int cancel_after_chunks_ = -1;
};

// Detect, point and gaze: one answer, an E2EL only.
template <typename Request, typename Response>
struct UnaryCall : CallBase {
  Request request;
  Response response;
};

pb::SamplingSettings Settings(const ClientOptions& options) {
  pb::SamplingSettings s;
  s.set_max_tokens(options.max_tokens);
  if (options.ignore_eos) s.set_ignore_eos(true);
  return s;
}

class GrpcClient final : public Client {
 public:
  GrpcClient(std::shared_ptr<grpc::Channel> channel, ClientOptions options)
      : stub_(pb::Moondream::NewStub(std::move(channel))),
        options_(std::move(options)) {}

  void Send(const PlannedRequest& request, const WorkloadImage& image,
            const std::string& api_key, const RunClock& clock,
            std::function<void(RequestRecord)> done) override {
    if (request.skill == "caption" || request.skill == "query") {
      auto* call = new TextCall;
      call->done = std::move(done);
      if (request.skill == "caption") {
        pb::CaptionRequest& req = call->caption;
        req.mutable_image()->set_data(image.bytes);
        *req.mutable_settings() = Settings(options_);
        call->Begin(request, api_key, clock, options_.timeout_s);
        stub_->async()->Caption(&call->context, &req, call);
      } else {
        pb::QueryRequest& req = call->query;
        req.mutable_image()->set_data(image.bytes);
        req.set_question(request.text);
        *req.mutable_settings() = Settings(options_);
        call->Begin(request, api_key, clock, options_.timeout_s);
        stub_->async()->Query(&call->context, &req, call);
      }
      call->Start(request.cancel_after_chunks);
      return;
    }
    if (request.skill == "detect") {
      SendUnary<pb::DetectRequest, pb::DetectResponse>(
          request, image, api_key, clock, std::move(done),
          [](pb::DetectRequest& r, const PlannedRequest& p) {
            r.set_object(p.text);
          },
          [this](auto* context, auto* req, auto* resp, auto done) {
            stub_->async()->Detect(context, req, resp, std::move(done));
          });
    } else if (request.skill == "point") {
      SendUnary<pb::PointRequest, pb::PointResponse>(
          request, image, api_key, clock, std::move(done),
          [](pb::PointRequest& r, const PlannedRequest& p) {
            r.set_object(p.text);
          },
          [this](auto* context, auto* req, auto* resp, auto done) {
            stub_->async()->Point(context, req, resp, std::move(done));
          });
    } else {
      SendUnary<pb::DetectGazeRequest, pb::DetectGazeResponse>(
          request, image, api_key, clock, std::move(done),
          [](pb::DetectGazeRequest& r, const PlannedRequest&) {
            r.mutable_eye()->set_x(0.5);
            r.mutable_eye()->set_y(0.4);
          },
          [this](auto* context, auto* req, auto* resp, auto done) {
            stub_->async()->DetectGaze(context, req, resp, std::move(done));
          });
    }
  }

 private:
  template <typename Req, typename Resp, typename Fill, typename Call>
  void SendUnary(const PlannedRequest& request, const WorkloadImage& image,
                 const std::string& api_key, const RunClock& clock,
                 std::function<void(RequestRecord)> done, Fill fill,
                 Call start) {
    auto* call = new UnaryCall<Req, Resp>;
    call->done = std::move(done);
    call->record.streamed = false;
    call->request.mutable_image()->set_data(image.bytes);
    fill(call->request, request);
    call->Begin(request, api_key, clock, options_.timeout_s);
    start(&call->context, &call->request, &call->response,
          std::function<void(grpc::Status)>([call](grpc::Status status) {
            FillUsage(call->response.usage(), call->record);
            call->Finish(status);
            delete call;
          }));
  }

  std::unique_ptr<pb::Moondream::Stub> stub_;
  const ClientOptions options_;
};

}  // namespace

const char* GrpcCodeName(int code) {
  static constexpr const char* kNames[] = {"OK",
                                           "CANCELLED",
                                           "UNKNOWN",
                                           "INVALID_ARGUMENT",
                                           "DEADLINE_EXCEEDED",
                                           "NOT_FOUND",
                                           "ALREADY_EXISTS",
                                           "PERMISSION_DENIED",
                                           "RESOURCE_EXHAUSTED",
                                           "FAILED_PRECONDITION",
                                           "ABORTED",
                                           "OUT_OF_RANGE",
                                           "UNIMPLEMENTED",
                                           "INTERNAL",
                                           "UNAVAILABLE",
                                           "DATA_LOSS",
                                           "UNAUTHENTICATED"};
  if (code < 0 || code >= static_cast<int>(std::size(kNames))) return "UNKNOWN";
  return kNames[code];
}

absl::StatusOr<std::unique_ptr<Client>> CreateGrpcClient(
    const ClientOptions& options) {
  std::shared_ptr<grpc::ChannelCredentials> credentials =
      grpc::InsecureChannelCredentials();
  if (options.tls) {
    grpc::SslCredentialsOptions ssl;
    if (!options.tls_ca.empty()) {
      absl::StatusOr<std::string> ca = ReadFileToString(options.tls_ca);
      if (!ca.ok()) return ca.status();
      ssl.pem_root_certs = *ca;
    }
    credentials = grpc::SslCredentials(ssl);
  }
  grpc::ChannelArguments args;
  args.SetMaxSendMessageSize(64 << 20);
  args.SetMaxReceiveMessageSize(64 << 20);
  auto channel = grpc::CreateCustomChannel(options.target, credentials, args);
  if (!channel->WaitForConnected(std::chrono::system_clock::now() +
                                 std::chrono::seconds(10))) {
    return absl::UnavailableError(
        absl::StrCat("cannot connect to ", options.target, " within 10 s"));
  }
  return std::make_unique<GrpcClient>(std::move(channel), options);
}

}  // namespace md::bench::serve
