// moondream-server: serves a Moondream model over gRPC (moondream.v1) and a
// Moondream-compatible HTTP API, with Prometheus metrics, until SIGTERM or
// SIGINT; then it stops admitting, reports NOT_SERVING, lets in-flight requests
// finish within the grace period and exits 0.
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "base/command_line.h"
#include "base/log.h"
#include "base/paths.h"
#include "base/status_macros.h"
#include "base/threading.h"
#include "model/bundle.h"
#include "model/io/tensor_io.h"
#include "model/net/dtype_choice.h"
#include "scheduler/engine.h"
#include "service/auth.h"
#include "service/grpc_server.h"
#include "service/http_gateway.h"
#include "service/metrics.h"
#include "service/service.h"

// Inside the project tree; found next to the binary wherever the server is
// started from (base/paths.h).
constexpr char kDefaultModel[] = "models/scenes-demo";

ABSL_FLAG(std::string, model, kDefaultModel,
          "Model directory: model.safetensors, tokenizer.json, optional "
          "config.json. The default is the synthetic-scenes demo model (a tiny "
          "Moondream trained on coloured shapes, not Moondream's weights; "
          "README 'The default model'), looked for next to the binary, then "
          "in the working directory.");
ABSL_FLAG(std::string, preset, "moondream2",
          "Shapes a model directory without config.json has: moondream2 or "
          "moondream-0.5b");
ABSL_FLAG(std::string, host, "0.0.0.0", "Address to listen on");
ABSL_FLAG(int, grpc_port, 50051, "gRPC port (0: pick a free one)");
ABSL_FLAG(int, http_port, 8080,
          "Moondream-compatible HTTP API port (0: pick a free one; -1: off)");
ABSL_FLAG(int, http_timeout_seconds, 300,
          "How long an HTTP request may take before 504");
ABSL_FLAG(std::string, metrics_host, "",
          "Address /metrics listens on (empty: --host). The scrape names "
          "tenants and needs no API key: bind it where only Prometheus can "
          "reach it (e.g. 127.0.0.1, or a pod network protected by a "
          "NetworkPolicy)");
ABSL_FLAG(int, metrics_port, 9090,
          "Prometheus /metrics port (-1: no metrics endpoint)");
ABSL_FLAG(std::string, dtype, "auto",
          "Compute dtype: auto (bf16 where the CPU has AVX512-BF16 or on "
          "CUDA, else fp32), fp32, bf16 or fp16");
ABSL_FLAG(std::string, device, "cpu", "cpu, cuda or cuda:N");
ABSL_FLAG(int, threads, 0, "Compute threads (0: one per core)");
ABSL_FLAG(int, slots, 8, "Requests decoded side by side (KV cache slots)");
ABSL_FLAG(int, context, 0,
          "Positions per request: image (730) + prompt + answer (0: the "
          "model's maximum). A slot stores only the prompt and answer: "
          "requests read their image's 730 positions from one shared copy");
ABSL_FLAG(int, queue, 256,
          "Requests that may wait for a slot; more are refused at once with "
          "RESOURCE_EXHAUSTED");
ABSL_FLAG(int, tenant_queue, 0,
          "Requests one tenant may have queued (0: only --queue applies); "
          "more get RESOURCE_EXHAUSTED / 429");
ABSL_FLAG(int, tenant_slots, 0,
          "Slots one tenant may hold at once (0: all); fewer than --slots "
          "keeps slots free for other tenants' new requests");
ABSL_FLAG(int, cache_mb, 2048,
          "Memory for cached image prefixes (a hit skips the vision encoder; "
          "prefixes that running requests read are never evicted)");
ABSL_FLAG(int, max_handles, 1024, "Images kept for EncodeImage handles");
ABSL_FLAG(int, handles_mb, 1024,
          "Memory for EncodeImage handles (their crops and encoded bytes); "
          "the least recently used go first");
ABSL_FLAG(int, decode_concurrency, 1,
          "Images decoded at once (a large one takes seconds of CPU); others "
          "wait up to 30 s, then RESOURCE_EXHAUSTED / 429");
ABSL_FLAG(bool, share_image_cache, false,
          "Let tenants share cached image prefixes (faster when they send "
          "the same images, but a tenant can then tell from the latency that "
          "another sent an image); off: each tenant's are cached apart");
ABSL_FLAG(int, max_image_mb, 20, "Largest image accepted, in MiB");
ABSL_FLAG(int64_t, max_image_pixels, int64_t{4096} * 4096,
          "Largest image accepted, in pixels (checked before decoding)");
ABSL_FLAG(int, max_text_bytes, 4096, "Longest question or object text");
ABSL_FLAG(int, max_message_mb, 32, "Largest gRPC request message, in MiB");
ABSL_FLAG(std::string, api_keys, "",
          "File of 'KEY TENANT' lines; without it the server is open to all");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate chain (enables TLS)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key (with --tls_cert)");
ABSL_FLAG(std::string, log_level, "info",
          "error, warning, info (one line per request) or debug; logs are "
          "logfmt lines on stderr");
ABSL_FLAG(int, grace_seconds, 30,
          "On SIGTERM, how long in-flight requests may take to finish");
ABSL_FLAG(int, max_connection_age_seconds, 0,
          "Connections older than this are asked to reconnect (gRPC: GOAWAY; "
          "HTTP: Connection: close on the next response), so long-lived "
          "clients rebalance over replicas behind a load balancer (0: never)");
ABSL_FLAG(int, max_connection_age_grace_seconds, 0,
          "How long gRPC calls in flight on an aged-out connection may still "
          "run before it is closed (0: as long as they take)");
ABSL_FLAG(std::string, metrics_compat, "",
          "Also export other servers' metric names: 'vllm' adds "
          "vllm:num_requests_waiting, vllm:num_requests_running, "
          "vllm:kv_cache_usage_perc and vllm:gpu_cache_usage_perc for routers "
          "and autoscalers built for vLLM (empty: moondream_ names only)");
ABSL_FLAG(std::string, replica_name, "",
          "Name of this replica, sent with every response (gRPC metadata "
          "x-moondream-replica, HTTP header X-Moondream-Replica) so clients "
          "can measure balance (empty: the host name, a pod's name on "
          "Kubernetes)");

namespace md::service {
namespace {

// SIGTERM and SIGINT arrive through a pipe written by a handler: whichever
// thread the kernel picks (libraries start threads before main can block
// signals), the handler only writes a byte, so no signal ever takes the
// default action and kills the drain.
int g_signal_pipe[2] = {-1, -1};

extern "C" void OnStopSignal(int signal_number) {
  const char byte = static_cast<char>(signal_number);
  const int saved = errno;
  [[maybe_unused]] ssize_t n = write(g_signal_pipe[1], &byte, 1);
  errno = saved;
}

bool InstallStopSignalHandlers() {
  if (pipe2(g_signal_pipe, O_CLOEXEC) != 0) return false;
  struct sigaction action = {};
  action.sa_handler = OnStopSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  return sigaction(SIGTERM, &action, nullptr) == 0 &&
         sigaction(SIGINT, &action, nullptr) == 0;
}

// The next signal's number; 0 once StopSignalWaiters was called.
int WaitForSignal() {
  char byte = 0;
  for (;;) {
    const ssize_t n = read(g_signal_pipe[0], &byte, 1);
    if (n == 1) return static_cast<unsigned char>(byte);
    if (n == 0 || errno != EINTR) return 0;
  }
}

void StopSignalWaiters() {
  const char zero = 0;
  [[maybe_unused]] ssize_t n = write(g_signal_pipe[1], &zero, 1);
}

// --replica_name, or the host name.
std::string ReplicaName() {
  std::string name = absl::GetFlag(FLAGS_replica_name);
  if (!name.empty()) return name;
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0) return "";
  return host;
}

// A flag of seconds as a duration; negative is a start-up error.
absl::StatusOr<absl::Duration> NonNegativeSeconds(int seconds,
                                                  absl::string_view flag) {
  if (seconds < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, " cannot be negative"));
  }
  return absl::Seconds(seconds);
}

absl::Status Serve() {
  ASSIGN_OR_RETURN(LogLevel log_level,
                   ParseLogLevel(absl::GetFlag(FLAGS_log_level)));
  SetLogLevel(log_level);
  ASSIGN_OR_RETURN(at::Device device, ParseDevice(absl::GetFlag(FLAGS_device)));
  ASSIGN_OR_RETURN(const DTypeChoice dtype_choice,
                   ChooseDType(absl::GetFlag(FLAGS_dtype), device));
  const at::ScalarType dtype = dtype_choice.dtype;
  MetricsOptions metrics_options;
  ASSIGN_OR_RETURN(metrics_options.compat,
                   ParseMetricsCompat(absl::GetFlag(FLAGS_metrics_compat)));
  ASSIGN_OR_RETURN(
      const absl::Duration max_connection_age,
      NonNegativeSeconds(absl::GetFlag(FLAGS_max_connection_age_seconds),
                         "max_connection_age_seconds"));
  ASSIGN_OR_RETURN(
      const absl::Duration max_connection_age_grace,
      NonNegativeSeconds(absl::GetFlag(FLAGS_max_connection_age_grace_seconds),
                         "max_connection_age_grace_seconds"));
  const std::string replica_name = ReplicaName();
  const int threads = absl::GetFlag(FLAGS_threads);
  SetComputeThreads(threads > 0 ? threads : 0);

  ApiKeys keys;
  if (!absl::GetFlag(FLAGS_api_keys).empty()) {
    ASSIGN_OR_RETURN(
        keys, ApiKeys::FromFile(ExpandUser(absl::GetFlag(FLAGS_api_keys))));
  }
  ASSIGN_OR_RETURN(
      ModelBundle bundle,
      LoadModelBundle(
          ResolveModelFlag(absl::GetFlag(FLAGS_model), kDefaultModel),
          absl::GetFlag(FLAGS_preset), ModelOptions{dtype, device}));
  std::cerr << "moondream-server: " << DescribeBundle(bundle) << "\n"
            << "moondream-server: dtype " << DTypeLabel(dtype) << " ("
            << dtype_choice.reason << ")\n";

  metrics_options.model_name = ServedModelName(bundle);
  metrics_options.tenants = keys.Tenants();
  auto metrics = std::make_unique<Metrics>(std::move(metrics_options));
  scheduler::EngineOptions engine;
  engine.n_slots = absl::GetFlag(FLAGS_slots);
  engine.positions_per_slot = absl::GetFlag(FLAGS_context);
  engine.max_queue = absl::GetFlag(FLAGS_queue);
  engine.max_queued_per_tenant = absl::GetFlag(FLAGS_tenant_queue);
  engine.max_slots_per_tenant = absl::GetFlag(FLAGS_tenant_slots);
  engine.prefix_cache_bytes = int64_t{absl::GetFlag(FLAGS_cache_mb)} << 20;
  ServiceLimits limits;
  limits.max_image_bytes = int64_t{absl::GetFlag(FLAGS_max_image_mb)} << 20;
  limits.max_image_pixels = absl::GetFlag(FLAGS_max_image_pixels);
  limits.max_text_bytes = absl::GetFlag(FLAGS_max_text_bytes);
  limits.max_handles = absl::GetFlag(FLAGS_max_handles);
  limits.max_handle_bytes = int64_t{absl::GetFlag(FLAGS_handles_mb)} << 20;
  limits.max_concurrent_decodes = absl::GetFlag(FLAGS_decode_concurrency);
  limits.share_image_cache = absl::GetFlag(FLAGS_share_image_cache);
  ASSIGN_OR_RETURN(
      std::unique_ptr<Service> service,
      Service::Create(std::move(bundle), engine, limits, std::move(keys),
                      [m = metrics.get()](const scheduler::StepReport& r) {
                        m->OnStep(r);
                      }));
  metrics->AttachEngine(&service->engine(),
                        [s = service.get()] { return s->preparing(); });
  // Runs before `service` (and its engine) is destroyed, on every path out:
  // the metrics listener lives longer and may be mid-scrape.
  absl::Cleanup detach_engine = [&] { metrics->AttachEngine(nullptr); };

  const std::string host = absl::GetFlag(FLAGS_host);
  if (absl::GetFlag(FLAGS_metrics_port) >= 0) {
    const std::string metrics_host = absl::GetFlag(FLAGS_metrics_host).empty()
                                         ? host
                                         : absl::GetFlag(FLAGS_metrics_host);
    RETURN_IF_ERROR(
        metrics->Serve(metrics_host, absl::GetFlag(FLAGS_metrics_port)));
    std::cerr << "moondream-server: metrics on http://" << metrics_host << ":"
              << metrics->port() << "/metrics\n";
  }
  GrpcOptions grpc;
  grpc.address = absl::StrCat(host, ":", absl::GetFlag(FLAGS_grpc_port));
  grpc.max_message_bytes = int64_t{absl::GetFlag(FLAGS_max_message_mb)} << 20;
  grpc.tls_cert_file = ExpandUser(absl::GetFlag(FLAGS_tls_cert));
  grpc.tls_key_file = ExpandUser(absl::GetFlag(FLAGS_tls_key));
  grpc.max_connection_age = max_connection_age;
  grpc.max_connection_age_grace = max_connection_age_grace;
  grpc.replica_name = replica_name;
  ASSIGN_OR_RETURN(std::unique_ptr<GrpcServer> server,
                   GrpcServer::Start(*service, grpc, metrics.get()));
  std::unique_ptr<HttpGateway> http;
  if (absl::GetFlag(FLAGS_http_port) >= 0) {
    HttpOptions options;
    options.host = host;
    options.port = absl::GetFlag(FLAGS_http_port);
    options.max_body_bytes = int64_t{absl::GetFlag(FLAGS_max_message_mb)} << 20;
    options.timeout = absl::Seconds(absl::GetFlag(FLAGS_http_timeout_seconds));
    options.replica_name = replica_name;
    if (max_connection_age > absl::ZeroDuration()) {
      options.max_connection_age = max_connection_age;
    }
    ASSIGN_OR_RETURN(http,
                     HttpGateway::Start(*service, options, metrics.get()));
    std::cerr << "moondream-server: HTTP API on http://" << host << ":"
              << http->port() << "/v1/\n";
  }
  // Tests and scripts read this line to find the port.
  std::cout << "moondream-server: serving gRPC on " << host << ":"
            << server->port() << std::endl;

  const int signal_number = WaitForSignal();
  const absl::Duration grace =
      absl::Seconds(absl::GetFlag(FLAGS_grace_seconds));
  std::cerr << "moondream-server: " << strsignal(signal_number)
            << ": draining (grace " << grace << ")\n";
  // Later signals are read and reported; the drain and the exit path go on.
  std::thread later_signals([] {
    for (;;) {
      const int again = WaitForSignal();
      if (again == 0) return;
      std::cerr << "moondream-server: " << strsignal(again)
                << " again: already draining\n";
    }
  });
  absl::Cleanup stop_later_signals = [&] {
    StopSignalWaiters();
    later_signals.join();
  };
  // Calls still running when the grace is over are cancelled this much later.
  constexpr absl::Duration kShutdownMargin = absl::Seconds(1);
  // Both listeners close now, and gRPC sends GOAWAY: a balancer's next
  // call is refused at connect (which nginx and gRPC clients retry on
  // another replica) rather than answered UNAVAILABLE (which they cannot).
  server->SetNotServing();
  std::thread grpc_shutdown(
      [&server, grace] { server->Shutdown(grace + kShutdownMargin); });
  if (http != nullptr) {
    http->SetNotReady();
    http->StopAccepting();
  }
  const bool drained = service->Drain(grace);
  std::cerr << "moondream-server: "
            << (drained ? "every request finished"
                        : "grace period over; cancelling the rest")
            << "\n";
  grpc_shutdown.join();
  if (http != nullptr) http->Stop();
  return absl::OkStatus();
}

}  // namespace
}  // namespace md::service

int main(int argc, char** argv) {
  md::EnsurePassiveOpenMpWait(argv);
  absl::SetProgramUsageMessage(
      "serves a Moondream model over gRPC (moondream.v1.Moondream) and a "
      "Moondream-compatible\nHTTP API (POST /v1/caption, /v1/query, "
      "/v1/detect, /v1/point, /v1/gaze), with\nPrometheus metrics.\n\n"
      "  moondream-server [--model=DIR] [--grpc_port=50051] "
      "[--http_port=8080] [--metrics_port=9090]\n\n"
      "Without --model it serves the synthetic-scenes demo model: a tiny "
      "Moondream\ntrained here on images of coloured shapes, not Moondream's "
      "weights (README\n'The default model'). SIGTERM drains:\nthe listeners "
      "close (gRPC sends GOAWAY), health "
      "turns NOT_SERVING, in-flight\nrequests finish within --grace_seconds, "
      "then the server exits 0.");
  md::ListFlagsInHelp(__FILE__);
  // Accept --grpc-port as well as absl's --grpc_port spelling.
  md::UnderscoredArgv underscored(argc, argv);
  std::vector<char*> args = absl::ParseCommandLine(argc, underscored.argv());
  if (args.size() != 1) {
    std::cerr << "moondream-server takes no positional arguments; --help\n";
    return 2;
  }
  if (!md::service::InstallStopSignalHandlers()) {
    std::cerr << "moondream-server: cannot install signal handlers\n";
    return 1;
  }
  absl::Status status = md::service::Serve();
  if (!status.ok()) {
    std::cerr << "moondream-server: " << status.message() << "\n";
    return 1;
  }
  return 0;
}
