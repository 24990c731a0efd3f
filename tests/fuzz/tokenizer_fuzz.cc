// Fuzzes the tokenizer (model/tokenizer/tokenizer.h) and streaming
// detokenization (model/tokenizer/detokenizer.h).
//
// Tokenizers: the shipped tiny-random one (models/tiny-random, 2048 tokens)
// and the full GPT-2 one of the tests (tests/data/tokenizer: 50257 tokens,
// <|endoftext|> as a special added token), both loaded once.
//
// Per input, what holds by design:
//   - the input is valid UTF-8 exactly when Encode succeeds (else
//     InvalidArgument); valid text encodes to ids in the vocabulary, never to
//     an added token, and round-trips: the tokens' bytes and Decode give the
//     text back, and so does streaming the ids;
//   - the input bytes read as ids (see IdsOf) stream out, Flush included, as
//     exactly Decode of the accepted ids; every chunk is whole, valid UTF-8;
//     unknown ids are refused by Push and Decode alike;
//   - UTF-8 repair (ToValidUtf8, Utf8Repairer) replaces each maximal
//     ill-formed subpart by one U+FFFD, checked against an independent
//     implementation below, however the bytes are split into chunks.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "model/tokenizer/detokenizer.h"
#include "model/tokenizer/tokenizer.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

constexpr char kReplacement[] = "\xEF\xBF\xBD";  // U+FFFD

const md::Tokenizer* tiny = nullptr;
const md::Tokenizer* gpt2 = nullptr;

const md::Tokenizer* Load(const std::string& path) {
  absl::StatusOr<md::Tokenizer> tokenizer =
      md::Tokenizer::FromHuggingFaceJson(path);
  FUZZ_CHECK_MSG(tokenizer.ok(), tokenizer.status().ToString());
  return new md::Tokenizer(*std::move(tokenizer));
}

// How many bytes from s[i] on follow the pattern of a well-formed UTF-8
// character (Unicode Table 3-7, written out), and in `*length` how many it
// needs: 0 when s[i] cannot start one.
size_t MatchChar(absl::string_view s, size_t i, size_t* length) {
  auto at = [&](size_t k) -> int {
    return i + k < s.size() ? static_cast<uint8_t>(s[i + k]) : -1;
  };
  auto in = [](int b, int lo, int hi) { return b >= lo && b <= hi; };
  const int b0 = at(0);
  int lo = 0x80, hi = 0xBF;  // the range of the first continuation byte
  if (in(b0, 0x00, 0x7F)) {
    *length = 1;
  } else if (in(b0, 0xC2, 0xDF)) {
    *length = 2;
  } else if (b0 == 0xE0) {
    *length = 3, lo = 0xA0;
  } else if (in(b0, 0xE1, 0xEC) || in(b0, 0xEE, 0xEF)) {
    *length = 3;
  } else if (b0 == 0xED) {
    *length = 3, hi = 0x9F;
  } else if (b0 == 0xF0) {
    *length = 4, lo = 0x90;
  } else if (in(b0, 0xF1, 0xF3)) {
    *length = 4;
  } else if (b0 == 0xF4) {
    *length = 4, hi = 0x8F;
  } else {
    *length = 0;
    return 0;
  }
  size_t matched = 1;
  while (matched < *length &&
         in(at(matched), matched == 1 ? lo : 0x80, matched == 1 ? hi : 0xBF)) {
    ++matched;
  }
  return matched;
}

bool IsValidUtf8(absl::string_view s) {
  for (size_t i = 0; i < s.size();) {
    size_t length;
    if (MatchChar(s, i, &length) != length || length == 0) return false;
    i += length;
  }
  return true;
}

// The Unicode "maximal subpart" practice: where no whole character starts,
// the longest start of one (at least one byte) becomes one U+FFFD.
std::string ReferenceRepair(absl::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    size_t length;
    const size_t matched = MatchChar(s, i, &length);
    if (length > 0 && matched == length) {
      out.append(s.data() + i, length);
      i += length;
    } else {
      out.append(kReplacement);
      i += std::max<size_t>(matched, 1);
    }
  }
  return out;
}

// Two input bytes per id, little-endian, spread over the vocabulary and a
// few ids on either side of it (negative ones, ones past the end).
std::vector<int> IdsOf(absl::string_view bytes, int vocab_size) {
  std::vector<int> ids;
  for (size_t i = 0; i + 1 < bytes.size(); i += 2) {
    const int v = static_cast<uint8_t>(bytes[i]) |
                  static_cast<uint8_t>(bytes[i + 1]) << 8;
    ids.push_back(v % (vocab_size + 8) - 4);
  }
  return ids;
}

bool IsAddedToken(const md::Tokenizer& tokenizer, int id) {
  const std::vector<md::AddedToken>& added = tokenizer.added_tokens();
  return std::any_of(added.begin(), added.end(),
                     [id](const md::AddedToken& t) { return t.id == id; });
}

// Streams `ids`; returns the text, each chunk checked to be valid UTF-8.
// Pushes that fail must be exactly the ids TokenBytes does not know.
std::string Stream(const md::Tokenizer& tokenizer,
                   md::StreamingDetokenizer& detokenizer,
                   const std::vector<int>& ids, std::vector<int>* accepted) {
  std::string text;
  for (int id : ids) {
    const absl::StatusOr<std::string> chunk = detokenizer.Push(id);
    const bool known = tokenizer.TokenBytes(id).ok();
    FUZZ_CHECK(chunk.ok() == known);
    if (!chunk.ok()) {
      FUZZ_CHECK(chunk.status().code() == absl::StatusCode::kInvalidArgument);
      continue;
    }
    FUZZ_CHECK(IsValidUtf8(*chunk));
    text += *chunk;
    accepted->push_back(id);
  }
  const std::string tail = detokenizer.Flush();
  FUZZ_CHECK(IsValidUtf8(tail));
  return text + tail;
}

void CheckEncode(const md::Tokenizer& tokenizer, absl::string_view text,
                 bool valid) {
  const absl::StatusOr<std::vector<int>> ids = tokenizer.Encode(text);
  FUZZ_CHECK_MSG(ids.ok() == valid, ids.status().ToString());
  if (!ids.ok()) {
    FUZZ_CHECK(ids.status().code() == absl::StatusCode::kInvalidArgument);
    return;
  }
  std::string joined;
  for (int id : *ids) {
    FUZZ_CHECK(id >= 0 && id < tokenizer.vocab_size());
    FUZZ_CHECK(!IsAddedToken(tokenizer, id));
    const absl::StatusOr<absl::string_view> bytes = tokenizer.TokenBytes(id);
    FUZZ_CHECK(bytes.ok());
    FUZZ_CHECK(!bytes->empty());
    joined.append(bytes->data(), bytes->size());
  }
  FUZZ_CHECK(joined == text);
  const absl::StatusOr<std::string> decoded = tokenizer.Decode(*ids);
  FUZZ_CHECK_MSG(decoded.ok(), decoded.status().ToString());
  FUZZ_CHECK(*decoded == text);

  md::StreamingDetokenizer detokenizer(&tokenizer);
  std::vector<int> accepted;
  FUZZ_CHECK(Stream(tokenizer, detokenizer, *ids, &accepted) == text);
  FUZZ_CHECK(accepted == *ids);
}

void CheckIds(const md::Tokenizer& tokenizer, absl::string_view bytes) {
  const std::vector<int> ids = IdsOf(bytes, tokenizer.vocab_size());
  md::StreamingDetokenizer detokenizer(&tokenizer);
  std::vector<int> accepted;
  const std::string text = Stream(tokenizer, detokenizer, ids, &accepted);

  const absl::StatusOr<std::string> decoded = tokenizer.Decode(accepted);
  FUZZ_CHECK_MSG(decoded.ok(), decoded.status().ToString());
  FUZZ_CHECK(text == *decoded);
  std::string joined;
  for (int id : accepted) {
    const absl::string_view piece = *tokenizer.TokenBytes(id);
    joined.append(piece.data(), piece.size());
  }
  FUZZ_CHECK(text == ReferenceRepair(joined));
  if (accepted.size() != ids.size()) {
    const absl::StatusOr<std::string> refused = tokenizer.Decode(ids);
    FUZZ_CHECK(!refused.ok());
    FUZZ_CHECK(refused.status().code() == absl::StatusCode::kInvalidArgument);
  }

  // After Flush the detokenizer starts afresh: a second stream, the ids in
  // reverse, comes out as if on a new one.
  std::vector<int> reversed(accepted.rbegin(), accepted.rend());
  std::vector<int> accepted_again;
  const std::string again =
      Stream(tokenizer, detokenizer, reversed, &accepted_again);
  const absl::StatusOr<std::string> decoded_again = tokenizer.Decode(reversed);
  FUZZ_CHECK(decoded_again.ok());
  FUZZ_CHECK(again == *decoded_again);
}

void CheckRepair(absl::string_view bytes, bool valid) {
  const std::string expected = ReferenceRepair(bytes);
  FUZZ_CHECK((expected == bytes) == valid);
  FUZZ_CHECK(md::ToValidUtf8(bytes) == expected);

  // Any split into chunks gives the same text: byte by byte, and in chunks of
  // a size the input picks.
  const size_t chunk_sizes[] = {1, 2 + bytes.size() % 5};
  for (size_t chunk : chunk_sizes) {
    md::Utf8Repairer repairer;
    std::string out;
    for (size_t i = 0; i < bytes.size(); i += chunk) {
      std::string piece;
      repairer.Append(bytes.substr(i, chunk), &piece);
      FUZZ_CHECK(IsValidUtf8(piece));
      out += piece;
    }
    repairer.Flush(&out);
    FUZZ_CHECK(!repairer.has_pending());
    FUZZ_CHECK(out == expected);
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  tiny = Load(MD_SOURCE_DIR "/models/tiny-random/tokenizer.json");
  gpt2 = Load(MD_SOURCE_DIR "/tests/data/tokenizer/tokenizer.json");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  const bool valid = IsValidUtf8(bytes);
  CheckRepair(bytes, valid);
  for (const md::Tokenizer* tokenizer : {tiny, gpt2}) {
    CheckEncode(*tokenizer, bytes, valid);
    CheckIds(*tokenizer, bytes);
  }
  return 0;
}
