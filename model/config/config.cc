#include "model/config/config.h"

#include <cstdint>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/files.h"
#include "base/status_macros.h"

namespace md {
namespace {

using Json = nlohmann::json;

// The integer fields of each section by their config.json key: one table
// for reading and writing, so the two cannot disagree.
using FieldTable = std::map<std::string, int*>;

FieldTable TextFields(TextConfig& t) {
  return {{"dim", &t.dim},
          {"n_layers", &t.n_layers},
          {"vocab_size", &t.vocab_size},
          {"max_context", &t.max_context},
          {"n_heads", &t.n_heads},
          {"prefix_attn", &t.prefix_attn}};
}

FieldTable VisionFields(VisionConfig& v) {
  return {{"enc_dim", &v.enc_dim},
          {"enc_patch_size", &v.enc_patch_size},
          {"enc_n_layers", &v.enc_n_layers},
          {"enc_ff_dim", &v.enc_ff_dim},
          {"enc_n_heads", &v.enc_n_heads},
          {"proj_out_dim", &v.proj_out_dim},
          {"crop_size", &v.crop_size},
          {"in_channels", &v.in_channels},
          {"max_crops", &v.max_crops},
          {"overlap_margin", &v.overlap_margin},
          {"proj_inner_dim", &v.proj_inner_dim}};
}

FieldTable RegionFields(RegionConfig& r) {
  return {{"dim", &r.dim},
          {"coord_feat_dim", &r.coord_feat_dim},
          {"coord_out_dim", &r.coord_out_dim},
          {"size_feat_dim", &r.size_feat_dim},
          {"size_out_dim", &r.size_out_dim},
          {"inner_dim", &r.inner_dim}};
}

Json FieldsToJson(const FieldTable& fields) {
  Json section = Json::object();
  for (const auto& [key, value] : fields) section[key] = *value;
  return section;
}

Json TemplateToJson(const std::optional<PromptTemplate>& t) {
  if (!t.has_value()) return nullptr;
  return {{"prefix", t->prefix}, {"suffix", t->suffix}};
}

// The reference's "templates" object; a skill the model does not support
// is null, as ReadTokenizer reads it.
Json TemplatesToJson(const TokenizerConfig& tok) {
  Json caption = nullptr;
  if (tok.caption_short.has_value() || tok.caption_normal.has_value()) {
    caption = Json::object();
    if (tok.caption_short.has_value()) caption["short"] = *tok.caption_short;
    if (tok.caption_normal.has_value()) {
      caption["normal"] = *tok.caption_normal;
    }
  }
  return {{"caption", caption},
          {"query", TemplateToJson(tok.query)},
          {"detect", TemplateToJson(tok.detect)},
          {"point", TemplateToJson(tok.point)}};
}

absl::Status ReadInt(const Json& value, absl::string_view where, int* out) {
  if (!value.is_number_integer()) {
    return absl::InvalidArgumentError(
        absl::StrCat("config: ", where, " must be an integer"));
  }
  constexpr int64_t kMin = std::numeric_limits<int>::min();
  constexpr int64_t kMax = std::numeric_limits<int>::max();
  const bool in_range =
      value.is_number_unsigned()
          ? value.get<uint64_t>() <= static_cast<uint64_t>(kMax)
          : value.get<int64_t>() >= kMin && value.get<int64_t>() <= kMax;
  if (!in_range) {
    return absl::InvalidArgumentError(
        absl::StrCat("config: ", where, " is out of range"));
  }
  *out = value.get<int>();
  return absl::OkStatus();
}

// Reads the integer fields of one section; unknown keys are refused so a typo
// never silently keeps a default.
absl::Status ReadIntSection(const Json& section, absl::string_view name,
                            const std::map<std::string, int*>& fields) {
  if (!section.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("config: '", name, "' must be an object"));
  }
  for (const auto& [key, value] : section.items()) {
    auto it = fields.find(key);
    if (it == fields.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("config: unknown key '", name, ".", key, "'"));
    }
    RETURN_IF_ERROR(ReadInt(value, absl::StrCat(name, ".", key), it->second));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int>> ReadIds(const Json& value,
                                         absl::string_view where) {
  if (!value.is_array()) {
    return absl::InvalidArgumentError(
        absl::StrCat("config: ", where, " must be an array of token ids"));
  }
  std::vector<int> ids;
  for (const Json& id : value) {
    int v = -1;
    if (!ReadInt(id, where, &v).ok() || v < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "config: ", where, " must hold non-negative integer token ids"));
    }
    ids.push_back(v);
  }
  return ids;
}

// {"prefix": [...], "suffix": [...]} or null (skill not supported).
absl::StatusOr<std::optional<PromptTemplate>> ReadTemplate(
    const Json& value, absl::string_view where) {
  if (value.is_null()) return std::optional<PromptTemplate>();
  if (!value.is_object() || !value.contains("prefix") ||
      !value.contains("suffix")) {
    return absl::InvalidArgumentError(absl::StrCat(
        "config: ", where,
        " must be null or {\"prefix\": [...], \"suffix\": [...]}"));
  }
  PromptTemplate t;
  ASSIGN_OR_RETURN(t.prefix,
                   ReadIds(value["prefix"], absl::StrCat(where, ".prefix")));
  ASSIGN_OR_RETURN(t.suffix,
                   ReadIds(value["suffix"], absl::StrCat(where, ".suffix")));
  return std::optional<PromptTemplate>(std::move(t));
}

absl::Status ReadCaptionTemplates(const Json& value, TokenizerConfig* tok) {
  if (value.is_null()) {
    tok->caption_short.reset();
    tok->caption_normal.reset();
    return absl::OkStatus();
  }
  if (!value.is_object()) {
    return absl::InvalidArgumentError(
        "config: tokenizer.templates.caption must be null or an object");
  }
  tok->caption_short.reset();
  tok->caption_normal.reset();
  for (const auto& [length, ids] : value.items()) {
    std::string where = absl::StrCat("tokenizer.templates.caption.", length);
    if (length == "short") {
      ASSIGN_OR_RETURN(tok->caption_short, ReadIds(ids, where));
    } else if (length == "normal") {
      ASSIGN_OR_RETURN(tok->caption_normal, ReadIds(ids, where));
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("config: unknown caption length '", length, "'"));
    }
  }
  return absl::OkStatus();
}

absl::Status ReadTokenizer(const Json& section, TokenizerConfig* tok) {
  if (!section.is_object()) {
    return absl::InvalidArgumentError("config: 'tokenizer' must be an object");
  }
  for (const auto& [key, value] : section.items()) {
    if (key == "bos_id") {
      RETURN_IF_ERROR(ReadInt(value, "tokenizer.bos_id", &tok->bos_id));
    } else if (key == "eos_id") {
      RETURN_IF_ERROR(ReadInt(value, "tokenizer.eos_id", &tok->eos_id));
    } else if (key == "templates") {
      if (!value.is_object()) {
        return absl::InvalidArgumentError(
            "config: tokenizer.templates must be an object");
      }
      // As the reference's from_dict: a templates object replaces the whole
      // set; a skill it leaves out is unsupported.
      tok->caption_short.reset();
      tok->caption_normal.reset();
      tok->query.reset();
      tok->detect.reset();
      tok->point.reset();
      for (const auto& [skill, tmpl] : value.items()) {
        std::string where = absl::StrCat("tokenizer.templates.", skill);
        if (skill == "caption") {
          RETURN_IF_ERROR(ReadCaptionTemplates(tmpl, tok));
        } else if (skill == "query") {
          ASSIGN_OR_RETURN(tok->query, ReadTemplate(tmpl, where));
        } else if (skill == "detect") {
          ASSIGN_OR_RETURN(tok->detect, ReadTemplate(tmpl, where));
        } else if (skill == "point") {
          ASSIGN_OR_RETURN(tok->point, ReadTemplate(tmpl, where));
        } else {
          return absl::InvalidArgumentError(
              absl::StrCat("config: unknown template '", skill, "'"));
        }
      }
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("config: unknown key 'tokenizer.", key, "'"));
    }
  }
  return absl::OkStatus();
}

TokenizerConfig Gpt2TokenizerConfig() {
  TokenizerConfig tok;
  tok.caption_short = std::vector<int>{198, 198, 16438, 8305, 25};
  tok.caption_normal = std::vector<int>{198, 198, 24334, 1159, 25};
  tok.query = PromptTemplate{{198, 198, 24361, 25}, {198, 198, 33706, 25}};
  tok.detect = PromptTemplate{{198, 198, 47504, 25}, {628}};
  tok.point = PromptTemplate{{198, 198, 12727, 25}, {628}};
  return tok;
}

// No model of this family comes near these; past them, the sizes derived
// from a config (products of two sizes) would overflow an int.
constexpr int kMaxSize = 1 << 20;
constexpr int kMaxCropSize = 8192;

absl::Status Positive(int value, absl::string_view name) {
  if (value <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("config: ", name, " must be positive, got ", value));
  }
  if (value > kMaxSize) {
    return absl::InvalidArgumentError(absl::StrCat(
        "config: ", name, " must be at most ", kMaxSize, ", got ", value));
  }
  return absl::OkStatus();
}

}  // namespace

MoondreamConfig Moondream2Config() {
  MoondreamConfig c;
  c.name = "moondream2";
  c.tokenizer = Gpt2TokenizerConfig();
  return c;
}

MoondreamConfig Moondream05BConfig() {
  MoondreamConfig c = Moondream2Config();
  c.name = "moondream-0.5b";
  c.text.dim = 1024;
  c.text.n_heads = 16;
  c.vision.enc_dim = 720;
  c.vision.enc_ff_dim = 2690;
  c.vision.enc_n_heads = 10;
  c.vision.proj_out_dim = 1024;
  c.region.dim = 1024;
  return c;
}

absl::StatusOr<MoondreamConfig> PresetConfig(absl::string_view name) {
  if (name == "moondream2") return Moondream2Config();
  if (name == "moondream-0.5b" || name == "moondream0.5b") {
    return Moondream05BConfig();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown model preset '", name, "' (known: moondream2, moondream-0.5b)"));
}

absl::StatusOr<MoondreamConfig> ParseConfigJson(
    absl::string_view json, const MoondreamConfig& defaults) {
  Json root = Json::parse(json.begin(), json.end(), nullptr, false);
  if (root.is_discarded()) {
    return absl::InvalidArgumentError("config: not valid JSON");
  }
  if (root.is_object() && root.contains("config") && !root.contains("text")) {
    Json inner = root["config"];
    root = inner.is_null() ? Json::object() : inner;
  }
  if (!root.is_object()) {
    return absl::InvalidArgumentError("config: top level must be an object");
  }
  MoondreamConfig c = defaults;
  try {
    for (const auto& [key, section] : root.items()) {
      if (key == "text") {
        RETURN_IF_ERROR(ReadIntSection(section, "text", TextFields(c.text)));
      } else if (key == "vision") {
        RETURN_IF_ERROR(
            ReadIntSection(section, "vision", VisionFields(c.vision)));
      } else if (key == "region") {
        RETURN_IF_ERROR(
            ReadIntSection(section, "region", RegionFields(c.region)));
      } else if (key == "tokenizer") {
        RETURN_IF_ERROR(ReadTokenizer(section, &c.tokenizer));
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("config: unknown section '", key, "'"));
      }
    }
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("config: ", e.what()));
  }
  RETURN_IF_ERROR(ValidateConfig(c));
  return c;
}

std::string ConfigToJson(const MoondreamConfig& config) {
  MoondreamConfig c = config;  // the field tables point into a mutable one
  Json root = {
      {"text", FieldsToJson(TextFields(c.text))},
      {"vision", FieldsToJson(VisionFields(c.vision))},
      {"region", FieldsToJson(RegionFields(c.region))},
      {"tokenizer",
       {{"bos_id", c.tokenizer.bos_id},
        {"eos_id", c.tokenizer.eos_id},
        {"templates", TemplatesToJson(c.tokenizer)}}},
  };
  return root.dump(1) + "\n";
}

absl::StatusOr<MoondreamConfig> LoadConfigFile(
    const std::string& path, const MoondreamConfig& defaults) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path, "config"));
  absl::StatusOr<MoondreamConfig> config = ParseConfigJson(text, defaults);
  if (!config.ok()) {
    return absl::Status(config.status().code(),
                        absl::StrCat(path, ": ", config.status().message()));
  }
  config->name = path;
  return config;
}

absl::Status ValidateConfig(const MoondreamConfig& c) {
  for (auto [value, name] : std::vector<std::pair<int, const char*>>{
           {c.text.dim, "text.dim"},
           {c.text.n_layers, "text.n_layers"},
           {c.text.vocab_size, "text.vocab_size"},
           {c.text.max_context, "text.max_context"},
           {c.text.n_heads, "text.n_heads"},
           {c.vision.enc_dim, "vision.enc_dim"},
           {c.vision.enc_patch_size, "vision.enc_patch_size"},
           {c.vision.enc_n_layers, "vision.enc_n_layers"},
           {c.vision.enc_ff_dim, "vision.enc_ff_dim"},
           {c.vision.enc_n_heads, "vision.enc_n_heads"},
           {c.vision.proj_out_dim, "vision.proj_out_dim"},
           {c.vision.crop_size, "vision.crop_size"},
           {c.vision.in_channels, "vision.in_channels"},
           {c.vision.max_crops, "vision.max_crops"},
           {c.vision.proj_inner_dim, "vision.proj_inner_dim"},
           {c.region.dim, "region.dim"},
           {c.region.coord_feat_dim, "region.coord_feat_dim"},
           {c.region.coord_out_dim, "region.coord_out_dim"},
           {c.region.size_feat_dim, "region.size_feat_dim"},
           {c.region.size_out_dim, "region.size_out_dim"},
           {c.region.inner_dim, "region.inner_dim"}}) {
    RETURN_IF_ERROR(Positive(value, name));
  }
  if (c.text.dim % c.text.n_heads != 0 || c.text.head_dim() < 32 ||
      c.text.head_dim() % 2 != 0) {
    return absl::InvalidArgumentError(
        "config: text.dim / text.n_heads must be an even head size of at "
        "least 32 (rotary uses 32 dims per head)");
  }
  if (c.vision.enc_dim % c.vision.enc_n_heads != 0) {
    return absl::InvalidArgumentError(
        "config: vision.enc_dim must be divisible by vision.enc_n_heads");
  }
  if (c.vision.crop_size > kMaxCropSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("config: vision.crop_size must be at most ", kMaxCropSize,
                     ", got ", c.vision.crop_size));
  }
  if (c.vision.overlap_margin < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("config: vision.overlap_margin must be >= 0, got ",
                     c.vision.overlap_margin));
  }
  if (c.vision.crop_size % c.vision.enc_patch_size != 0 ||
      c.vision.grid() <= int64_t{2} * c.vision.overlap_margin) {
    return absl::InvalidArgumentError(
        "config: vision.crop_size must be a multiple of enc_patch_size wider "
        "than both overlap margins");
  }
  if (c.vision.in_channels != 3) {
    return absl::InvalidArgumentError("config: vision.in_channels must be 3");
  }
  if (c.region.coord_feat_dim % 2 != 0 || c.region.size_feat_dim % 4 != 0 ||
      c.region.size_out_dim % 2 != 0) {
    return absl::InvalidArgumentError(
        "config: region feature sizes must split evenly into cos|sin halves");
  }
  if (c.region.dim != c.text.dim || c.vision.proj_out_dim != c.text.dim) {
    return absl::InvalidArgumentError(
        "config: region.dim and vision.proj_out_dim must equal text.dim");
  }
  if (c.prefix_len() >= c.text.max_context) {
    return absl::InvalidArgumentError(absl::StrCat(
        "config: the image prefix (", c.prefix_len(),
        " positions) must fit in text.max_context (", c.text.max_context, ")"));
  }
  std::vector<int> template_ids;
  const TokenizerConfig& tok = c.tokenizer;
  for (const auto* ids :
       {tok.caption_short ? &*tok.caption_short : nullptr,
        tok.caption_normal ? &*tok.caption_normal : nullptr}) {
    if (ids) template_ids.insert(template_ids.end(), ids->begin(), ids->end());
  }
  for (const auto* t :
       {tok.query ? &*tok.query : nullptr, tok.detect ? &*tok.detect : nullptr,
        tok.point ? &*tok.point : nullptr}) {
    if (!t) continue;
    template_ids.insert(template_ids.end(), t->prefix.begin(), t->prefix.end());
    template_ids.insert(template_ids.end(), t->suffix.begin(), t->suffix.end());
  }
  for (int id : template_ids) {
    if (id >= c.text.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("config: template token id ", id,
                       " is outside the vocabulary (", c.text.vocab_size, ")"));
    }
  }
  for (int id : {c.tokenizer.bos_id, c.tokenizer.eos_id}) {
    if (id < 0 || id >= c.text.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "config: bos/eos id ", id, " is outside the vocabulary"));
    }
  }
  return absl::OkStatus();
}

}  // namespace md
