// UTF-8 checking and GPT-2's pre-tokenization, by hand over code points.
//
// GPT-2 splits text into pieces with the regular expression
//
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//
// before BPE runs on each piece. ForEachGpt2Pretoken reproduces what Python's
// `regex` module (and tiktoken, and Hugging Face's ByteLevel pre-tokenizer)
// match with it: \s is the Unicode White_Space property, \p{L} and \p{N} the
// general categories L* and N*, as ICU reports them.
#ifndef MOONDREAM_MODEL_TOKENIZER_PRETOKENIZE_H_
#define MOONDREAM_MODEL_TOKENIZER_PRETOKENIZE_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace md {

// What a UTF-8 lead byte promises: how many continuation bytes follow, and the
// range the first of them must fall in (Unicode Table 3-7, which rules out
// overlong forms, surrogates and code points above U+10FFFF). The later
// continuation bytes are always 0x80..0xBF.
struct Utf8Lead {
  int n_continuation = -1;  // -1: the byte cannot start a character
  uint8_t lo = 0x80;
  uint8_t hi = 0xBF;
};

constexpr Utf8Lead Utf8LeadOf(uint8_t byte) {
  if (byte < 0x80) return {0, 0x80, 0xBF};
  if (byte >= 0xC2 && byte <= 0xDF) return {1, 0x80, 0xBF};
  if (byte == 0xE0) return {2, 0xA0, 0xBF};
  if (byte == 0xED) return {2, 0x80, 0x9F};
  if (byte >= 0xE1 && byte <= 0xEF) return {2, 0x80, 0xBF};
  if (byte == 0xF0) return {3, 0x90, 0xBF};
  if (byte >= 0xF1 && byte <= 0xF3) return {3, 0x80, 0xBF};
  if (byte == 0xF4) return {3, 0x80, 0x8F};
  return {};
}

// Decodes the code point at `s`, which must start a well-formed UTF-8
// character; sets `*len` to its length in bytes.
inline char32_t DecodeUtf8(const unsigned char* s, size_t* len) {
  const unsigned c = s[0];
  if (c < 0x80) {
    *len = 1;
    return c;
  }
  if (c < 0xE0) {
    *len = 2;
    return ((c & 0x1Fu) << 6) | (s[1] & 0x3Fu);
  }
  if (c < 0xF0) {
    *len = 3;
    return ((c & 0x0Fu) << 12) | ((s[1] & 0x3Fu) << 6) | (s[2] & 0x3Fu);
  }
  *len = 4;
  return ((c & 0x07u) << 18) | ((s[1] & 0x3Fu) << 12) | ((s[2] & 0x3Fu) << 6) |
         (s[3] & 0x3Fu);
}

// OK for well-formed UTF-8; otherwise InvalidArgument naming the byte offset
// of the first ill-formed sequence and what is wrong with it.
absl::Status ValidateUtf8(absl::string_view text);

// The classes the GPT-2 pattern distinguishes.
enum class CharClass : uint8_t {
  kLetter,  // \p{L}
  kNumber,  // \p{N}
  kSpace,   // \s (White_Space)
  kOther,   // [^\s\p{L}\p{N}]: punctuation, symbols, marks, controls, ...
};

CharClass ClassifyCodePoint(char32_t c);

// Calls `piece` for each GPT-2 pre-token of `text`, in order; the pieces are
// views into `text` and cover it exactly. `text` must be valid UTF-8 (check
// it with ValidateUtf8 first).
void ForEachGpt2Pretoken(absl::string_view text,
                         absl::FunctionRef<void(absl::string_view)> piece);

// The pre-tokens of `text` as a list; InvalidArgument for invalid UTF-8.
absl::StatusOr<std::vector<absl::string_view>> Gpt2Pretokenize(
    absl::string_view text);

}  // namespace md

#endif  // MOONDREAM_MODEL_TOKENIZER_PRETOKENIZE_H_
