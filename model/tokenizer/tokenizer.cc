#include "model/tokenizer/tokenizer.h"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <queue>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/files.h"
#include "base/status_macros.h"
#include "model/tokenizer/detokenizer.h"
#include "model/tokenizer/pretokenize.h"
#include "model/tokenizer/tokenizer_internal.h"

namespace md {
namespace {

using Json = nlohmann::json;

constexpr int32_t kNoRank = INT32_MAX;
// Pieces up to this many bytes merge in fixed arrays; longer ones (rare: a
// long word or a run of symbols) use a heap.
constexpr int kShortPiece = 64;

// GPT-2's bytes_to_unicode: each byte is one printable code point. Printable
// Latin-1 bytes stand for themselves; the other 68 bytes map, in byte order,
// to U+0100..U+0143.
struct ByteLevel {
  std::array<std::string, 256> byte_to_piece;     // UTF-8 of the code point
  std::array<int16_t, 0x144> code_point_to_byte;  // -1: not a byte's

  ByteLevel() {
    code_point_to_byte.fill(-1);
    int n_shifted = 0;
    for (int byte = 0; byte < 256; ++byte) {
      const bool printable = (byte >= '!' && byte <= '~') ||
                             (byte >= 0xA1 && byte <= 0xAC) ||
                             (byte >= 0xAE && byte <= 0xFF);
      const int code_point = printable ? byte : 0x100 + n_shifted++;
      code_point_to_byte[code_point] = static_cast<int16_t>(byte);
      std::string& utf8 = byte_to_piece[byte];
      if (code_point < 0x80) {
        utf8.push_back(static_cast<char>(code_point));
      } else {
        utf8.push_back(static_cast<char>(0xC0 | (code_point >> 6)));
        utf8.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
      }
    }
  }
};

const ByteLevel& ByteLevelTables() {
  static const ByteLevel* const tables = new ByteLevel();
  return *tables;
}

// The bytes a byte-level piece stands for. A piece with a code point outside
// the byte alphabet stands for its own UTF-8 (Hugging Face's ByteLevel
// decoder does the same).
std::string PieceToBytes(absl::string_view piece) {
  if (!ValidateUtf8(piece).ok()) return std::string(piece);
  const ByteLevel& tables = ByteLevelTables();
  std::string bytes;
  bytes.reserve(piece.size());
  const auto* s = reinterpret_cast<const unsigned char*>(piece.data());
  for (size_t i = 0; i < piece.size();) {
    size_t len = 0;
    const char32_t c = DecodeUtf8(s + i, &len);
    const int byte = c < tables.code_point_to_byte.size()
                         ? tables.code_point_to_byte[c]
                         : -1;
    if (byte < 0) return std::string(piece);
    bytes.push_back(static_cast<char>(byte));
    i += len;
  }
  return bytes;
}

}  // namespace

using tokenizer_internal::Invalid;
using tokenizer_internal::kMaxTokenId;

absl::StatusOr<Tokenizer> Tokenizer::Build(RawVocabulary raw,
                                           const TokenizerOptions& options,
                                           absl::string_view source) {
  const int64_t n_merges_in_file = static_cast<int64_t>(raw.merges.size());
  int64_t n_merges = n_merges_in_file;
  int64_t id_limit = kMaxTokenId;
  std::string cut_note;
  if (options.max_merges.has_value()) {
    n_merges = *options.max_merges;
    if (n_merges < 0 || n_merges > n_merges_in_file) {
      return Invalid(
          source, absl::StrCat("max_merges ", n_merges, " is outside 0..",
                               n_merges_in_file, " (the merges in the file)"));
    }
    id_limit = 256 + n_merges;
    cut_note = absl::StrCat(" (max_merges ", n_merges,
                            " cuts the vocabulary to ids < ", id_limit, ")");
  }

  Tokenizer tokenizer;
  std::vector<Token>& tokens = tokenizer.tokens_;
  auto grow_to = [&tokens](int64_t id) {
    if (id >= static_cast<int64_t>(tokens.size())) tokens.resize(id + 1);
  };
  absl::flat_hash_map<std::string, int> piece_to_id;
  piece_to_id.reserve(raw.vocab.size());
  for (auto& [piece, id] : raw.vocab) {
    if (piece.empty())
      return Invalid(source, "the vocabulary has an empty token");
    if (id < 0 || id >= kMaxTokenId) {
      return Invalid(source, absl::StrCat("token '", piece, "' has id ", id,
                                          ", outside 0..", kMaxTokenId - 1));
    }
    if (id >= id_limit) continue;
    grow_to(id);
    Token& token = tokens[id];
    if (token.known) {
      return Invalid(source, absl::StrCat("tokens '", token.piece, "' and '",
                                          piece, "' share id ", id));
    }
    if (!piece_to_id.emplace(piece, static_cast<int>(id)).second) {
      return Invalid(source, absl::StrCat("token '", piece, "' appears twice"));
    }
    token.known = true;
    token.in_model = true;
    token.bytes = PieceToBytes(piece);
    token.piece = std::move(piece);
  }

  const ByteLevel& byte_level = ByteLevelTables();
  for (int byte = 0; byte < 256; ++byte) {
    auto it = piece_to_id.find(byte_level.byte_to_piece[byte]);
    if (it == piece_to_id.end()) {
      return Invalid(source,
                     absl::StrCat("the vocabulary has no token for "
                                  "byte ",
                                  byte, " ('", byte_level.byte_to_piece[byte],
                                  "')", cut_note));
    }
    tokenizer.byte_to_id_[byte] = it->second;
  }

  tokenizer.merges_.reserve(n_merges);
  tokenizer.merges_by_rank_.reserve(n_merges);
  for (int64_t rank = 0; rank < n_merges; ++rank) {
    const auto& [left, right] = raw.merges[rank];
    auto where = [&, &left = left, &right = right] {
      return absl::StrCat("merge ", rank, " ('", left, " ", right, "')");
    };
    int ids[3];
    const std::string merged = absl::StrCat(left, right);
    const std::string* pieces[3] = {&left, &right, &merged};
    for (int k = 0; k < 3; ++k) {
      auto it = piece_to_id.find(*pieces[k]);
      if (it == piece_to_id.end()) {
        return Invalid(
            source,
            absl::StrCat(where(), ": ", k == 2 ? "the merged token '" : "'",
                         *pieces[k], "' is not in the vocabulary", cut_note));
      }
      ids[k] = it->second;
    }
    auto [it, inserted] = tokenizer.merges_.emplace(
        PairKey(ids[0], ids[1]), Merge{static_cast<int32_t>(rank), ids[2]});
    if (!inserted) {
      return Invalid(source,
                     absl::StrCat(where(), " repeats merge ", it->second.rank));
    }
    tokenizer.merges_by_rank_.emplace_back(ids[0], ids[1]);
  }

  for (AddedToken& added : raw.added) {
    if (added.id >= id_limit) continue;
    for (const AddedToken& other : tokenizer.added_tokens_) {
      if (other.id == added.id || other.content == added.content) {
        return Invalid(
            source, absl::StrCat("added tokens '", other.content, "' (id ",
                                 other.id, ") and '", added.content, "' (id ",
                                 added.id, ") clash"));
      }
    }
    grow_to(added.id);
    Token& token = tokens[added.id];
    token.known = true;
    token.bytes = added.content;
    tokenizer.added_tokens_.push_back(std::move(added));
  }
  return tokenizer;
}

void Tokenizer::EncodePiece(absl::string_view piece,
                            std::vector<int>* ids) const {
  if (piece.size() == 1) {
    ids->push_back(byte_to_id_[static_cast<uint8_t>(piece[0])]);
  } else if (piece.size() <= kShortPiece) {
    EncodeShortPiece(piece, ids);
  } else {
    EncodeLongPiece(piece, ids);
  }
}

// Symbols and the merge of each adjacent pair in arrays; each step merges
// the lowest-ranked pair (the leftmost of equals) and updates its neighbours.
void Tokenizer::EncodeShortPiece(absl::string_view piece,
                                 std::vector<int>* ids) const {
  int n = static_cast<int>(piece.size());
  int symbols[kShortPiece];
  Merge pairs[kShortPiece];  // pairs[i] joins symbols[i] and symbols[i + 1]
  auto lookup = [this](int left, int right) {
    const Merge* merge = FindMerge(left, right);
    return merge != nullptr ? *merge : Merge{kNoRank, -1};
  };
  for (int i = 0; i < n; ++i) {
    symbols[i] = byte_to_id_[static_cast<uint8_t>(piece[i])];
  }
  for (int i = 0; i + 1 < n; ++i) pairs[i] = lookup(symbols[i], symbols[i + 1]);
  while (n > 1) {
    int best = 0;
    for (int i = 1; i + 1 < n; ++i) {
      if (pairs[i].rank < pairs[best].rank) best = i;
    }
    if (pairs[best].rank == kNoRank) break;
    symbols[best] = pairs[best].id;
    for (int i = best + 1; i + 1 < n; ++i) symbols[i] = symbols[i + 1];
    for (int i = best + 1; i + 2 < n; ++i) pairs[i] = pairs[i + 1];
    --n;
    if (best > 0) pairs[best - 1] = lookup(symbols[best - 1], symbols[best]);
    if (best + 1 < n) pairs[best] = lookup(symbols[best], symbols[best + 1]);
  }
  ids->insert(ids->end(), symbols, symbols + n);
}

// The same merges for long pieces in O(n log n): symbols in a linked list,
// candidate pairs in a min-heap by (rank, position); entries made stale by
// an earlier merge are skipped when popped.
void Tokenizer::EncodeLongPiece(absl::string_view piece,
                                std::vector<int>* ids) const {
  const int n = static_cast<int>(piece.size());
  struct Symbol {
    int id;
    int prev;
    int next;  // -1 at the ends; id -1 once merged away
  };
  struct Candidate {
    int32_t rank;
    int pos;  // the left symbol
    int left;
    int right;
    bool operator>(const Candidate& other) const {
      return rank != other.rank ? rank > other.rank : pos > other.pos;
    }
  };
  std::vector<Symbol> symbols(n);
  for (int i = 0; i < n; ++i) {
    symbols[i] = {byte_to_id_[static_cast<uint8_t>(piece[i])], i - 1,
                  i + 1 < n ? i + 1 : -1};
  }
  std::priority_queue<Candidate, std::vector<Candidate>,
                      std::greater<Candidate>>
      heap;
  auto push = [&](int pos) {
    const int next = symbols[pos].next;
    if (next < 0) return;
    if (const Merge* merge = FindMerge(symbols[pos].id, symbols[next].id)) {
      heap.push({merge->rank, pos, symbols[pos].id, symbols[next].id});
    }
  };
  for (int i = 0; i + 1 < n; ++i) push(i);
  while (!heap.empty()) {
    const Candidate top = heap.top();
    heap.pop();
    Symbol& left = symbols[top.pos];
    if (left.id != top.left || left.next < 0 ||
        symbols[left.next].id != top.right) {
      continue;  // stale
    }
    Symbol& right = symbols[left.next];
    left.id = FindMerge(top.left, top.right)->id;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    right.id = -1;
    if (left.prev >= 0) push(left.prev);
    push(top.pos);
  }
  for (int i = 0; i >= 0; i = symbols[i].next) ids->push_back(symbols[i].id);
}

absl::StatusOr<std::vector<int>> Tokenizer::Encode(
    absl::string_view text) const {
  RETURN_IF_ERROR(ValidateUtf8(text));
  std::vector<int> ids;
  ids.reserve(text.size() / 4 + 4);
  ForEachGpt2Pretoken(
      text, [&](absl::string_view piece) { EncodePiece(piece, &ids); });
  return ids;
}

absl::StatusOr<absl::string_view> Tokenizer::TokenBytes(int id) const {
  if (id < 0 || id >= vocab_size() || !tokens_[id].known) {
    return absl::InvalidArgumentError(absl::StrCat(
        "token id ", id, " is not in the vocabulary (", vocab_size(), " ids)"));
  }
  return absl::string_view(tokens_[id].bytes);
}

absl::StatusOr<std::string> Tokenizer::Decode(absl::Span<const int> ids) const {
  std::string bytes;
  for (size_t i = 0; i < ids.size(); ++i) {
    absl::StatusOr<absl::string_view> token = TokenBytes(ids[i]);
    if (!token.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "cannot decode position ", i, ": ", token.status().message()));
    }
    bytes.append(token->data(), token->size());
  }
  return ToValidUtf8(bytes);
}

absl::StatusOr<int> Tokenizer::SpecialTokenId(absl::string_view content) const {
  for (const AddedToken& added : added_tokens_) {
    if (added.content == content) return added.id;
  }
  return absl::NotFoundError(
      absl::StrCat("no added token '", content, "' in the vocabulary"));
}

}  // namespace md
