#include "model/tokenizer.h"

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
#include "model/detokenizer.h"
#include "model/pretokenize.h"
#include "model/status_macros.h"

namespace md {
namespace {

using Json = nlohmann::json;

// Ids at or above this are refused, so a hostile file cannot make us
// allocate a huge table.
constexpr int64_t kMaxTokenId = int64_t{1} << 24;
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

absl::StatusOr<std::string> ReadFile(const std::string& path,
                                     absl::string_view what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("cannot open ", what, " '", path, "'"));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    return absl::DataLossError(
        absl::StrCat("error reading ", what, " '", path, "'"));
  }
  return std::move(text).str();
}

absl::Status Invalid(absl::string_view source, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": ", message));
}

absl::Status Unsupported(absl::string_view source, absl::string_view message) {
  return absl::UnimplementedError(absl::StrCat(source, ": ", message));
}

// A JSON value in a message: short and on one line.
std::string Show(const Json& value) {
  std::string text = value.dump(-1, ' ', /*ensure_ascii=*/false,
                                Json::error_handler_t::replace);
  if (text.size() > 60) text = absl::StrCat(text.substr(0, 57), "...");
  return text;
}

absl::StatusOr<Json> ParseJson(absl::string_view text,
                               absl::string_view source) {
  try {
    return Json::parse(text.begin(), text.end());
  } catch (const Json::exception& e) {
    return Invalid(source, absl::StrCat("not valid JSON: ", e.what()));
  }
}

// A token -> id object ("model.vocab", encoder.json).
absl::Status ReadVocab(const Json& vocab, absl::string_view source,
                       absl::string_view where,
                       std::vector<std::pair<std::string, int64_t>>* out) {
  if (!vocab.is_object()) {
    return Invalid(source, absl::StrCat(where,
                                        " must be an object mapping "
                                        "tokens to ids"));
  }
  out->reserve(vocab.size());
  for (const auto& [piece, id] : vocab.items()) {
    if (!id.is_number_integer()) {
      return Invalid(source,
                     absl::StrCat(where, ": the id of '", piece,
                                  "' must be an integer, not ", Show(id)));
    }
    out->emplace_back(piece, id.get<int64_t>());
  }
  return absl::OkStatus();
}

// "a b" -> {a, b}; one space, two non-empty symbols.
bool SplitMerge(absl::string_view line,
                std::pair<std::string, std::string>* merge) {
  const size_t space = line.find(' ');
  if (space == absl::string_view::npos || space == 0 ||
      space + 1 == line.size() ||
      line.find(' ', space + 1) != absl::string_view::npos) {
    return false;
  }
  merge->first = std::string(line.substr(0, space));
  merge->second = std::string(line.substr(space + 1));
  return true;
}

// A setting that must be absent, null or one of the harmless `allowed`
// values, else Unimplemented.
absl::Status RequireDefault(const Json& object, const char* key,
                            const std::vector<Json>& allowed,
                            absl::string_view source, absl::string_view where) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return absl::OkStatus();
  for (const Json& value : allowed) {
    if (*it == value) return absl::OkStatus();
  }
  return Unsupported(source, absl::StrCat(where, ".", key, " = ", Show(*it),
                                          " is not supported"));
}

absl::Status CheckByteLevel(const Json& doc, const char* key, bool required,
                            absl::string_view source) {
  auto it = doc.find(key);
  if (it == doc.end() || it->is_null()) {
    if (!required) return absl::OkStatus();
    return Unsupported(
        source, absl::StrCat("no ", key, ": a ByteLevel one is required"));
  }
  if (!it->is_object() || !it->contains("type") ||
      (*it)["type"] != "ByteLevel") {
    return Unsupported(source, absl::StrCat(key, " ", Show(*it),
                                            " is not supported (only "
                                            "ByteLevel)"));
  }
  if (std::string(key) != "pre_tokenizer") return absl::OkStatus();
  // Hugging Face's defaults are add_prefix_space = true, use_regex = true.
  auto prefix = it->find("add_prefix_space");
  if (prefix == it->end() || *prefix != false) {
    return Unsupported(
        source, "pre_tokenizer.add_prefix_space must be false (GPT-2's)");
  }
  return RequireDefault(*it, "use_regex", {true}, source, key);
}

}  // namespace

// What a file says, before it is checked and indexed.
struct Tokenizer::RawVocabulary {
  std::vector<std::pair<std::string, int64_t>> vocab;       // byte-level pieces
  std::vector<std::pair<std::string, std::string>> merges;  // rank order
  std::vector<AddedToken> added;
};

namespace {

absl::Status ParseHuggingFaceDoc(
    const Json& doc, absl::string_view source,
    std::vector<std::pair<std::string, int64_t>>* vocab,
    std::vector<std::pair<std::string, std::string>>* merges,
    std::vector<AddedToken>* added) {
  if (!doc.is_object())
    return Invalid(source, "the top level must be an object");
  auto model_it = doc.find("model");
  if (model_it == doc.end() || !model_it->is_object()) {
    return Invalid(source, "no \"model\" object");
  }
  const Json& model = *model_it;
  if (auto type = model.find("type"); type != model.end() && *type != "BPE") {
    return Unsupported(source, absl::StrCat("model type ", Show(*type),
                                            " is not supported (only BPE)"));
  }
  RETURN_IF_ERROR(RequireDefault(model, "dropout", {}, source, "model"));
  RETURN_IF_ERROR(RequireDefault(model, "continuing_subword_prefix", {""},
                                 source, "model"));
  RETURN_IF_ERROR(
      RequireDefault(model, "end_of_word_suffix", {""}, source, "model"));
  RETURN_IF_ERROR(
      RequireDefault(model, "byte_fallback", {false}, source, "model"));
  RETURN_IF_ERROR(
      RequireDefault(model, "ignore_merges", {false}, source, "model"));
  RETURN_IF_ERROR(RequireDefault(doc, "normalizer", {}, source, "tokenizer"));
  RETURN_IF_ERROR(CheckByteLevel(doc, "pre_tokenizer", true, source));
  RETURN_IF_ERROR(CheckByteLevel(doc, "decoder", false, source));

  auto vocab_it = model.find("vocab");
  if (vocab_it == model.end()) return Invalid(source, "no model.vocab");
  RETURN_IF_ERROR(ReadVocab(*vocab_it, source, "model.vocab", vocab));

  auto merges_it = model.find("merges");
  if (merges_it == model.end() || !merges_it->is_array()) {
    return Invalid(source, "model.merges must be an array");
  }
  merges->reserve(merges_it->size());
  for (size_t rank = 0; rank < merges_it->size(); ++rank) {
    const Json& entry = (*merges_it)[rank];
    std::pair<std::string, std::string> merge;
    bool ok = false;
    if (entry.is_string()) {
      ok = SplitMerge(entry.get_ref<const std::string&>(), &merge);
    } else if (entry.is_array() && entry.size() == 2 && entry[0].is_string() &&
               entry[1].is_string()) {
      merge = {entry[0].get<std::string>(), entry[1].get<std::string>()};
      ok = !merge.first.empty() && !merge.second.empty();
    }
    if (!ok) {
      return Invalid(source,
                     absl::StrCat("model.merges[", rank, "] = ", Show(entry),
                                  " is not \"a b\" or [\"a\", \"b\"]"));
    }
    merges->push_back(std::move(merge));
  }

  auto added_it = doc.find("added_tokens");
  if (added_it == doc.end() || added_it->is_null()) return absl::OkStatus();
  if (!added_it->is_array()) {
    return Invalid(source, "added_tokens must be an array");
  }
  for (size_t i = 0; i < added_it->size(); ++i) {
    const Json& entry = (*added_it)[i];
    const std::string where = absl::StrCat("added_tokens[", i, "]");
    if (!entry.is_object()) {
      return Invalid(source, absl::StrCat(where, " must be an object"));
    }
    auto id = entry.find("id");
    auto content = entry.find("content");
    auto special = entry.find("special");
    if (id == entry.end() || !id->is_number_integer() || *id < 0 ||
        *id >= kMaxTokenId) {
      return Invalid(source, absl::StrCat(where,
                                          " needs an integer \"id\" in "
                                          "0..",
                                          kMaxTokenId - 1));
    }
    if (content == entry.end() || !content->is_string() || content->empty()) {
      return Invalid(source,
                     absl::StrCat(where, " needs a non-empty \"content\""));
    }
    if (special != entry.end() && !special->is_boolean()) {
      return Invalid(source,
                     absl::StrCat(where, ".special must be true or false"));
    }
    added->push_back({id->get<int>(), content->get<std::string>(),
                      special != entry.end() && special->get<bool>()});
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Tokenizer> Tokenizer::FromHuggingFaceJson(
    const std::string& path, const TokenizerOptions& options) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(path, "tokenizer file"));
  return FromHuggingFaceJsonText(text, options, path);
}

absl::StatusOr<Tokenizer> Tokenizer::FromHuggingFaceJsonText(
    absl::string_view json, const TokenizerOptions& options,
    absl::string_view source) {
  ASSIGN_OR_RETURN(Json doc, ParseJson(json, source));
  RawVocabulary raw;
  try {
    RETURN_IF_ERROR(
        ParseHuggingFaceDoc(doc, source, &raw.vocab, &raw.merges, &raw.added));
  } catch (const Json::exception& e) {
    return Invalid(source, e.what());
  }
  return Build(std::move(raw), options, source);
}

absl::StatusOr<Tokenizer> Tokenizer::FromGpt2Files(
    const std::string& encoder_json_path, const std::string& vocab_bpe_path,
    const TokenizerOptions& options) {
  ASSIGN_OR_RETURN(std::string encoder_text,
                   ReadFile(encoder_json_path, "GPT-2 encoder.json"));
  ASSIGN_OR_RETURN(std::string bpe_text,
                   ReadFile(vocab_bpe_path, "GPT-2 vocab.bpe"));
  RawVocabulary raw;
  ASSIGN_OR_RETURN(Json encoder, ParseJson(encoder_text, encoder_json_path));
  try {
    RETURN_IF_ERROR(
        ReadVocab(encoder, encoder_json_path, "the top level", &raw.vocab));
  } catch (const Json::exception& e) {
    return Invalid(encoder_json_path, e.what());
  }
  for (const auto& [piece, id] : raw.vocab) {
    if (piece == "<|endoftext|>" && id >= 0 && id < kMaxTokenId) {
      raw.added.push_back({static_cast<int>(id), piece, /*special=*/true});
    }
  }

  const std::vector<absl::string_view> lines = absl::StrSplit(bpe_text, '\n');
  for (size_t i = 0; i < lines.size(); ++i) {
    absl::string_view line = lines[i];
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    if (i == 0 && line[0] == '#') continue;  // "#version: 0.2"
    std::pair<std::string, std::string> merge;
    if (!SplitMerge(line, &merge)) {
      return Invalid(vocab_bpe_path,
                     absl::StrCat("line ", i + 1, " '", line,
                                  "' is not two symbols separated by a "
                                  "space"));
    }
    raw.merges.push_back(std::move(merge));
  }
  return Build(std::move(raw), options,
               absl::StrCat(encoder_json_path, " + ", vocab_bpe_path));
}

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

absl::StatusOr<std::string> Tokenizer::ToHuggingFaceJson() const {
  using OrderedJson = nlohmann::ordered_json;
  try {
    OrderedJson added = OrderedJson::array();
    for (const AddedToken& token : added_tokens_) {
      added.push_back({{"id", token.id},
                       {"content", token.content},
                       {"single_word", false},
                       {"lstrip", false},
                       {"rstrip", false},
                       {"normalized", !token.special},
                       {"special", token.special}});
    }
    // Pieces are unique (Build checks), so append to the ordered map's
    // vector directly: its operator[] searches linearly, O(n^2) for 50k.
    OrderedJson vocab = OrderedJson::object();
    auto& entries =
        static_cast<std::vector<std::pair<const std::string, OrderedJson>>&>(
            vocab.get_ref<OrderedJson::object_t&>());
    entries.reserve(tokens_.size());
    for (size_t id = 0; id < tokens_.size(); ++id) {
      if (tokens_[id].in_model) entries.emplace_back(tokens_[id].piece, id);
    }
    // "a b" strings, the format every reader knows, unless a symbol has a
    // space in it (possible only outside the byte alphabet).
    bool pairs_as_arrays = false;
    for (const auto& [left, right] : merges_by_rank_) {
      pairs_as_arrays |= tokens_[left].piece.find(' ') != std::string::npos ||
                         tokens_[right].piece.find(' ') != std::string::npos;
    }
    OrderedJson merges = OrderedJson::array();
    for (const auto& [left, right] : merges_by_rank_) {
      const std::string& a = tokens_[left].piece;
      const std::string& b = tokens_[right].piece;
      if (pairs_as_arrays) {
        merges.push_back(OrderedJson::array({a, b}));
      } else {
        merges.push_back(absl::StrCat(a, " ", b));
      }
    }
    const OrderedJson byte_level = {{"type", "ByteLevel"},
                                    {"add_prefix_space", false},
                                    {"trim_offsets", true},
                                    {"use_regex", true}};
    OrderedJson doc = {
        {"version", "1.0"},
        {"truncation", nullptr},
        {"padding", nullptr},
        {"added_tokens", std::move(added)},
        {"normalizer", nullptr},
        {"pre_tokenizer", byte_level},
        {"post_processor", byte_level},
        {"decoder", byte_level},
        {"model",
         {{"type", "BPE"},
          {"dropout", nullptr},
          {"unk_token", nullptr},
          {"continuing_subword_prefix", ""},
          {"end_of_word_suffix", ""},
          {"fuse_unk", false},
          {"byte_fallback", false},
          {"vocab", std::move(vocab)},
          {"merges", std::move(merges)}}},
    };
    std::string text = doc.dump(2);
    text.push_back('\n');
    return text;
  } catch (const OrderedJson::exception& e) {
    return absl::InternalError(
        absl::StrCat("cannot write tokenizer.json: ", e.what()));
  }
}

absl::Status WriteHuggingFaceTokenizerJson(const Tokenizer& tokenizer,
                                           const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, tokenizer.ToHuggingFaceJson());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot create tokenizer file '", path, "': ", std::strerror(errno)));
  }
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  out.close();
  if (!out) {
    return absl::DataLossError(
        absl::StrCat("error writing tokenizer file '", path, "'"));
  }
  return absl::OkStatus();
}

}  // namespace md
