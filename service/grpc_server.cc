#include "service/grpc_server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <deque>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "base/files.h"
#include "base/status_macros.h"
#include "model/skills/skill_table.h"
#include "moondream/v1/moondream.grpc.pb.h"
#include "service/blocking_work.h"
#include "service/grpc_calls.h"
#include "service/observer.h"

namespace md::service {
namespace {

// Threads that build calls (decode images) off gRPC's threads. Decodes
// themselves are bounded by --decode_concurrency; the other threads let a
// call on a cached image handle pass calls that wait for a decode.
constexpr int kBlockingThreads = 8;

namespace pb = ::moondream::v1;
using scheduler::Request;
using scheduler::RequestSummary;

// absl and gRPC share the canonical code numbers.
grpc::Status ToGrpc(const absl::Status& status) {
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

absl::Time DeadlineOf(const grpc::CallbackServerContext& context) {
  const auto deadline = context.deadline();
  // No deadline comes as a time centuries away.
  if (deadline >
      std::chrono::system_clock::now() + std::chrono::hours(24 * 365)) {
    return absl::InfiniteFuture();
  }
  return absl::FromChrono(deadline);
}

std::string Metadata(const grpc::CallbackServerContext& context,
                     const std::string& key) {
  const auto& metadata = context.client_metadata();
  auto it = metadata.find(key);
  if (it == metadata.end()) return "";
  return std::string(it->second.data(), it->second.size());
}

absl::StatusOr<std::string> Authenticate(
    const Service& service, const grpc::CallbackServerContext& context) {
  std::string key = Metadata(context, "x-moondream-auth");
  if (key.empty()) key = Metadata(context, "authorization");
  return service.Authenticate(key);
}

// The engine request of an RPC's message, once the tenant is known.
using BuildFunction =
    std::function<absl::StatusOr<Request>(const std::string&)>;

template <typename R>
BuildFunction BuildFrom(Service& service, const R& request) {
  return [&service,
          &request](const std::string& tenant) -> absl::StatusOr<Request> {
    ASSIGN_OR_RETURN(SkillCall call, ToCall(request));
    call.image.tenant = tenant;
    return service.Build(call);
  };
}

// Names the replica in a call's metadata: in the trailers of every call,
// and in the initial metadata of a call that answers. A call refused before
// any answer (draining: UNAVAILABLE) so keeps its trailers-only response:
// initial metadata would commit the call, and a client's gRPC retry policy
// then no longer retries it on another replica (gRFC A6).
class ReplicaName {
 public:
  static constexpr char kKey[] = "x-moondream-replica";

  ReplicaName(grpc::CallbackServerContext& context, const std::string& name)
      : context_(context), name_(name) {
    if (!name_.empty()) context_.AddTrailingMetadata(kKey, name_);
  }

  // Before the call's first message, or its OK finish without one.
  void OnAnswer() {
    if (name_.empty() || answered_) return;
    answered_ = true;
    context_.AddInitialMetadata(kKey, name_);
  }

 private:
  grpc::CallbackServerContext& context_;
  const std::string& name_;  // The server's; outlives its calls.
  bool answered_ = false;
};

void FillUsage(const RequestSummary& summary, pb::Usage* usage) {
  usage->set_prompt_tokens(summary.prompt_tokens);
  usage->set_output_tokens(summary.output_tokens);
  usage->set_image_cache_hit(summary.image_cache_hit);
}

// What an engine sink forwards to: the call's reactor, while it lives.
class EngineCall {
 public:
  virtual ~EngineCall() = default;
  virtual void OnText(absl::string_view text) {}
  virtual void OnBox(const Box& box) {}
  virtual void OnPoint(const md::Point& point) {}
  virtual void OnGaze(const std::optional<md::Point>& gaze) {}
  virtual void OnEnd(const absl::Status& status,
                     const RequestSummary& summary) = 0;
};

// Shared by a reactor and its engine sink; the reactor clears `call` when
// gRPC is done with it, so the sink never touches a deleted reactor.
struct Link {
  absl::Mutex mu;
  EngineCall* call ABSL_GUARDED_BY(mu) = nullptr;
};

class LinkSink final : public scheduler::RequestSink {
 public:
  explicit LinkSink(std::shared_ptr<Link> link) : link_(std::move(link)) {}
  void OnToken(int token, absl::string_view text) override {
    if (text.empty()) return;
    absl::MutexLock lock(&link_->mu);
    if (link_->call != nullptr) link_->call->OnText(text);
  }
  void OnTextTail(absl::string_view text) override {
    absl::MutexLock lock(&link_->mu);
    if (link_->call != nullptr) link_->call->OnText(text);
  }
  void OnBox(const Box& box) override {
    absl::MutexLock lock(&link_->mu);
    if (link_->call != nullptr) link_->call->OnBox(box);
  }
  void OnPoint(const md::Point& point) override {
    absl::MutexLock lock(&link_->mu);
    if (link_->call != nullptr) link_->call->OnPoint(point);
  }
  void OnGaze(const std::optional<md::Point>& gaze) override {
    absl::MutexLock lock(&link_->mu);
    if (link_->call != nullptr) link_->call->OnGaze(gaze);
  }
  void OnDone(const absl::Status& status,
              const RequestSummary& summary) override {
    absl::MutexLock lock(&link_->mu);
    if (link_->call != nullptr) link_->call->OnEnd(status, summary);
  }

 private:
  std::shared_ptr<Link> link_;
};

// The engine side of one call: submit, cancel (also before the id is
// known), and report to the observer.
class CallCore {
 public:
  CallCore(Service& service, RequestObserver* observer, Skill skill)
      : service_(service), observer_(observer), skill_(SkillName(skill)) {}

  // Fills tenant, deadline and sink, then submits.
  absl::Status Submit(absl::StatusOr<Request> request,
                      const std::string& tenant, absl::Time arrived,
                      absl::Time deadline, std::shared_ptr<Link> link) {
    tenant_ = tenant;
    if (!request.ok()) return request.status();
    request->tenant = tenant;
    request->arrived = arrived;
    request->deadline = deadline;
    request->sink = std::make_shared<LinkSink>(std::move(link));
    ASSIGN_OR_RETURN(uint64_t id, service_.Submit(*std::move(request)));
    absl::MutexLock lock(&mu_);
    id_ = id;
    if (cancelled_) service_.Cancel(id);
    return absl::OkStatus();
  }

  absl::StatusOr<Service::Admission> Admit(const std::string& tenant) {
    tenant_ = tenant;
    return service_.Admit(tenant);
  }

  void Cancel() {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    if (id_.has_value()) service_.Cancel(*id_);
  }

  // Before the reactor is deleted. gRPC runs OnDone only once OnCancel has
  // returned, but orders the two with libgrpc++'s own atomics, which
  // ThreadSanitizer cannot see; passing through the lock shows it the order.
  void Retire() { absl::MutexLock lock(&mu_); }

  void Report(const absl::Status& status, const RequestSummary& summary,
              bool reached_engine) {
    if (observer_ == nullptr) return;
    observer_->OnRequestDone(skill_, tenant_.empty() ? "unknown" : tenant_,
                             status, summary, reached_engine);
  }

  // Gap since the previous streamed output.
  void MarkOutput() {
    const absl::Time now = absl::Now();
    if (observer_ != nullptr && last_output_.has_value()) {
      observer_->OnInterTokenGap(now - *last_output_);
    }
    last_output_ = now;
  }

 private:
  Service& service_;
  RequestObserver* observer_;
  const std::string skill_;
  std::string tenant_;
  absl::Mutex mu_;
  std::optional<uint64_t> id_ ABSL_GUARDED_BY(mu_);
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<absl::Time> last_output_;  // Engine thread only.
};

// A reactor linked to its engine sink: submits the call, forwards client
// cancellation, and unlinks itself from the sink before gRPC deletes it.
template <typename Reactor>
class LinkedCall : public Reactor, public EngineCall {
 public:
  LinkedCall(Service& service, RequestObserver* observer, ReplicaName replica,
             Skill skill)
      : core_(std::make_shared<CallCore>(service, observer, std::move(skill))),
        replica_(std::move(replica)),
        link_(std::make_shared<Link>()) {
    absl::MutexLock lock(&link_->mu);
    link_->call = this;
  }

  // Authenticates and admits at once, so overload is refused before any
  // work; then builds (decoding the image) and submits on `blocking`, off
  // gRPC's threads. A failure finishes the call.
  void Begin(absl::StatusOr<std::string> tenant, BuildFunction build,
             absl::Time deadline, BlockingWork& blocking) {
    const absl::Time arrived = absl::Now();
    if (!tenant.ok()) return Fail(tenant.status());
    absl::StatusOr<Service::Admission> admission = core_->Admit(*tenant);
    if (!admission.ok()) return Fail(admission.status());
    blocking.Post([this, core = core_, link = link_,
                   admission = *std::move(admission), build = std::move(build),
                   tenant = *std::move(tenant), arrived, deadline]() mutable {
      absl::Status submitted =
          core->Submit(build(tenant), tenant, arrived, deadline, link);
      // Not submitted: nothing else finishes the call, so it is still here.
      if (!submitted.ok()) Fail(submitted);
    });
  }

  void Fail(const absl::Status& status) {
    core_->Report(status, {}, false);
    this->Finish(ToGrpc(status));
  }

  void OnCancel() override { core_->Cancel(); }
  void OnDone() override {
    {
      absl::MutexLock lock(&link_->mu);
      link_->call = nullptr;
    }
    core_->Retire();
    delete this;
  }

 protected:
  // Shared with the task that submits: the engine may end the call, and gRPC
  // delete this reactor, before that task has returned.
  std::shared_ptr<CallCore> core_;
  ReplicaName replica_;

 private:
  std::shared_ptr<Link> link_;
};

// Caption and Query: text pieces as they come, then a last message with the
// finish reason and usage. Writes are one at a time; pieces that arrive
// while a write is in flight are sent together in the next one.
class TextStream final
    : public LinkedCall<grpc::ServerWriteReactor<pb::TextChunk>> {
 public:
  using LinkedCall::LinkedCall;

  // ---- Engine thread (under the link's lock) ----
  void OnText(absl::string_view text) override {
    core_->MarkOutput();
    absl::MutexLock lock(&mu_);
    pending_text_.append(text.data(), text.size());
    MaybeWrite();
  }
  void OnEnd(const absl::Status& status,
             const RequestSummary& summary) override {
    core_->Report(status, summary, true);
    absl::MutexLock lock(&mu_);
    end_status_ = status;
    end_summary_ = summary;
    MaybeWrite();
  }

  // ---- gRPC ----
  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (!ok) broken_ = true;
    MaybeWrite();
  }

 private:
  void MaybeWrite() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || finished_) return;
    if (!pending_text_.empty() && !broken_) {
      out_.Clear();
      out_.set_text(std::move(pending_text_));
      pending_text_.clear();
      writing_ = true;
      replica_.OnAnswer();
      StartWrite(&out_);
      return;
    }
    if (!end_status_.has_value()) return;
    finished_ = true;
    if (!end_status_->ok() || broken_) {
      Finish(ToGrpc(end_status_->ok() ? absl::CancelledError("stream broken")
                                      : *end_status_));
      return;
    }
    out_.Clear();
    out_.set_finished(true);
    out_.set_finish_reason(StopReasonName(end_summary_.stop));
    FillUsage(end_summary_, out_.mutable_usage());
    replica_.OnAnswer();
    StartWriteAndFinish(&out_, grpc::WriteOptions(), grpc::Status::OK);
  }

  absl::Mutex mu_;
  std::string pending_text_ ABSL_GUARDED_BY(mu_);
  pb::TextChunk out_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<absl::Status> end_status_ ABSL_GUARDED_BY(mu_);
  RequestSummary end_summary_ ABSL_GUARDED_BY(mu_);
};

// Detect, Point and DetectGaze: collect the engine's outputs into the
// response, finish once.
template <typename Response>
class UnaryCall final : public LinkedCall<grpc::ServerUnaryReactor> {
 public:
  UnaryCall(Service& service, RequestObserver* observer, ReplicaName replica,
            Skill skill, Response* response)
      : LinkedCall(service, observer, std::move(replica), std::move(skill)),
        response_(response) {}

  void OnBox(const Box& box) override {
    if constexpr (std::is_same_v<Response, pb::DetectResponse>) {
      pb::BoundingBox* out = response_->add_objects();
      out->set_x_min(box.x_min);
      out->set_y_min(box.y_min);
      out->set_x_max(box.x_max);
      out->set_y_max(box.y_max);
    }
  }
  void OnPoint(const md::Point& point) override {
    if constexpr (std::is_same_v<Response, pb::PointResponse>) {
      pb::Point* out = response_->add_points();
      out->set_x(point.x);
      out->set_y(point.y);
    }
  }
  void OnGaze(const std::optional<md::Point>& gaze) override {
    if constexpr (std::is_same_v<Response, pb::DetectGazeResponse>) {
      if (gaze.has_value()) {
        response_->mutable_gaze()->set_x(gaze->x);
        response_->mutable_gaze()->set_y(gaze->y);
      }
    }
  }
  void OnEnd(const absl::Status& status,
             const RequestSummary& summary) override {
    core_->Report(status, summary, true);
    if (status.ok()) {
      FillUsage(summary, response_->mutable_usage());
      replica_.OnAnswer();
    }
    Finish(ToGrpc(status));
  }

 private:
  Response* response_;
};

class MoondreamService final : public pb::Moondream::CallbackService {
 public:
  MoondreamService(md::service::Service& service, RequestObserver* observer,
                   int64_t max_message_bytes, std::string replica_name)
      : service_(service),
        observer_(observer),
        max_message_bytes_(max_message_bytes),
        replica_name_(std::move(replica_name)) {}

  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const pb::GetModelInfoRequest*,
                                         pb::ModelInfo* info) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    ReplicaName replica(*context, replica_name_);
    absl::StatusOr<std::string> tenant = Authenticate(service_, *context);
    if (!tenant.ok()) {
      reactor->Finish(ToGrpc(tenant.status()));
      return reactor;
    }
    const ServiceInfo s = service_.Info();
    info->set_model(s.model);
    info->set_weights(s.weights);
    info->set_random_weights(s.random_weights);
    info->set_dtype(s.dtype);
    info->set_device(s.device);
    info->set_context_length(s.context_length);
    info->set_image_positions(s.image_positions);
    info->set_slots(s.slots);
    info->set_max_message_bytes(max_message_bytes_);
    replica.OnAnswer();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  grpc::ServerUnaryReactor* EncodeImage(grpc::CallbackServerContext* context,
                                        const pb::EncodeImageRequest* request,
                                        pb::ImageHandle* handle) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    ReplicaName replica(*context, replica_name_);
    absl::Status status = [&]() -> absl::Status {
      ASSIGN_OR_RETURN(absl::string_view bytes, ImageBytesOf(*request));
      ASSIGN_OR_RETURN(std::string tenant, Authenticate(service_, *context));
      ASSIGN_OR_RETURN(ImageInfo info, service_.EncodeImage(bytes, tenant));
      handle->set_handle(info.handle);
      handle->set_width(info.width);
      handle->set_height(info.height);
      return absl::OkStatus();
    }();
    if (status.ok()) replica.OnAnswer();
    reactor->Finish(ToGrpc(status));
    return reactor;
  }

  grpc::ServerWriteReactor<pb::TextChunk>* Caption(
      grpc::CallbackServerContext* context,
      const pb::CaptionRequest* request) override {
    return Start<TextStream>(*context, *request, Skill::kCaption);
  }

  grpc::ServerWriteReactor<pb::TextChunk>* Query(
      grpc::CallbackServerContext* context,
      const pb::QueryRequest* request) override {
    return Start<TextStream>(*context, *request, Skill::kQuery);
  }

  grpc::ServerUnaryReactor* Detect(grpc::CallbackServerContext* context,
                                   const pb::DetectRequest* request,
                                   pb::DetectResponse* response) override {
    return Start<UnaryCall<pb::DetectResponse>>(*context, *request,
                                                Skill::kDetect, response);
  }

  grpc::ServerUnaryReactor* Point(grpc::CallbackServerContext* context,
                                  const pb::PointRequest* request,
                                  pb::PointResponse* response) override {
    return Start<UnaryCall<pb::PointResponse>>(*context, *request,
                                               Skill::kPoint, response);
  }

  grpc::ServerUnaryReactor* DetectGaze(
      grpc::CallbackServerContext* context,
      const pb::DetectGazeRequest* request,
      pb::DetectGazeResponse* response) override {
    return Start<UnaryCall<pb::DetectGazeResponse>>(*context, *request,
                                                    Skill::kGaze, response);
  }

 private:
  // A skill RPC: its reactor (with `extra` for its response), begun on the
  // call built from `request`.
  template <typename Call, typename R, typename... Extra>
  Call* Start(grpc::CallbackServerContext& context, const R& request,
              Skill skill, Extra... extra) {
    auto* call = new Call(service_, observer_,
                          ReplicaName(context, replica_name_), skill, extra...);
    call->Begin(Authenticate(service_, context), BuildFrom(service_, request),
                DeadlineOf(context), blocking_);
    return call;
  }

  md::service::Service& service_;
  RequestObserver* observer_;
  const int64_t max_message_bytes_;
  const std::string replica_name_;
  // Declared last, so destroyed first: its tasks use the members above.
  BlockingWork blocking_{kBlockingThreads};
};

// Health for the whole server ("") and for the service by name, which a
// Kubernetes grpc probe or a proxy's health check may ask for instead.
void SetHealth(grpc::Server& server, bool serving) {
  grpc::HealthCheckServiceInterface* health = server.GetHealthCheckService();
  health->SetServingStatus(serving);
  health->SetServingStatus(pb::Moondream::service_full_name(), serving);
}

int Milliseconds(absl::Duration d) {
  return static_cast<int>(
      std::min<int64_t>(absl::ToInt64Milliseconds(d), INT32_MAX));
}

// GOAWAY after max_connection_age (and the grace for calls in flight), so
// clients that keep one HTTP/2 connection for good still rebalance.
absl::Status SetConnectionAge(const GrpcOptions& options,
                              grpc::ServerBuilder& builder) {
  if (options.max_connection_age < absl::ZeroDuration() ||
      options.max_connection_age_grace < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "the maximum connection age and its grace cannot be negative");
  }
  if (options.max_connection_age > absl::ZeroDuration()) {
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS,
                               Milliseconds(options.max_connection_age));
  }
  if (options.max_connection_age_grace > absl::ZeroDuration()) {
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
                               Milliseconds(options.max_connection_age_grace));
  }
  return absl::OkStatus();
}

}  // namespace

class GrpcServer::Impl {
 public:
  Impl(md::service::Service& service, RequestObserver* observer,
       const GrpcOptions& options)
      : service_(service, observer, options.max_message_bytes,
                 options.replica_name) {}

  MoondreamService service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

absl::StatusOr<std::unique_ptr<GrpcServer>> GrpcServer::Start(
    Service& service, const GrpcOptions& options, RequestObserver* observer) {
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        "TLS needs both the certificate and the key file");
  }
  std::shared_ptr<grpc::ServerCredentials> credentials =
      grpc::InsecureServerCredentials();
  if (!options.tls_cert_file.empty()) {
    ASSIGN_OR_RETURN(std::string cert, ReadFileToString(options.tls_cert_file,
                                                        "TLS certificate"));
    ASSIGN_OR_RETURN(std::string key,
                     ReadFileToString(options.tls_key_file, "TLS key"));
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back({key, cert});
    credentials = grpc::SslServerCredentials(ssl);
  }
  auto impl = std::make_unique<Impl>(service, observer, options);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  RETURN_IF_ERROR(SetConnectionAge(options, builder));
  builder.AddListeningPort(options.address, credentials, &impl->port_);
  builder.SetMaxReceiveMessageSize(static_cast<int>(
      std::min<int64_t>(options.max_message_bytes, INT32_MAX)));
  builder.RegisterService(&impl->service_);
  impl->server_ = builder.BuildAndStart();
  if (impl->server_ == nullptr || impl->port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options.address));
  }
  SetHealth(*impl->server_, true);
  return std::unique_ptr<GrpcServer>(new GrpcServer(std::move(impl)));
}

GrpcServer::GrpcServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

GrpcServer::~GrpcServer() { Shutdown(absl::ZeroDuration()); }

int GrpcServer::port() const { return impl_->port_; }

void GrpcServer::SetNotServing() {
  if (impl_ == nullptr || impl_->server_ == nullptr) return;
  SetHealth(*impl_->server_, false);
}

void GrpcServer::Shutdown(absl::Duration deadline) {
  if (impl_ == nullptr || impl_->server_ == nullptr) return;
  impl_->server_->Shutdown(absl::ToChronoTime(absl::Now() + deadline));
  impl_->server_->Wait();
  impl_->server_.reset();
}

}  // namespace md::service
