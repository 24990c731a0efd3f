// GPT-2 byte-level BPE: text <-> token ids, without LibTorch.
//
// Encoding: UTF-8 text -> GPT-2 pre-tokens (model/tokenizer/pretokenize.h) ->
// each piece's bytes start as one token per byte -> BPE merges, lowest rank
// first (leftmost on ties), until no adjacent pair has a merge. Decoding maps
// ids back to bytes and the bytes to UTF-8 text.
//
// Loaded from a Hugging Face tokenizer.json (BPE model, ByteLevel
// pre-tokenizer, added tokens) or from GPT-2's encoder.json + vocab.bpe.
// Vocabulary keys and merges are byte-level strings: each byte is one
// printable code point (GPT-2's bytes_to_unicode, e.g. ' ' -> 'Ġ').
//
// User text is plain text: Encode never produces an added or special token,
// so "<|endoftext|>" in a question stays seven ordinary tokens. Callers that
// need a special token look its id up with SpecialTokenId and place it
// themselves. (Hugging Face would split non-special added tokens, such as
// CodeGen's whitespace runs, out of the text; we do not.)
//
// A Tokenizer is immutable once loaded: Encode and Decode are thread-safe.
#ifndef MOONDREAM_MODEL_TOKENIZER_TOKENIZER_H_
#define MOONDREAM_MODEL_TOKENIZER_TOKENIZER_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace md {

struct TokenizerOptions {
  // With a value M, only the first M merges (rank < M) apply and the
  // vocabulary is cut to ids < 256 + M: GPT-2 "cut to its first M merges",
  // whose ids above 255 are its merges in rank order. Added tokens at or
  // above the cut are dropped. 0 <= M <= the number of merges.
  std::optional<int> max_merges;
};

// An entry of tokenizer.json's "added_tokens" (GPT-2's <|endoftext|>).
struct AddedToken {
  int id = 0;
  std::string content;  // the text it stands for, not byte-level encoded
  bool special = false;
};

class Tokenizer {
 public:
  // A Hugging Face tokenizer.json file, or its text. Errors: NotFound for a
  // missing file, InvalidArgument for a malformed one, Unimplemented for
  // settings this tokenizer does not implement (a normalizer, another
  // pre-tokenizer, add_prefix_space, dropout, ...).
  static absl::StatusOr<Tokenizer> FromHuggingFaceJson(
      const std::string& path, const TokenizerOptions& options = {});
  static absl::StatusOr<Tokenizer> FromHuggingFaceJsonText(
      absl::string_view json, const TokenizerOptions& options = {},
      absl::string_view source = "tokenizer.json");

  // GPT-2's encoder.json (token -> id) and vocab.bpe (a "#version" line,
  // then one "a b" merge a line, in rank order). "<|endoftext|>", when the
  // vocabulary has it, becomes a special added token, as in tokenizer.json.
  static absl::StatusOr<Tokenizer> FromGpt2Files(
      const std::string& encoder_json_path, const std::string& vocab_bpe_path,
      const TokenizerOptions& options = {});

  // Token ids of `text`, which must be valid UTF-8 (else InvalidArgument
  // naming the byte offset). Never produces added or special tokens.
  absl::StatusOr<std::vector<int>> Encode(absl::string_view text) const;

  // The text of `ids`: their bytes joined, then read as UTF-8 with each
  // ill-formed sequence replaced by U+FFFD (as Hugging Face and Python do).
  // Added and special tokens decode to their content. InvalidArgument for an
  // id that is not in the vocabulary.
  absl::StatusOr<std::string> Decode(absl::Span<const int> ids) const;

  // The raw bytes of one token (possibly part of a UTF-8 character).
  absl::StatusOr<absl::string_view> TokenBytes(int id) const;

  // The id of the added token whose content is `content` (e.g.
  // "<|endoftext|>"); NotFound when there is none.
  absl::StatusOr<int> SpecialTokenId(absl::string_view content) const;

  // One more than the largest id in use.
  int vocab_size() const { return static_cast<int>(tokens_.size()); }
  // Merges that apply (after max_merges).
  int n_merges() const { return static_cast<int>(merges_by_rank_.size()); }
  const std::vector<AddedToken>& added_tokens() const { return added_tokens_; }

  // This tokenizer as a Hugging Face tokenizer.json document (BPE model,
  // ByteLevel pre-tokenizer and decoder, vocab in id order, merges in rank
  // order, added tokens): what FromHuggingFaceJsonText reads back into an
  // identical tokenizer.
  absl::StatusOr<std::string> ToHuggingFaceJson() const;

 private:
  struct Token {
    bool known = false;     // some vocabulary entry or added token has this id
    bool in_model = false;  // it is a model vocabulary entry (has a piece)
    std::string piece;      // its byte-level vocabulary key
    std::string bytes;      // what it decodes to
  };
  struct Merge {
    int32_t rank;
    int32_t id;  // the merged token
  };
  struct RawVocabulary;

  Tokenizer() = default;
  static absl::StatusOr<Tokenizer> Build(RawVocabulary raw,
                                         const TokenizerOptions& options,
                                         absl::string_view source);

  static uint64_t PairKey(int left, int right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
           static_cast<uint32_t>(right);
  }
  const Merge* FindMerge(int left, int right) const {
    auto it = merges_.find(PairKey(left, right));
    return it == merges_.end() ? nullptr : &it->second;
  }
  // Appends the BPE tokens of one pre-token.
  void EncodePiece(absl::string_view piece, std::vector<int>* ids) const;
  void EncodeShortPiece(absl::string_view piece, std::vector<int>* ids) const;
  void EncodeLongPiece(absl::string_view piece, std::vector<int>* ids) const;

  std::vector<Token> tokens_;  // by id
  std::array<int, 256> byte_to_id_{};
  absl::flat_hash_map<uint64_t, Merge> merges_;  // PairKey(left, right) ->
  std::vector<std::pair<int, int>> merges_by_rank_;
  std::vector<AddedToken> added_tokens_;
};

// Writes `tokenizer` as a Hugging Face tokenizer.json at `path`, e.g. GPT-2
// loaded with max_merges = 1792 for a model directory with a 2048-token
// vocabulary.
absl::Status WriteHuggingFaceTokenizerJson(const Tokenizer& tokenizer,
                                           const std::string& path);

}  // namespace md

#endif  // MOONDREAM_MODEL_TOKENIZER_TOKENIZER_H_
