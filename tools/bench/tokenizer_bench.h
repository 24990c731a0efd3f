// `moondream-bench tokenizer`: GPT-2 BPE throughput (encode, decode,
// streaming detokenize) on a few MB of mixed text built by repeating the
// tokenizer cases' texts (ASCII, code, CJK, Arabic, emoji, ...).
#ifndef MOONDREAM_TOOLS_BENCH_TOKENIZER_BENCH_H_
#define MOONDREAM_TOOLS_BENCH_TOKENIZER_BENCH_H_

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace md::bench {

// Parses the subcommand's flags from `args` (everything after "tokenizer"),
// runs the benchmark and prints MB/s (median of --reps runs).
absl::Status RunTokenizerBench(const std::vector<std::string>& args);

}  // namespace md::bench

#endif  // MOONDREAM_TOOLS_BENCH_TOKENIZER_BENCH_H_
