// moondream-bench: benchmarks for moondream-serve, one subcommand each.
//
//   moondream-bench model [flags]       model building blocks on random weights
//   moondream-bench image-prefix [flags] one image's encode + prefix prefill
//   moondream-bench tokenizer [flags]   tokenizer throughput
//   moondream-bench engine [flags]      continuous batching under load
//   moondream-bench serve [flags]       a running server over the network
//   moondream-bench scenes [flags]      synthetic shape scenes and their truth
//   moondream-bench scenes-eval [flags] a model's accuracy on those scenes
//   moondream-bench train [flags]       train a tiny model on those scenes
//   moondream-bench feature-probe [flags] is a shape's box in its features?
//   moondream-bench <cmd> --help    a subcommand's flags
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "base/threading.h"
#include "tools/bench/engine_bench.h"
#include "tools/bench/image_prefix_bench.h"
#include "tools/bench/make_model.h"
#include "tools/bench/model_bench.h"
#include "tools/bench/scenes.h"
#include "tools/bench/serve/serve_bench.h"
#include "tools/bench/tokenizer_bench.h"
#include "tools/bench/train.h"

namespace {

struct Subcommand {
  const char* name;
  const char* summary;
  absl::Status (*run)(const std::vector<std::string>& args);
};

constexpr Subcommand kSubcommands[] = {
    {"model",
     "vision encode, prefill and batched decode speed on random weights",
     md::bench::RunModelBench},
    {"image-prefix",
     "one 378x378 image: vision encode + 730-position prefix prefill (JSON)",
     md::bench::RunImagePrefixBench},
    {"tokenizer", "GPT-2 BPE encode, decode and streaming detokenize MB/s",
     md::bench::RunTokenizerBench},
    {"engine",
     "continuous batching: tokens/s vs concurrency, TTFT, inter-token "
     "latency",
     md::bench::RunEngineBench},
    {"serve",
     "load test of a running server over gRPC (vLLM's metrics, tenants)",
     md::bench::RunServeBench},
    {"make-model",
     "write a RANDOM-weight model directory in the real shapes (load tests)",
     md::bench::RunMakeModel},
    {"scenes", "write synthetic shape scenes (PNG) and their truth (JSON)",
     md::bench::RunScenes},
    {"scenes-eval",
     "a model's accuracy on fresh synthetic scenes vs issue 14's targets",
     md::bench::RunScenesEval},
    {"train", "train a tiny model from scratch on synthetic scenes (fp32)",
     md::bench::RunTrain},
    {"feature-probe",
     "linear probes: how well a model's image features say each shape's box",
     md::bench::RunFeatureProbe},
};

void PrintUsage(std::FILE* out) {
  std::fprintf(out,
               "usage: moondream-bench <subcommand> [flags]\n\n"
               "subcommands:\n");
  for (const Subcommand& cmd : kSubcommands) {
    std::fprintf(out, "  %-13s %s\n", cmd.name, cmd.summary);
  }
  std::fprintf(out,
               "\n'moondream-bench <subcommand> --help' lists its flags.\n");
}

const Subcommand* FindSubcommand(const std::string& name) {
  for (const Subcommand& cmd : kSubcommands) {
    if (name == cmd.name) return &cmd;
  }
  return nullptr;
}

}  // namespace

int main(int argc, char** argv) {
  md::EnsurePassiveOpenMpWait(argv);
  if (argc < 2) {
    PrintUsage(stderr);
    return 2;
  }
  const std::string name = argv[1];
  if (name == "--help" || name == "-h" || name == "help") {
    PrintUsage(stdout);
    return 0;
  }
  const Subcommand* cmd = FindSubcommand(name);
  if (cmd == nullptr) {
    std::fprintf(stderr, "moondream-bench: unknown subcommand '%s'\n\n",
                 name.c_str());
    PrintUsage(stderr);
    return 2;
  }
  const std::vector<std::string> args(argv + 2, argv + argc);
  const absl::Status status = cmd->run(args);
  if (!status.ok()) {
    std::fprintf(stderr, "moondream-bench %s: %s\n", cmd->name,
                 std::string(status.message()).c_str());
  }
  // Every result is written and closed by now. Skipping static destructors
  // is deliberate: gRPC's callback threads outlive the last channel, and
  // exit's teardown of gRPC's statics under them aborted `serve` now and
  // then (grpc_cq_internal_unref, seen with TLS).
  std::fflush(nullptr);
  std::_Exit(status.ok() ? 0 : absl::IsInvalidArgument(status) ? 2 : 1);
}
