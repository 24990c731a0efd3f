// Tokenizer files: Hugging Face tokenizer.json (read and written) and
// GPT-2's encoder.json + vocab.bpe, into the raw vocabulary Build checks.
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
#include "model/tokenizer/tokenizer.h"
#include "model/tokenizer/tokenizer_internal.h"

namespace md {
namespace {

using Json = nlohmann::json;
using tokenizer_internal::Invalid;
using tokenizer_internal::kMaxTokenId;
using tokenizer_internal::Unsupported;

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
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path, "tokenizer file"));
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
                   ReadFileToString(encoder_json_path, "GPT-2 encoder.json"));
  ASSIGN_OR_RETURN(std::string bpe_text,
                   ReadFileToString(vocab_bpe_path, "GPT-2 vocab.bpe"));
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
