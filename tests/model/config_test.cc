#include "model/config/config.h"

#include <cstdio>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/model/golden.h"

namespace md {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string GoldenConfigPath() {
  return md::testing::GoldenDir() + "/config.json";
}

std::string GoldenConfigText() {
  return md::testing::ReadJsonFile(GoldenConfigPath()).dump();
}

// Parses `json` over the moondream2 defaults and expects an InvalidArgument
// error whose message contains `needle`.
void ExpectInvalid(const std::string& json, const std::string& needle) {
  SCOPED_TRACE(json);
  absl::StatusOr<MoondreamConfig> config =
      ParseConfigJson(json, Moondream2Config());
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(config.status().message()), HasSubstr(needle));
}

// --- Presets. ---

TEST(PresetTest, Moondream2MatchesDesignTable) {
  absl::StatusOr<MoondreamConfig> c = PresetConfig("moondream2");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->name, "moondream2");
  EXPECT_EQ(c->text.dim, 2048);
  EXPECT_EQ(c->text.n_layers, 24);
  EXPECT_EQ(c->text.n_heads, 32);
  EXPECT_EQ(c->text.head_dim(), 64);
  EXPECT_EQ(c->text.vocab_size, 51200);
  EXPECT_EQ(c->text.max_context, 2048);
  EXPECT_EQ(c->vision.enc_dim, 1152);
  EXPECT_EQ(c->vision.enc_ff_dim, 4304);
  EXPECT_EQ(c->vision.enc_n_heads, 16);
  EXPECT_EQ(c->vision.enc_n_layers, 27);
  EXPECT_EQ(c->vision.crop_size, 378);
  EXPECT_EQ(c->vision.enc_patch_size, 14);
  EXPECT_EQ(c->vision.proj_inner_dim, 8192);
  EXPECT_EQ(c->vision.proj_out_dim, 2048);
  EXPECT_EQ(c->vision.max_crops, 12);
  EXPECT_EQ(c->vision.overlap_margin, 4);
  EXPECT_EQ(c->vision.grid(), 27);
  EXPECT_EQ(c->vision.n_patches(), 729);
  EXPECT_EQ(c->vision.patch_dim(), 588);
  EXPECT_EQ(c->region.dim, 2048);
  EXPECT_EQ(c->region.inner_dim, 8192);
  EXPECT_EQ(c->region.coord_feat_dim, 256);
  EXPECT_EQ(c->region.coord_out_dim, 1024);
  EXPECT_EQ(c->region.size_feat_dim, 512);
  EXPECT_EQ(c->region.size_out_dim, 2048);
  EXPECT_EQ(c->tokenizer.bos_id, 50256);
  EXPECT_EQ(c->tokenizer.eos_id, 50256);
  EXPECT_EQ(c->prefix_len(), 730);
  EXPECT_TRUE(ValidateConfig(*c).ok());
}

TEST(PresetTest, Moondream2Templates) {
  MoondreamConfig c = Moondream2Config();
  ASSERT_TRUE(c.tokenizer.caption_short.has_value());
  EXPECT_THAT(*c.tokenizer.caption_short,
              ElementsAre(198, 198, 16438, 8305, 25));
  ASSERT_TRUE(c.tokenizer.caption_normal.has_value());
  EXPECT_THAT(*c.tokenizer.caption_normal,
              ElementsAre(198, 198, 24334, 1159, 25));
  ASSERT_TRUE(c.tokenizer.query.has_value());
  EXPECT_THAT(c.tokenizer.query->prefix, ElementsAre(198, 198, 24361, 25));
  EXPECT_THAT(c.tokenizer.query->suffix, ElementsAre(198, 198, 33706, 25));
  ASSERT_TRUE(c.tokenizer.detect.has_value());
  EXPECT_THAT(c.tokenizer.detect->prefix, ElementsAre(198, 198, 47504, 25));
  EXPECT_THAT(c.tokenizer.detect->suffix, ElementsAre(628));
  ASSERT_TRUE(c.tokenizer.point.has_value());
  EXPECT_THAT(c.tokenizer.point->prefix, ElementsAre(198, 198, 12727, 25));
  EXPECT_THAT(c.tokenizer.point->suffix, ElementsAre(628));
}

TEST(PresetTest, Moondream05BMatchesDesignTable) {
  absl::StatusOr<MoondreamConfig> c = PresetConfig("moondream-0.5b");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->name, "moondream-0.5b");
  EXPECT_EQ(c->text.dim, 1024);
  EXPECT_EQ(c->text.n_layers, 24);
  EXPECT_EQ(c->text.n_heads, 16);
  EXPECT_EQ(c->text.head_dim(), 64);
  EXPECT_EQ(c->text.vocab_size, 51200);
  EXPECT_EQ(c->text.max_context, 2048);
  EXPECT_EQ(c->vision.enc_dim, 720);
  EXPECT_EQ(c->vision.enc_ff_dim, 2690);
  EXPECT_EQ(c->vision.enc_n_heads, 10);
  EXPECT_EQ(c->vision.enc_n_layers, 27);
  EXPECT_EQ(c->vision.crop_size, 378);
  EXPECT_EQ(c->vision.enc_patch_size, 14);
  EXPECT_EQ(c->vision.proj_inner_dim, 8192);
  EXPECT_EQ(c->vision.proj_out_dim, 1024);
  EXPECT_EQ(c->region.dim, 1024);
  EXPECT_EQ(c->region.inner_dim, 8192);
  EXPECT_EQ(c->region.coord_feat_dim, 256);
  EXPECT_EQ(c->region.coord_out_dim, 1024);
  EXPECT_EQ(c->region.size_feat_dim, 512);
  EXPECT_EQ(c->region.size_out_dim, 2048);
  EXPECT_EQ(c->tokenizer.bos_id, 50256);
  EXPECT_EQ(c->tokenizer.eos_id, 50256);
  ASSERT_TRUE(c->tokenizer.query.has_value());
  EXPECT_THAT(c->tokenizer.query->prefix, ElementsAre(198, 198, 24361, 25));
  EXPECT_TRUE(ValidateConfig(*c).ok());
}

TEST(PresetTest, PresetFunctionsAgreeWithPresetConfig) {
  absl::StatusOr<MoondreamConfig> c2 = PresetConfig("moondream2");
  absl::StatusOr<MoondreamConfig> c05 = PresetConfig("moondream-0.5b");
  ASSERT_TRUE(c2.ok());
  ASSERT_TRUE(c05.ok());
  EXPECT_EQ(c2->text.dim, Moondream2Config().text.dim);
  EXPECT_EQ(c05->text.dim, Moondream05BConfig().text.dim);
  EXPECT_EQ(c05->vision.enc_dim, Moondream05BConfig().vision.enc_dim);
}

TEST(PresetTest, UnknownPresetIsAnError) {
  absl::StatusOr<MoondreamConfig> c = PresetConfig("moondream3");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("moondream3"));
  EXPECT_FALSE(PresetConfig("").ok());
}

// --- The golden config. ---

// The values of the project's golden set (tests/data/golden), as its README
// states them.
void ExpectPublicGoldenValues(const MoondreamConfig& c) {
  EXPECT_EQ(c.text.dim, 64);
  EXPECT_EQ(c.text.n_layers, 2);
  EXPECT_EQ(c.text.n_heads, 1);
  EXPECT_EQ(c.text.vocab_size, 2048);
  EXPECT_EQ(c.text.max_context, 2048);
  EXPECT_EQ(c.vision.enc_dim, 64);
  EXPECT_EQ(c.vision.enc_n_layers, 27);
  EXPECT_EQ(c.vision.enc_n_heads, 2);
  EXPECT_EQ(c.vision.enc_ff_dim, 128);
  EXPECT_EQ(c.vision.proj_out_dim, 64);
  EXPECT_EQ(c.vision.proj_inner_dim, 128);
  EXPECT_EQ(c.region.dim, 64);
  EXPECT_EQ(c.region.coord_feat_dim, 16);
  EXPECT_EQ(c.region.size_feat_dim, 32);
  EXPECT_EQ(c.region.inner_dim, 128);
  EXPECT_EQ(c.tokenizer.bos_id, 1);
  EXPECT_EQ(c.tokenizer.eos_id, 2);
  ASSERT_TRUE(c.tokenizer.caption_short.has_value());
  EXPECT_THAT(*c.tokenizer.caption_short,
              ElementsAre(198, 198, 1501, 1502, 25));
  ASSERT_TRUE(c.tokenizer.caption_normal.has_value());
  EXPECT_THAT(*c.tokenizer.caption_normal,
              ElementsAre(198, 198, 1503, 1159, 25));
  ASSERT_TRUE(c.tokenizer.query.has_value());
  EXPECT_THAT(c.tokenizer.query->prefix, ElementsAre(198, 198, 1505, 25));
  EXPECT_THAT(c.tokenizer.query->suffix, ElementsAre(198, 198, 1506, 25));
  ASSERT_TRUE(c.tokenizer.detect.has_value());
  EXPECT_THAT(c.tokenizer.detect->prefix, ElementsAre(198, 198, 1507, 25));
  EXPECT_THAT(c.tokenizer.detect->suffix, ElementsAre(628));
  ASSERT_TRUE(c.tokenizer.point.has_value());
  EXPECT_THAT(c.tokenizer.point->prefix, ElementsAre(198, 198, 1508, 25));
  EXPECT_THAT(c.tokenizer.point->suffix, ElementsAre(628));
}

nlohmann::json TemplateJson(const std::optional<PromptTemplate>& t) {
  if (!t.has_value()) return nullptr;
  return {{"prefix", t->prefix}, {"suffix", t->suffix}};
}

// `c` in the reference's format, to compare with a config file.
nlohmann::json ConfigAsJson(const MoondreamConfig& c) {
  nlohmann::json j;
  j["text"] = {{"dim", c.text.dim},
               {"n_layers", c.text.n_layers},
               {"vocab_size", c.text.vocab_size},
               {"max_context", c.text.max_context},
               {"n_heads", c.text.n_heads},
               {"prefix_attn", c.text.prefix_attn}};
  j["vision"] = {{"enc_dim", c.vision.enc_dim},
                 {"enc_patch_size", c.vision.enc_patch_size},
                 {"enc_n_layers", c.vision.enc_n_layers},
                 {"enc_ff_dim", c.vision.enc_ff_dim},
                 {"enc_n_heads", c.vision.enc_n_heads},
                 {"proj_out_dim", c.vision.proj_out_dim},
                 {"crop_size", c.vision.crop_size},
                 {"in_channels", c.vision.in_channels},
                 {"max_crops", c.vision.max_crops},
                 {"overlap_margin", c.vision.overlap_margin},
                 {"proj_inner_dim", c.vision.proj_inner_dim}};
  j["region"] = {{"dim", c.region.dim},
                 {"coord_feat_dim", c.region.coord_feat_dim},
                 {"coord_out_dim", c.region.coord_out_dim},
                 {"size_feat_dim", c.region.size_feat_dim},
                 {"size_out_dim", c.region.size_out_dim},
                 {"inner_dim", c.region.inner_dim}};
  nlohmann::json caption = nlohmann::json::object();
  if (c.tokenizer.caption_short) caption["short"] = *c.tokenizer.caption_short;
  if (c.tokenizer.caption_normal) {
    caption["normal"] = *c.tokenizer.caption_normal;
  }
  if (caption.empty()) caption = nullptr;
  j["tokenizer"] = {{"bos_id", c.tokenizer.bos_id},
                    {"eos_id", c.tokenizer.eos_id},
                    {"templates",
                     {{"caption", caption},
                      {"query", TemplateJson(c.tokenizer.query)},
                      {"detect", TemplateJson(c.tokenizer.detect)},
                      {"point", TemplateJson(c.tokenizer.point)}}}};
  return j;
}

// Every value the golden config file sets is the parsed one; for the public
// set also the values its README states. Another set (MD_GOLDEN_DIR) is
// checked against its own file.
void ExpectGoldenConfig(const MoondreamConfig& c) {
  const nlohmann::json file = md::testing::ReadJsonFile(GoldenConfigPath());
  const nlohmann::json actual = ConfigAsJson(c);
  ASSERT_TRUE(file.is_object());
  for (const auto& [section, values] : file.items()) {
    ASSERT_TRUE(actual.contains(section)) << section;
    for (const auto& [key, value] : values.items()) {
      if (section == "tokenizer" && key == "templates") {
        for (const auto& [skill, tmpl] : value.items()) {
          EXPECT_EQ(actual[section][key][skill], tmpl)
              << "tokenizer.templates." << skill;
        }
      } else {
        EXPECT_EQ(actual[section][key], value) << section << "." << key;
      }
    }
  }
  if (md::testing::Cases()["set"] == "public") ExpectPublicGoldenValues(c);
}

TEST(ParseConfigJsonTest, GoldenConfig) {
  absl::StatusOr<MoondreamConfig> c =
      ParseConfigJson(GoldenConfigText(), Moondream2Config());
  ASSERT_TRUE(c.ok()) << c.status();
  ExpectGoldenConfig(*c);
}

TEST(ParseConfigJsonTest, ConfigAsJsonRoundTrips) {
  // The comparison helper itself: a preset written out and parsed over the
  // other preset gives the first one back.
  const MoondreamConfig small = Moondream05BConfig();
  absl::StatusOr<MoondreamConfig> c =
      ParseConfigJson(ConfigAsJson(small).dump(), Moondream2Config());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(ConfigAsJson(*c), ConfigAsJson(small));
  EXPECT_NE(ConfigAsJson(*c), ConfigAsJson(Moondream2Config()));
}

TEST(ConfigToJsonTest, WritesEveryFieldInTheReferenceFormat) {
  absl::StatusOr<MoondreamConfig> golden =
      ParseConfigJson(GoldenConfigText(), Moondream2Config());
  ASSERT_TRUE(golden.ok()) << golden.status();
  for (const MoondreamConfig& c :
       {Moondream2Config(), Moondream05BConfig(), *golden}) {
    SCOPED_TRACE(c.name);
    EXPECT_EQ(nlohmann::json::parse(ConfigToJson(c)), ConfigAsJson(c));
  }
}

TEST(ConfigToJsonTest, ReadsBackWhateverTheDefaults) {
  MoondreamConfig small = Moondream05BConfig();
  // Unsupported skills and a caption of one length only survive too.
  small.tokenizer.detect.reset();
  small.tokenizer.caption_normal.reset();
  absl::StatusOr<MoondreamConfig> c =
      ParseConfigJson(ConfigToJson(small), Moondream2Config());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(ConfigAsJson(*c), ConfigAsJson(small));
  EXPECT_FALSE(c->tokenizer.detect.has_value());
  EXPECT_TRUE(c->tokenizer.caption_short.has_value());
  EXPECT_FALSE(c->tokenizer.caption_normal.has_value());
}

TEST(ParseConfigJsonTest, MissingKeysKeepDefaults) {
  absl::StatusOr<MoondreamConfig> c = ParseConfigJson(
      R"({"text": {"n_layers": 3}, "vision": {"enc_n_layers": 5}})",
      Moondream2Config());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->text.n_layers, 3);
  EXPECT_EQ(c->vision.enc_n_layers, 5);
  EXPECT_EQ(c->text.dim, 2048);
  EXPECT_EQ(c->vision.enc_dim, 1152);
  EXPECT_EQ(c->tokenizer.bos_id, 50256);
  ASSERT_TRUE(c->tokenizer.caption_short.has_value());
  EXPECT_THAT(*c->tokenizer.caption_short,
              ElementsAre(198, 198, 16438, 8305, 25));
}

TEST(ParseConfigJsonTest, EmptyObjectGivesDefaults) {
  absl::StatusOr<MoondreamConfig> c =
      ParseConfigJson("{}", Moondream05BConfig());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->text.dim, 1024);
  EXPECT_EQ(c->vision.enc_dim, 720);
}

TEST(ParseConfigJsonTest, HuggingFaceWrapperIsUnwrapped) {
  nlohmann::json inner = md::testing::ReadJsonFile(GoldenConfigPath());
  nlohmann::json wrapped = {{"config", inner},
                            {"model_type", "moondream1"},
                            {"architectures", {"HfMoondream"}}};
  absl::StatusOr<MoondreamConfig> c =
      ParseConfigJson(wrapped.dump(), Moondream2Config());
  ASSERT_TRUE(c.ok()) << c.status();
  ExpectGoldenConfig(*c);
}

TEST(ParseConfigJsonTest, EmptyHuggingFaceWrapperGivesDefaults) {
  absl::StatusOr<MoondreamConfig> c = ParseConfigJson(
      R"({"config": {}, "model_type": "moondream1"})", Moondream2Config());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->text.dim, 2048);
  EXPECT_EQ(c->text.n_layers, 24);
  EXPECT_EQ(c->vision.enc_dim, 1152);
  EXPECT_EQ(c->region.dim, 2048);
  EXPECT_EQ(c->tokenizer.eos_id, 50256);
  EXPECT_TRUE(c->tokenizer.query.has_value());

  absl::StatusOr<MoondreamConfig> c05 =
      ParseConfigJson(R"({"config": {}})", Moondream05BConfig());
  ASSERT_TRUE(c05.ok()) << c05.status();
  EXPECT_EQ(c05->text.dim, 1024);
}

TEST(ParseConfigJsonTest, NullTemplateMeansSkillUnsupported) {
  absl::StatusOr<MoondreamConfig> c = ParseConfigJson(
      R"({"tokenizer": {"templates": {"detect": null, "point": null,
                                        "caption": null}}})",
      Moondream2Config());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->tokenizer.detect, std::nullopt);
  EXPECT_EQ(c->tokenizer.point, std::nullopt);
  EXPECT_EQ(c->tokenizer.caption_short, std::nullopt);
  EXPECT_EQ(c->tokenizer.caption_normal, std::nullopt);
  // As the reference's from_dict, a templates object replaces the whole
  // set: a skill it does not mention is unsupported too.
  EXPECT_EQ(c->tokenizer.query, std::nullopt);
}

TEST(ParseConfigJsonTest, NullQueryTemplate) {
  absl::StatusOr<MoondreamConfig> c = ParseConfigJson(
      R"({"tokenizer": {"templates": {"query": null}}})", Moondream2Config());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->tokenizer.query.has_value());
  EXPECT_FALSE(c->tokenizer.detect.has_value());
  // Without a templates object, the preset's templates stay.
  absl::StatusOr<MoondreamConfig> kept = ParseConfigJson(
      R"({"tokenizer": {"bos_id": 50256}})", Moondream2Config());
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_TRUE(kept->tokenizer.detect.has_value());
}

// --- Errors. ---

TEST(ParseConfigJsonErrorTest, InvalidJson) {
  ExpectInvalid(R"({"text": {"dim": 64,})", "not valid JSON");
  ExpectInvalid("", "not valid JSON");
  ExpectInvalid("{'text': 1}", "not valid JSON");
}

TEST(ParseConfigJsonErrorTest, TopLevelNotAnObject) {
  ExpectInvalid("[1, 2]", "object");
  ExpectInvalid("42", "object");
}

TEST(ParseConfigJsonErrorTest, UnknownSection) {
  ExpectInvalid(R"({"txet": {"dim": 64}})", "unknown section 'txet'");
}

TEST(ParseConfigJsonErrorTest, UnknownKey) {
  ExpectInvalid(R"({"text": {"dimm": 64}})", "unknown key 'text.dimm'");
  ExpectInvalid(R"({"vision": {"n_layers": 2}})",
                "unknown key 'vision.n_layers'");
  ExpectInvalid(R"({"region": {"enc_dim": 2}})",
                "unknown key 'region.enc_dim'");
  ExpectInvalid(R"({"tokenizer": {"pad_id": 0}})",
                "unknown key 'tokenizer.pad_id'");
  ExpectInvalid(R"({"tokenizer": {"templates": {"ocr": null}}})",
                "unknown template 'ocr'");
  ExpectInvalid(
      R"({"tokenizer": {"templates": {"caption": {"long": [1, 2]}}}})",
      "unknown caption length 'long'");
}

TEST(ParseConfigJsonErrorTest, WrongType) {
  ExpectInvalid(R"({"text": {"dim": "64"}})", "text.dim must be an integer");
  ExpectInvalid(R"({"text": {"dim": 64.5}})", "text.dim must be an integer");
  ExpectInvalid(R"({"vision": {"enc_n_heads": true}})",
                "vision.enc_n_heads must be an integer");
  ExpectInvalid(R"({"tokenizer": {"bos_id": null}})",
                "tokenizer.bos_id must be an integer");
  ExpectInvalid(R"({"text": [64]})", "'text' must be an object");
  ExpectInvalid(R"({"tokenizer": 3})", "'tokenizer' must be an object");
  ExpectInvalid(R"({"tokenizer": {"templates": []}})",
                "tokenizer.templates must be an object");
}

TEST(ParseConfigJsonErrorTest, NonPositiveDim) {
  ExpectInvalid(R"({"text": {"dim": 0}})", "text.dim must be positive");
  ExpectInvalid(R"({"vision": {"enc_dim": -8}})",
                "vision.enc_dim must be positive, got -8");
  ExpectInvalid(R"({"region": {"inner_dim": 0}})",
                "region.inner_dim must be positive");
  ExpectInvalid(R"({"text": {"n_layers": 0}})",
                "text.n_layers must be positive");
}

// Found by config_fuzz (tests/fuzz/regressions/config_fuzz): sizes whose
// derived arithmetic overflowed an int, and a negative margin that
// validated. All are refused, naming the field.
TEST(ParseConfigJsonErrorTest, SizesThatWouldOverflowAreRefused) {
  ExpectInvalid(R"({"vision":{"overlap_margin":2000000000}})",
                "crop_size must be a multiple of enc_patch_size wider");
  ExpectInvalid(R"({"vision":{"crop_size":1000000,"enc_patch_size":1}})",
                "vision.crop_size must be at most");
  ExpectInvalid(
      R"({"vision":{"enc_patch_size":50000,"crop_size":50000,"overlap_margin":0}})",
      "vision.crop_size must be at most");
  ExpectInvalid(R"({"vision":{"overlap_margin":-100000000}})",
                "vision.overlap_margin must be >= 0");
  ExpectInvalid(R"({"vision":{"overlap_margin":-1}})",
                "vision.overlap_margin must be >= 0");
  ExpectInvalid(R"({"text":{"vocab_size":2000000}})",
                "text.vocab_size must be at most");
}

TEST(ParseConfigJsonErrorTest, HeadsNotDividingDim) {
  ExpectInvalid(R"({"text": {"n_heads": 3}})", "text.n_heads");
  ExpectInvalid(R"({"vision": {"enc_n_heads": 5}})",
                "vision.enc_dim must be divisible by vision.enc_n_heads");
}

TEST(ParseConfigJsonErrorTest, TemplateWithNonIntegerIds) {
  ExpectInvalid(
      R"({"tokenizer": {"templates": {"query": {"prefix": [1, "a"],
                                                 "suffix": [2]}}}})",
      "tokenizer.templates.query.prefix");
  ExpectInvalid(
      R"({"tokenizer": {"templates": {"detect": {"prefix": [1],
                                                  "suffix": [2.5]}}}})",
      "tokenizer.templates.detect.suffix");
  ExpectInvalid(
      R"({"tokenizer": {"templates": {"point": {"prefix": [-1],
                                                 "suffix": []}}}})",
      "tokenizer.templates.point.prefix");
  ExpectInvalid(
      R"({"tokenizer": {"templates": {"caption": {"short": [198, null]}}}})",
      "tokenizer.templates.caption.short");
  ExpectInvalid(
      R"({"tokenizer": {"templates": {"query": {"prefix": 5,
                                                 "suffix": []}}}})",
      "tokenizer.templates.query.prefix must be an array");
  ExpectInvalid(R"({"tokenizer": {"templates": {"query": {"prefix": [1]}}}})",
                "tokenizer.templates.query must be null or");
}

TEST(ParseConfigJsonErrorTest, BosOutsideVocabulary) {
  ExpectInvalid(R"({"text": {"vocab_size": 100}})", "outside the vocabulary");
}

TEST(ParseConfigJsonErrorTest, WrapperErrorsAreReported) {
  ExpectInvalid(R"({"config": {"text": {"dimm": 1}}})",
                "unknown key 'text.dimm'");
  ExpectInvalid(R"({"config": [1]})", "object");
}

// --- Files. ---

TEST(LoadConfigFileTest, GoldenFile) {
  absl::StatusOr<MoondreamConfig> c =
      LoadConfigFile(GoldenConfigPath(), Moondream2Config());
  ASSERT_TRUE(c.ok()) << c.status();
  ExpectGoldenConfig(*c);
  EXPECT_EQ(c->name, GoldenConfigPath());
}

TEST(LoadConfigFileTest, MissingFileIsNotFound) {
  const std::string path =
      md::testing::GoldenDir() + "/no_such_config_file.json";
  absl::StatusOr<MoondreamConfig> c = LoadConfigFile(path, Moondream2Config());
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr(path));
}

TEST(LoadConfigFileTest, BadFileNamesThePath) {
  const std::string path =
      ::testing::TempDir() + "/config_test_bad_config.json";
  {
    std::ofstream out(path);
    out << R"({"text": {"dim": "big"}})";
  }
  absl::StatusOr<MoondreamConfig> c = LoadConfigFile(path, Moondream2Config());
  std::remove(path.c_str());
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr(path));
  EXPECT_THAT(std::string(c.status().message()),
              HasSubstr("text.dim must be an integer"));
}

}  // namespace
}  // namespace md

namespace md {
namespace {

TEST(ConfigRangeTest, IntegersBeyondIntAreRefusedNotTruncated) {
  auto dim =
      ParseConfigJson(R"({"text": {"dim": 4294967360}})", Moondream2Config());
  ASSERT_FALSE(dim.ok());
  EXPECT_THAT(std::string(dim.status().message()),
              ::testing::HasSubstr("out of range"));
  auto id = ParseConfigJson(
      R"({"tokenizer": {"templates": {"query": {"prefix": [4294967297], "suffix": []}}}})",
      Moondream2Config());
  EXPECT_FALSE(id.ok());
}

TEST(ConfigRangeTest, TemplatesObjectReplacesTheWholeSetAsTheReference) {
  auto c = ParseConfigJson(
      R"({"tokenizer": {"templates": {"caption": {"short": [1]}}}})",
      Moondream2Config());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->tokenizer.caption_short.has_value());
  EXPECT_FALSE(c->tokenizer.caption_normal.has_value());
  EXPECT_FALSE(c->tokenizer.query.has_value());
  EXPECT_FALSE(c->tokenizer.detect.has_value());
}

TEST(ConfigRangeTest, TemplateIdsMustBeInTheVocabulary) {
  auto c = ParseConfigJson(
      R"({"text": {"vocab_size": 100}, "tokenizer": {"bos_id": 1, "eos_id": 2,
          "templates": {"caption": {"short": [100]}}}})",
      Moondream2Config());
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()),
              ::testing::HasSubstr("outside the vocabulary"));
}

}  // namespace
}  // namespace md
