// What the tokenizer's two files share: the error helpers, the id limit and
// the raw vocabulary a file yields before it is checked. Internal to
// model/tokenizer.
#ifndef MOONDREAM_MODEL_TOKENIZER_TOKENIZER_INTERNAL_H_
#define MOONDREAM_MODEL_TOKENIZER_TOKENIZER_INTERNAL_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "model/tokenizer/tokenizer.h"

namespace md {

// What a file says, before it is checked and indexed.
struct Tokenizer::RawVocabulary {
  std::vector<std::pair<std::string, int64_t>> vocab;       // byte-level pieces
  std::vector<std::pair<std::string, std::string>> merges;  // rank order
  std::vector<AddedToken> added;
};

namespace tokenizer_internal {

// Ids at or above this are refused, so a hostile file cannot make us
// allocate a huge table.
inline constexpr int64_t kMaxTokenId = int64_t{1} << 24;

inline absl::Status Invalid(absl::string_view source,
                            absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": ", message));
}

inline absl::Status Unsupported(absl::string_view source,
                                absl::string_view message) {
  return absl::UnimplementedError(absl::StrCat(source, ": ", message));
}

}  // namespace tokenizer_internal
}  // namespace md

#endif  // MOONDREAM_MODEL_TOKENIZER_TOKENIZER_INTERNAL_H_
