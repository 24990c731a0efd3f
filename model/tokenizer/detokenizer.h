// Streaming detokenization: token ids in one at a time, whole UTF-8
// characters out.
//
// A byte-level BPE token can end in the middle of a character (an emoji is
// often 2-4 tokens), so a stream must hold back a partial character until its
// last byte arrives. The text streamed out, Flush included, is exactly
// Tokenizer::Decode of all the ids.
#ifndef MOONDREAM_MODEL_TOKENIZER_DETOKENIZER_H_
#define MOONDREAM_MODEL_TOKENIZER_DETOKENIZER_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "model/tokenizer/tokenizer.h"

namespace md {

// Turns a byte stream into valid UTF-8: well-formed characters pass through,
// each maximal ill-formed subsequence becomes one U+FFFD (the Unicode
// "maximal subpart" practice, as Python's errors="replace" and Rust's
// from_utf8_lossy do), and a partial character waits for its next bytes.
class Utf8Repairer {
 public:
  // Appends to `out` every character that `bytes` completes.
  void Append(absl::string_view bytes, std::string* out);
  // Ends the stream: a pending partial character becomes U+FFFD.
  void Flush(std::string* out);
  bool has_pending() const { return n_pending_ > 0; }

 private:
  char pending_[4] = {};
  int n_pending_ = 0;  // bytes of a partial character held back
  int n_missing_ = 0;  // continuation bytes it still needs
  uint8_t lo_ = 0x80;  // the range its next byte must fall in
  uint8_t hi_ = 0xBF;
};

// `bytes` as valid UTF-8, ill-formed sequences replaced by U+FFFD.
std::string ToValidUtf8(absl::string_view bytes);

// Decodes a stream of token ids. Not thread-safe; one per stream.
class StreamingDetokenizer {
 public:
  // `tokenizer` must outlive this object.
  explicit StreamingDetokenizer(const Tokenizer* tokenizer)
      : tokenizer_(tokenizer) {}

  // The text that `id` completes: zero or more whole characters (empty while
  // a multi-byte character is still partial). InvalidArgument for an id not
  // in the vocabulary; the stream is then unchanged.
  absl::StatusOr<std::string> Push(int id);

  // Ends the stream and returns what is left: a partial character that never
  // completed comes out as U+FFFD. The detokenizer can then start a new
  // stream.
  std::string Flush();

 private:
  const Tokenizer* tokenizer_;
  Utf8Repairer repairer_;
};

}  // namespace md

#endif  // MOONDREAM_MODEL_TOKENIZER_DETOKENIZER_H_
