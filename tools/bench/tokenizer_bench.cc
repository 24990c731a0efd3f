#include "tools/bench/tokenizer_bench.h"

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "model/tokenizer/detokenizer.h"
#include "model/tokenizer/tokenizer.h"
#include "tools/bench/flags.h"
#include "tools/bench/stats.h"

// Defaults resolve against the source tree when the build says where it is,
// else against the working directory (run from the repository root).
#ifdef MD_SOURCE_DIR
#define MD_TOKENIZER_DATA MD_SOURCE_DIR "/tests/data/tokenizer/"
#else
#define MD_TOKENIZER_DATA "tests/data/tokenizer/"
#endif

namespace md::bench {
namespace {

struct TokenizerBenchOptions {
  std::string tokenizer_path = MD_TOKENIZER_DATA "tokenizer.json";
  std::string cases_path = MD_TOKENIZER_DATA "gpt2_cases.json";
  int megabytes = 4;
  int n_reps = 5;
  int max_merges = -1;
};

absl::StatusOr<TokenizerBenchOptions> ParseOptions(
    const std::vector<std::string>& args, bool* help) {
  TokenizerBenchOptions options;
  FlagParser flags("tokenizer",
                   "GPT-2 BPE encode / decode / streaming-decode throughput "
                   "on mixed text");
  flags.AddString("tokenizer", &options.tokenizer_path,
                  "Hugging Face tokenizer.json to load");
  flags.AddString("cases", &options.cases_path,
                  "gpt2_cases.json whose texts, repeated, make the input");
  flags.AddInt("mb", &options.megabytes, "input size in MB (10^6 bytes)");
  flags.AddInt("reps", &options.n_reps, "timed repetitions (median reported)");
  flags.AddInt("max_merges", &options.max_merges,
               "cut to the first N merges (-1: all)");
  RETURN_IF_ERROR(flags.Parse(args));
  *help = flags.help_requested();
  if (*help) {
    std::printf("%s", flags.Usage().c_str());
    return options;
  }
  if (options.megabytes < 1 || options.n_reps < 1) {
    return absl::InvalidArgumentError("--mb and --reps must be at least 1");
  }
  return options;
}

// The cases' texts joined by newlines, repeated to at least `n_bytes`.
absl::StatusOr<std::string> BuildText(const std::string& cases_path,
                                      size_t n_bytes) {
  std::ifstream in(cases_path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("cannot open cases file '", cases_path, "'"));
  }
  std::string block;
  try {
    const nlohmann::json doc = nlohmann::json::parse(in);
    for (const nlohmann::json& c : doc.at("cases")) {
      absl::StrAppend(&block, c.at("text").get<std::string>(), "\n");
    }
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(cases_path, ": ", e.what()));
  }
  if (block.size() <= 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(cases_path, ": no case texts"));
  }
  std::string text;
  text.reserve(n_bytes + block.size());
  while (text.size() < n_bytes) text += block;
  return text;
}

// MB/s (10^6 bytes) of `n_bytes` processed in `ms`.
double MbPerS(size_t n_bytes, double ms) { return n_bytes / 1e3 / ms; }

}  // namespace

absl::Status RunTokenizerBench(const std::vector<std::string>& args) {
  bool help = false;
  ASSIGN_OR_RETURN(TokenizerBenchOptions options, ParseOptions(args, &help));
  if (help) return absl::OkStatus();

  TokenizerOptions load_options;
  if (options.max_merges >= 0) load_options.max_merges = options.max_merges;
  Stopwatch load_watch;
  ASSIGN_OR_RETURN(
      Tokenizer tokenizer,
      Tokenizer::FromHuggingFaceJson(options.tokenizer_path, load_options));
  const double load_ms = load_watch.ElapsedMs();
  ASSIGN_OR_RETURN(
      std::string text,
      BuildText(options.cases_path,
                static_cast<size_t>(options.megabytes) * 1000 * 1000));

  // One untimed warm-up of each, then the timed repetitions.
  ASSIGN_OR_RETURN(std::vector<int> ids, tokenizer.Encode(text));
  Timing encode;
  Timing decode;
  Timing stream;
  for (int rep = 0; rep < options.n_reps; ++rep) {
    Stopwatch watch;
    ASSIGN_OR_RETURN(std::vector<int> again, tokenizer.Encode(text));
    encode.samples_ms.push_back(watch.ElapsedMs());
    if (again != ids) return absl::InternalError("encoding is not stable");
  }
  for (int rep = 0; rep <= options.n_reps; ++rep) {
    Stopwatch watch;
    ASSIGN_OR_RETURN(std::string decoded, tokenizer.Decode(ids));
    if (rep > 0) decode.samples_ms.push_back(watch.ElapsedMs());
    if (decoded != text)
      return absl::InternalError("decode(encode(text)) differs");
  }
  for (int rep = 0; rep <= options.n_reps; ++rep) {
    std::string streamed;
    streamed.reserve(text.size());
    Stopwatch watch;
    StreamingDetokenizer detokenizer(&tokenizer);
    for (int id : ids) {
      ASSIGN_OR_RETURN(std::string piece, detokenizer.Push(id));
      streamed += piece;
    }
    streamed += detokenizer.Flush();
    if (rep > 0) stream.samples_ms.push_back(watch.ElapsedMs());
    if (streamed != text) return absl::InternalError("streamed text differs");
  }

  std::printf("tokenizer   %s (vocab %d, %d merges), loaded in %.0f ms\n",
              options.tokenizer_path.c_str(), tokenizer.vocab_size(),
              tokenizer.n_merges(), load_ms);
  std::printf(
      "input       %.2f MB of mixed text, %zu tokens (%.2f bytes/token)\n",
      text.size() / 1e6, ids.size(),
      static_cast<double>(text.size()) / ids.size());
  std::printf("%-11s %10s %10s %12s   (median of %d)\n", "", "ms", "MB/s",
              "Mtokens/s", options.n_reps);
  const std::pair<const char*, const Timing*> rows[] = {
      {"encode", &encode}, {"decode", &decode}, {"stream", &stream}};
  for (const auto& [name, timing] : rows) {
    const double ms = timing->median_ms();
    std::printf("%-11s %10.1f %10.1f %12.2f\n", name, ms,
                MbPerS(text.size(), ms), ids.size() / 1e3 / ms);
  }
  return absl::OkStatus();
}

}  // namespace md::bench
