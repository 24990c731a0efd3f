// GPT-2 byte-level BPE: the reference cases through both loaders, GPT-2's
// pre-tokenization, UTF-8 errors, streaming detokenization, the max_merges
// cut, writing tokenizer.json, and malformed files.
//
// The cases come from MD_TOKENIZER_CASES when set (a file in the format of
// tests/data/tokenizer/gpt2_cases.json), else from the project's copy.
#include "model/tokenizer/tokenizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "model/tokenizer/detokenizer.h"
#include "model/tokenizer/pretokenize.h"

namespace md {
namespace {

using Json = nlohmann::json;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr int kEndOfText = 50256;
constexpr int kTinyMerges = 1792;  // the tiny test model: 256 + 1792 = 2048

std::string DataPath(absl::string_view name) {
  return absl::StrCat(MD_SOURCE_DIR, "/tests/data/tokenizer/", name);
}

std::string CasesPath() {
  const char* env = std::getenv("MD_TOKENIZER_CASES");
  return env != nullptr && *env != '\0' ? env : DataPath("gpt2_cases.json");
}

struct Case {
  std::string text;
  std::vector<int> ids;
};

const std::vector<Case>& Cases() {
  static const std::vector<Case>* const cases = [] {
    auto* out = new std::vector<Case>();
    std::ifstream in(CasesPath());
    if (!in) {
      ADD_FAILURE() << "cannot open " << CasesPath();
      return out;
    }
    const Json doc = Json::parse(in);
    for (const Json& c : doc.at("cases")) {
      out->push_back({c.at("text").get<std::string>(),
                      c.at("ids").get<std::vector<int>>()});
    }
    return out;
  }();
  return *cases;
}

enum class Loader { kHuggingFace, kGpt2Files };

absl::StatusOr<Tokenizer> Load(Loader loader,
                               const TokenizerOptions& options = {}) {
  if (loader == Loader::kHuggingFace) {
    return Tokenizer::FromHuggingFaceJson(DataPath("tokenizer.json"), options);
  }
  return Tokenizer::FromGpt2Files(DataPath("encoder.json"),
                                  DataPath("vocab.bpe"), options);
}

// Loading the full vocabulary takes a moment: once per loader and cut.
const Tokenizer& Shared(Loader loader, bool tiny = false) {
  static const Tokenizer* tokenizers[2][2] = {};
  const Tokenizer*& slot =
      tokenizers[loader == Loader::kHuggingFace ? 0 : 1][tiny ? 1 : 0];
  if (slot == nullptr) {
    TokenizerOptions options;
    if (tiny) options.max_merges = kTinyMerges;
    absl::StatusOr<Tokenizer> tokenizer = Load(loader, options);
    if (!tokenizer.ok()) {
      ADD_FAILURE() << tokenizer.status();
      std::abort();
    }
    slot = new Tokenizer(*std::move(tokenizer));
  }
  return *slot;
}

std::vector<int> EncodeOk(const Tokenizer& tokenizer, absl::string_view text) {
  absl::StatusOr<std::vector<int>> ids = tokenizer.Encode(text);
  EXPECT_TRUE(ids.ok()) << ids.status();
  return ids.ok() ? *ids : std::vector<int>{};
}

std::string DecodeOk(const Tokenizer& tokenizer, absl::Span<const int> ids) {
  absl::StatusOr<std::string> text = tokenizer.Decode(ids);
  EXPECT_TRUE(text.ok()) << text.status();
  return text.ok() ? *text : std::string();
}

// Streams `ids` through a StreamingDetokenizer; every chunk must be whole
// UTF-8 characters. Returns the chunks, Flush's output last.
std::vector<std::string> Stream(const Tokenizer& tokenizer,
                                absl::Span<const int> ids) {
  StreamingDetokenizer stream(&tokenizer);
  std::vector<std::string> chunks;
  for (int id : ids) {
    absl::StatusOr<std::string> chunk = stream.Push(id);
    EXPECT_TRUE(chunk.ok()) << chunk.status();
    if (!chunk.ok()) break;
    EXPECT_TRUE(ValidateUtf8(*chunk).ok()) << "half a character after " << id;
    chunks.push_back(*chunk);
  }
  chunks.push_back(stream.Flush());
  return chunks;
}

std::string Join(const std::vector<std::string>& chunks) {
  std::string out;
  for (const std::string& chunk : chunks) out += chunk;
  return out;
}

// The id of the token that is exactly the byte `byte`.
int ByteTokenId(const Tokenizer& tokenizer, uint8_t byte) {
  for (int id = 0; id < tokenizer.vocab_size(); ++id) {
    absl::StatusOr<absl::string_view> bytes = tokenizer.TokenBytes(id);
    if (bytes.ok() && *bytes == std::string(1, static_cast<char>(byte))) {
      return id;
    }
  }
  ADD_FAILURE() << "no token for byte " << int{byte};
  return -1;
}

// ---------------------------------------------------------------------------
// Both loaders on the reference cases.

class GoldenTest : public ::testing::TestWithParam<Loader> {
 protected:
  const Tokenizer& tokenizer() const { return Shared(GetParam()); }
};

TEST_P(GoldenTest, LoadsGpt2) {
  EXPECT_EQ(tokenizer().vocab_size(), 50257);
  EXPECT_EQ(tokenizer().n_merges(), 50000);
  ASSERT_EQ(tokenizer().added_tokens().size(), 1u);
  EXPECT_EQ(tokenizer().added_tokens()[0].content, "<|endoftext|>");
  EXPECT_TRUE(tokenizer().added_tokens()[0].special);
}

TEST_P(GoldenTest, CasesEncodeToTheirIds) {
  ASSERT_FALSE(Cases().empty());
  for (const Case& c : Cases()) {
    EXPECT_THAT(EncodeOk(tokenizer(), c.text), ElementsAreArray(c.ids))
        << "text: \"" << c.text << "\"";
  }
}

TEST_P(GoldenTest, CasesDecodeBack) {
  for (const Case& c : Cases()) {
    EXPECT_EQ(DecodeOk(tokenizer(), c.ids), c.text);
  }
}

TEST_P(GoldenTest, StreamingEqualsDecode) {
  for (const Case& c : Cases()) {
    EXPECT_EQ(Join(Stream(tokenizer(), c.ids)), c.text);
  }
}

TEST_P(GoldenTest, MoondreamPromptTemplates) {
  EXPECT_THAT(EncodeOk(tokenizer(), "\n\nQuestion:"),
              ElementsAre(198, 198, 24361, 25));
  EXPECT_THAT(EncodeOk(tokenizer(), "\n\nAnswer:"),
              ElementsAre(198, 198, 33706, 25));
  EXPECT_THAT(EncodeOk(tokenizer(), "\n\nPoint:"),
              ElementsAre(198, 198, 12727, 25));
  EXPECT_THAT(EncodeOk(tokenizer(), " gaze\n\n"), ElementsAre(17841, 628));
}

TEST_P(GoldenTest, EndOfTextInUserTextIsPlainText) {
  const std::vector<int> ids = EncodeOk(tokenizer(), "<|endoftext|>");
  EXPECT_THAT(ids, ElementsAre(27, 91, 437, 1659, 5239, 91, 29));
  const std::vector<int> sentence =
      EncodeOk(tokenizer(), "Hello <|endoftext|> world");
  EXPECT_THAT(sentence, Not(Contains(kEndOfText)));
  EXPECT_EQ(DecodeOk(tokenizer(), sentence), "Hello <|endoftext|> world");
}

TEST_P(GoldenTest, SpecialTokenLookup) {
  absl::StatusOr<int> eos = tokenizer().SpecialTokenId("<|endoftext|>");
  ASSERT_TRUE(eos.ok()) << eos.status();
  EXPECT_EQ(*eos, kEndOfText);
  EXPECT_EQ(DecodeOk(tokenizer(), {15496, kEndOfText}), "Hello<|endoftext|>");
  EXPECT_TRUE(
      absl::IsNotFound(tokenizer().SpecialTokenId("<|startoftext|>").status()));
  EXPECT_TRUE(absl::IsNotFound(tokenizer().SpecialTokenId("Hello").status()));
}

TEST_P(GoldenTest, LongPiecesMergeLikeShortOnes) {
  // One 143-byte word and one 91-byte run of symbols: longer than the
  // fixed-array path, so they take the heap path. Ids from OpenAI's
  // encoder.py.
  EXPECT_THAT(
      EncodeOk(tokenizer(),
               "SupercalifragilisticexpialidociousAntidisestablishmentarianism"
               "Pneumonoultramicroscopicsilicovolcanoconiosis"
               "Hippopotomonstrosesquippedaliophobia"),
      ElementsAre(12442, 9948, 361, 22562, 346, 396, 501, 42372, 498, 312,
                  32346, 13217, 29207, 44390, 3699, 1042, 47, 25668, 261, 25955,
                  859, 2500, 1416, 404, 873, 41896, 709, 349, 5171, 36221,
                  42960, 39, 3974, 43372, 16698, 48288, 274, 421, 3949, 7344,
                  19851));
  const std::string symbols =
      absl::StrCat("👍🏽👨‍👩‍👧🎉🎉🎉",
                   "→←‼️“”", "«»§¶†‡•…‰′″‹›");
  EXPECT_THAT(
      EncodeOk(tokenizer(), symbols),
      ElementsAre(41840, 235, 8582, 237, 121, 41840, 101, 447, 235, 41840, 102,
                  447, 235, 41840, 100, 8582, 236, 231, 8582, 236, 231, 8582,
                  236, 231, 39310, 29705, 238, 447, 120, 37929, 447, 250, 447,
                  251, 24328, 17730, 16273, 26604, 33912, 447, 94, 3581, 1399,
                  447, 108, 17478, 12237, 447, 117, 447, 118));
  std::string ab;
  for (int i = 0; i < 40; ++i) ab += "ab";
  EXPECT_THAT(EncodeOk(tokenizer(), ab),
              ElementsAreArray(std::vector<int>(40, 397)));  // "ab" = 397
}

TEST_P(GoldenTest, HugePieceRoundTrips) {
  std::string text(200000, 'x');
  text += " and 日本語";
  const std::vector<int> ids = EncodeOk(tokenizer(), text);
  EXPECT_LT(ids.size(), text.size() / 2);
  EXPECT_EQ(DecodeOk(tokenizer(), ids), text);
}

TEST_P(GoldenTest, InvalidUtf8IsRefused) {
  const absl::StatusOr<std::vector<int>> ids =
      tokenizer().Encode("caf\xC3\xA9 \xFF");
  ASSERT_FALSE(ids.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(ids.status()));
  EXPECT_THAT(std::string(ids.status().message()), HasSubstr("byte offset 6"));
}

TEST_P(GoldenTest, UnknownIdsAreErrors) {
  for (int id : {-1, 50257, 1 << 30}) {
    absl::StatusOr<std::string> text = tokenizer().Decode({15496, id});
    ASSERT_FALSE(text.ok()) << id;
    EXPECT_TRUE(absl::IsInvalidArgument(text.status()));
    EXPECT_THAT(std::string(text.status().message()), HasSubstr("position 1"));
    EXPECT_THAT(std::string(text.status().message()),
                HasSubstr(absl::StrCat(id)));
  }
}

TEST_P(GoldenTest, EmojiStreamsWholeCharacters) {
  // 👍🏽 (thumbs up, skin tone) is split across tokens mid-character.
  const std::string text = "Nice 👍🏽 and 👨‍👩‍👧!";
  const std::vector<int> ids = EncodeOk(tokenizer(), text);
  int n_partial_tokens = 0;
  for (int id : ids) {
    n_partial_tokens += !ValidateUtf8(*tokenizer().TokenBytes(id)).ok();
  }
  ASSERT_GT(n_partial_tokens, 0) << "the case must split a character";

  const std::vector<std::string> chunks = Stream(tokenizer(), ids);
  int n_empty = 0;
  for (const std::string& chunk : chunks) n_empty += chunk.empty();
  EXPECT_GT(n_empty, 1);  // held back at least once (Flush is empty too)
  EXPECT_EQ(chunks.back(), "");
  EXPECT_EQ(Join(chunks), DecodeOk(tokenizer(), ids));
  EXPECT_EQ(Join(chunks), text);
}

TEST_P(GoldenTest, StreamingReplacesBrokenCharacters) {
  const int f0 = ByteTokenId(tokenizer(), 0xF0);
  const int x9f = ByteTokenId(tokenizer(), 0x9F);
  const int a = ByteTokenId(tokenizer(), 'a');
  const int x80 = ByteTokenId(tokenizer(), 0x80);
  StreamingDetokenizer stream(&tokenizer());
  EXPECT_EQ(*stream.Push(f0), "");
  EXPECT_EQ(*stream.Push(x9f), "");
  EXPECT_EQ(*stream.Push(a),
            "\xEF\xBF\xBD"
            "a");                                // U+FFFD, then 'a'
  EXPECT_EQ(*stream.Push(x80), "\xEF\xBF\xBD");  // a stray continuation
  EXPECT_EQ(*stream.Push(f0), "");
  EXPECT_FALSE(stream.Push(50257).ok());  // unknown, stream unchanged
  EXPECT_EQ(stream.Flush(), "\xEF\xBF\xBD");
  EXPECT_EQ(stream.Flush(), "");
  EXPECT_EQ(DecodeOk(tokenizer(), {f0, x9f, a, x80, f0}),
            "\xEF\xBF\xBD"
            "a\xEF\xBF\xBD\xEF\xBF\xBD");
}

INSTANTIATE_TEST_SUITE_P(Loaders, GoldenTest,
                         ::testing::Values(Loader::kHuggingFace,
                                           Loader::kGpt2Files),
                         [](const ::testing::TestParamInfo<Loader>& info) {
                           return info.param == Loader::kHuggingFace
                                      ? "TokenizerJson"
                                      : "EncoderJsonVocabBpe";
                         });

// ---------------------------------------------------------------------------
// Pre-tokenization and UTF-8.

std::vector<std::string> Pieces(absl::string_view text) {
  absl::StatusOr<std::vector<absl::string_view>> pieces = Gpt2Pretokenize(text);
  EXPECT_TRUE(pieces.ok()) << pieces.status();
  std::vector<std::string> out;
  if (pieces.ok()) {
    for (absl::string_view piece : *pieces) out.emplace_back(piece);
  }
  return out;
}

TEST(PretokenizeTest, FollowsGpt2Pattern) {
  EXPECT_THAT(Pieces("a    b     c"),
              ElementsAre("a", "   ", " b", "    ", " c"));
  EXPECT_THAT(Pieces("Hello\n\nworld"),
              ElementsAre("Hello", "\n", "\n", "world"));
  EXPECT_THAT(Pieces(" gaze\n\n"), ElementsAre(" gaze", "\n\n"));
  EXPECT_THAT(Pieces("x  "), ElementsAre("x", "  "));
  EXPECT_THAT(Pieces("  x"), ElementsAre(" ", " x"));
  EXPECT_THAT(Pieces("\t x"), ElementsAre("\t", " x"));
  EXPECT_THAT(Pieces("\r\n"), ElementsAre("\r\n"));
  EXPECT_THAT(Pieces("pi is 3.14159!"),
              ElementsAre("pi", " is", " 3", ".", "14159", "!"));
  EXPECT_THAT(Pieces("abc123def"), ElementsAre("abc", "123", "def"));
  EXPECT_THAT(Pieces("a ... b"), ElementsAre("a", " ...", " b"));
  EXPECT_THAT(Pieces(""), ElementsAre());
}

TEST(PretokenizeTest, Contractions) {
  EXPECT_THAT(Pieces("I'm we'll they've you're it's don't I'd"),
              ElementsAre("I", "'m", " we", "'ll", " they", "'ve", " you",
                          "'re", " it", "'s", " don", "'t", " I", "'d"));
  // Case-sensitive, only at the start of a match, and greedy others win.
  EXPECT_THAT(Pieces("IT'S"), ElementsAre("IT", "'", "S"));
  EXPECT_THAT(Pieces("x 's"), ElementsAre("x", " '", "s"));
  EXPECT_THAT(Pieces("?'s"), ElementsAre("?'", "s"));
  EXPECT_THAT(Pieces("'sup"), ElementsAre("'s", "up"));
  EXPECT_THAT(Pieces("'"), ElementsAre("'"));
}

TEST(PretokenizeTest, UnicodeClasses) {
  // Letters and numbers by general category, in any script.
  EXPECT_THAT(Pieces("naïve café"), ElementsAre("naïve", " café"));
  EXPECT_THAT(Pieces("日本語のテキスト"), ElementsAre("日本語のテキスト"));
  EXPECT_THAT(Pieces("٣٤ ½"), ElementsAre("٣٤", " ½"));  // Nd, No
  // A combining mark is not a letter.
  EXPECT_THAT(Pieces("e\xCC\x81t"), ElementsAre("e", "\xCC\x81", "t"));
  // No-break and ideographic spaces are \s but not the optional ' '.
  EXPECT_THAT(Pieces("a\xC2\xA0"
                     "b"),
              ElementsAre("a", "\xC2\xA0", "b"));
  EXPECT_THAT(Pieces("a \xE3\x80\x80"
                     "b"),
              ElementsAre("a", " ", "\xE3\x80\x80", "b"));
  // U+001C..U+001F and U+200B are not White_Space.
  EXPECT_THAT(Pieces("a\x1C"
                     "b"),
              ElementsAre("a", "\x1C", "b"));
  EXPECT_THAT(Pieces("a\xE2\x80\x8B"
                     "b"),
              ElementsAre("a", "\xE2\x80\x8B", "b"));
  EXPECT_EQ(ClassifyCodePoint(0x85), CharClass::kSpace);
  EXPECT_EQ(ClassifyCodePoint(0x2028), CharClass::kSpace);
  EXPECT_EQ(ClassifyCodePoint(0x01C5), CharClass::kLetter);  // Lt
  EXPECT_EQ(ClassifyCodePoint(0x2167), CharClass::kNumber);  // Nl
  EXPECT_EQ(ClassifyCodePoint(0x1F600), CharClass::kOther);
}

TEST(Utf8Test, ErrorsNameTheByteOffset) {
  struct Bad {
    std::string text;
    int offset;
  };
  const Bad bad[] = {
      {"\xFF", 0},
      {"abc\xC3", 3},                    // truncated
      {"ab\xC0\xAF", 2},                 // overlong '/'
      {"\xED\xA0\x80", 0},               // surrogate U+D800
      {"\xF4\x90\x80\x80", 0},           // above U+10FFFF
      {"a\x80", 1},                      // stray continuation byte
      {"ok\xE2\x82", 2},                 // truncated 3-byte
      {"x\xE2\x28\xA1", 1},              // bad continuation
      {"0123456789abcdef\xF0\x9F", 16},  // after the ASCII fast path
  };
  for (const Bad& b : bad) {
    const absl::Status status = ValidateUtf8(b.text);
    EXPECT_TRUE(absl::IsInvalidArgument(status)) << status;
    EXPECT_THAT(std::string(status.message()),
                HasSubstr(absl::StrCat("byte offset ", b.offset)));
    EXPECT_FALSE(Gpt2Pretokenize(b.text).ok());
  }
  EXPECT_TRUE(ValidateUtf8("").ok());
  EXPECT_TRUE(ValidateUtf8("\xF4\x8F\xBF\xBF \xEF\xBF\xBD").ok());
}

TEST(Utf8Test, RepairReplacesMaximalSubparts) {
  const std::string r = "\xEF\xBF\xBD";
  EXPECT_EQ(ToValidUtf8("ok"), "ok");
  EXPECT_EQ(ToValidUtf8("\xF0\x9F\x91"
                        "a"),
            r + "a");
  EXPECT_EQ(ToValidUtf8("\xE0\x80\x80"), r + r + r);
  EXPECT_EQ(ToValidUtf8("\xED\xA0\x80"), r + r + r);
  EXPECT_EQ(ToValidUtf8("\xC3"), r);
  EXPECT_EQ(ToValidUtf8("\xC3\xA9\xFF\xC3\xA9"), "\xC3\xA9" + r + "\xC3\xA9");
  EXPECT_EQ(ToValidUtf8("\xF4\x90"), r + r);

  Utf8Repairer repairer;
  std::string out;
  repairer.Append("\xF0\x9F", &out);
  EXPECT_EQ(out, "");
  EXPECT_TRUE(repairer.has_pending());
  repairer.Append("\x91\x8D", &out);
  EXPECT_EQ(out, "\xF0\x9F\x91\x8D");
  EXPECT_FALSE(repairer.has_pending());
}

// ---------------------------------------------------------------------------
// GPT-2 cut to its first 1,792 merges (the tiny test model's vocabulary).

TEST(CutTokenizerTest, StaysBelowTheCut) {
  for (Loader loader : {Loader::kHuggingFace, Loader::kGpt2Files}) {
    const Tokenizer& tiny = Shared(loader, /*tiny=*/true);
    const Tokenizer& full = Shared(loader);
    EXPECT_EQ(tiny.vocab_size(), 256 + kTinyMerges);
    EXPECT_EQ(tiny.n_merges(), kTinyMerges);
    EXPECT_TRUE(tiny.added_tokens().empty());
    EXPECT_FALSE(tiny.SpecialTokenId("<|endoftext|>").ok());
    EXPECT_FALSE(tiny.Decode({2048}).ok());
    for (const Case& c : Cases()) {
      const std::vector<int> ids = EncodeOk(tiny, c.text);
      for (int id : ids) EXPECT_LT(id, 256 + kTinyMerges) << c.text;
      EXPECT_EQ(DecodeOk(tiny, ids), c.text);
      EXPECT_EQ(Join(Stream(tiny, ids)), c.text);
      // GPT-2 learned its merges in order, so where the full tokenizer only
      // uses ids below the cut, the cut one must agree.
      bool below = true;
      for (int id : c.ids) below &= id < 256 + kTinyMerges;
      if (below) {
        EXPECT_EQ(ids, c.ids) << c.text;
      }
    }
    EXPECT_THAT(EncodeOk(tiny, "\n\nQuestion:"),
                Not(ElementsAreArray(EncodeOk(full, "\n\nQuestion:"))));
  }
  for (const Case& c : Cases()) {
    EXPECT_EQ(EncodeOk(Shared(Loader::kHuggingFace, true), c.text),
              EncodeOk(Shared(Loader::kGpt2Files, true), c.text));
  }
}

TEST(CutTokenizerTest, MaxMergesBounds) {
  TokenizerOptions bytes_only;
  bytes_only.max_merges = 0;
  absl::StatusOr<Tokenizer> tokenizer = Load(Loader::kGpt2Files, bytes_only);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ(tokenizer->vocab_size(), 256);
  EXPECT_THAT(EncodeOk(*tokenizer, "hi"), ElementsAre(71, 72));

  for (int bad : {-1, 50001}) {
    TokenizerOptions options;
    options.max_merges = bad;
    absl::StatusOr<Tokenizer> refused = Load(Loader::kHuggingFace, options);
    EXPECT_TRUE(absl::IsInvalidArgument(refused.status())) << bad;
    EXPECT_THAT(std::string(refused.status().message()),
                HasSubstr("max_merges"));
  }
}

// ---------------------------------------------------------------------------
// Writing tokenizer.json.

void ExpectSameTokenizer(const Tokenizer& a, const Tokenizer& b) {
  ASSERT_EQ(a.vocab_size(), b.vocab_size());
  EXPECT_EQ(a.n_merges(), b.n_merges());
  ASSERT_EQ(a.added_tokens().size(), b.added_tokens().size());
  for (size_t i = 0; i < a.added_tokens().size(); ++i) {
    EXPECT_EQ(a.added_tokens()[i].id, b.added_tokens()[i].id);
    EXPECT_EQ(a.added_tokens()[i].content, b.added_tokens()[i].content);
    EXPECT_EQ(a.added_tokens()[i].special, b.added_tokens()[i].special);
  }
  for (int id = 0; id < a.vocab_size(); ++id) {
    absl::StatusOr<absl::string_view> x = a.TokenBytes(id);
    absl::StatusOr<absl::string_view> y = b.TokenBytes(id);
    ASSERT_EQ(x.ok(), y.ok()) << id;
    if (x.ok()) {
      EXPECT_EQ(*x, *y) << id;
    }
  }
  for (const Case& c : Cases()) {
    EXPECT_EQ(EncodeOk(a, c.text), EncodeOk(b, c.text)) << c.text;
  }
}

TEST(WriteTokenizerJsonTest, FullReloadsIdentical) {
  const std::string path = ::testing::TempDir() + "/gpt2_tokenizer.json";
  ASSERT_TRUE(
      WriteHuggingFaceTokenizerJson(Shared(Loader::kGpt2Files), path).ok());
  absl::StatusOr<Tokenizer> reloaded = Tokenizer::FromHuggingFaceJson(path);
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  ExpectSameTokenizer(Shared(Loader::kHuggingFace), *reloaded);
}

TEST(WriteTokenizerJsonTest, CutReloadsIdenticalWithoutOptions) {
  const std::string path = ::testing::TempDir() + "/tiny_tokenizer.json";
  ASSERT_TRUE(
      WriteHuggingFaceTokenizerJson(Shared(Loader::kHuggingFace, true), path)
          .ok());
  absl::StatusOr<Tokenizer> reloaded = Tokenizer::FromHuggingFaceJson(path);
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  EXPECT_EQ(reloaded->vocab_size(), 2048);
  ExpectSameTokenizer(Shared(Loader::kHuggingFace, true), *reloaded);

  // A written file is the same whichever loader read the source.
  absl::StatusOr<std::string> a =
      Shared(Loader::kHuggingFace, true).ToHuggingFaceJson();
  absl::StatusOr<std::string> b =
      Shared(Loader::kGpt2Files, true).ToHuggingFaceJson();
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, *b);
}

TEST(WriteTokenizerJsonTest, UnwritablePathIsAnError) {
  EXPECT_FALSE(WriteHuggingFaceTokenizerJson(Shared(Loader::kHuggingFace, true),
                                             "/nonexistent-dir/tokenizer.json")
                   .ok());
}

// ---------------------------------------------------------------------------
// Malformed files, on a small hand-made vocabulary: the 256 bytes (in byte
// order), "hi" = 256, "his" = 257, and <|endoftext|> = 258.

std::string BytePiece(int byte) {
  const bool printable = (byte >= '!' && byte <= '~') ||
                         (byte >= 0xA1 && byte <= 0xAC) ||
                         (byte >= 0xAE && byte <= 0xFF);
  int code_point = byte;
  if (!printable) {
    code_point = 0x100;
    for (int b = 0; b < byte; ++b) {
      code_point += !((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) ||
                      (b >= 0xAE && b <= 0xFF));
    }
  }
  std::string utf8;
  if (code_point < 0x80) {
    utf8.push_back(static_cast<char>(code_point));
  } else {
    utf8.push_back(static_cast<char>(0xC0 | (code_point >> 6)));
    utf8.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  }
  return utf8;
}

Json MiniDoc() {
  Json vocab = Json::object();
  for (int byte = 0; byte < 256; ++byte) vocab[BytePiece(byte)] = byte;
  vocab["hi"] = 256;
  vocab["his"] = 257;
  vocab["<|endoftext|>"] = 258;
  const Json byte_level = {{"type", "ByteLevel"},
                           {"add_prefix_space", false},
                           {"trim_offsets", true},
                           {"use_regex", true}};
  return {
      {"version", "1.0"},
      {"added_tokens",
       {{{"id", 258}, {"content", "<|endoftext|>"}, {"special", true}}}},
      {"normalizer", nullptr},
      {"pre_tokenizer", byte_level},
      {"post_processor", byte_level},
      {"decoder", byte_level},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"vocab", vocab},
        {"merges", {"h i", "hi s"}}}},
  };
}

absl::StatusOr<Tokenizer> FromDoc(const Json& doc) {
  return Tokenizer::FromHuggingFaceJsonText(doc.dump());
}

TEST(MalformedTokenizerJsonTest, MiniVocabularyLoads) {
  absl::StatusOr<Tokenizer> tokenizer = FromDoc(MiniDoc());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ(tokenizer->vocab_size(), 259);
  EXPECT_THAT(EncodeOk(*tokenizer, "his"), ElementsAre(257));
  // "!" is a piece of its own; the space stays a byte token (no "Ġh").
  EXPECT_THAT(EncodeOk(*tokenizer, "hi! his"), ElementsAre(256, '!', ' ', 257));
  EXPECT_EQ(DecodeOk(*tokenizer, {257, 258}), "his<|endoftext|>");

  Json pairs = MiniDoc();
  pairs["model"]["merges"] =
      Json::array({Json::array({"h", "i"}), Json::array({"hi", "s"})});
  absl::StatusOr<Tokenizer> from_pairs = FromDoc(pairs);
  ASSERT_TRUE(from_pairs.ok()) << from_pairs.status();
  EXPECT_THAT(EncodeOk(*from_pairs, "his"), ElementsAre(257));
}

TEST(MalformedTokenizerJsonTest, ClearErrors) {
  struct Bad {
    const char* name;
    std::function<void(Json&)> mutate;
    absl::StatusCode code;
    const char* message;
  };
  using absl::StatusCode;
  const Bad bad[] = {
      {"top level array", [](Json& d) { d = Json::array(); },
       StatusCode::kInvalidArgument, "top level"},
      {"no model", [](Json& d) { d.erase("model"); },
       StatusCode::kInvalidArgument, "no \"model\""},
      {"WordPiece", [](Json& d) { d["model"]["type"] = "WordPiece"; },
       StatusCode::kUnimplemented, "only BPE"},
      {"no vocab", [](Json& d) { d["model"].erase("vocab"); },
       StatusCode::kInvalidArgument, "model.vocab"},
      {"string id", [](Json& d) { d["model"]["vocab"]["hi"] = "256"; },
       StatusCode::kInvalidArgument, "must be an integer"},
      {"negative id", [](Json& d) { d["model"]["vocab"]["hi"] = -4; },
       StatusCode::kInvalidArgument, "outside"},
      {"shared id", [](Json& d) { d["model"]["vocab"]["his"] = 256; },
       StatusCode::kInvalidArgument, "share id 256"},
      {"missing byte", [](Json& d) { d["model"]["vocab"].erase("\xC4\x8A"); },
       StatusCode::kInvalidArgument, "no token for byte 10"},
      {"merges not array", [](Json& d) { d["model"]["merges"] = "h i"; },
       StatusCode::kInvalidArgument, "model.merges must be an array"},
      {"merge without space", [](Json& d) { d["model"]["merges"][1] = "his"; },
       StatusCode::kInvalidArgument, "model.merges[1]"},
      {"merge of one",
       [](Json& d) { d["model"]["merges"][0] = Json::array({"h"}); },
       StatusCode::kInvalidArgument, "model.merges[0]"},
      {"unknown symbol", [](Json& d) { d["model"]["merges"][1] = "hi ?!"; },
       StatusCode::kInvalidArgument, "'?!' is not in the vocabulary"},
      {"unknown merged token", [](Json& d) { d["model"]["merges"][1] = "i h"; },
       StatusCode::kInvalidArgument, "the merged token 'ih'"},
      {"repeated merge", [](Json& d) { d["model"]["merges"][1] = "h i"; },
       StatusCode::kInvalidArgument, "repeats merge 0"},
      {"normalizer",
       [](Json& d) {
         d["normalizer"] = {{"type", "NFC"}};
       },
       StatusCode::kUnimplemented, "normalizer"},
      {"no pre_tokenizer", [](Json& d) { d.erase("pre_tokenizer"); },
       StatusCode::kUnimplemented, "pre_tokenizer"},
      {"Whitespace pre_tokenizer",
       [](Json& d) {
         d["pre_tokenizer"] = {{"type", "Whitespace"}};
       },
       StatusCode::kUnimplemented, "only ByteLevel"},
      {"add_prefix_space",
       [](Json& d) { d["pre_tokenizer"]["add_prefix_space"] = true; },
       StatusCode::kUnimplemented, "add_prefix_space"},
      {"dropout", [](Json& d) { d["model"]["dropout"] = 0.1; },
       StatusCode::kUnimplemented, "dropout"},
      {"added token without id",
       [](Json& d) { d["added_tokens"][0].erase("id"); },
       StatusCode::kInvalidArgument, "added_tokens[0]"},
      {"added token clash",
       [](Json& d) {
         d["added_tokens"].push_back({{"id", 258}, {"content", "<pad>"}});
       },
       StatusCode::kInvalidArgument, "clash"},
  };
  for (const Bad& b : bad) {
    Json doc = MiniDoc();
    b.mutate(doc);
    const absl::Status status = FromDoc(doc).status();
    EXPECT_EQ(status.code(), b.code) << b.name << ": " << status;
    EXPECT_THAT(std::string(status.message()), HasSubstr(b.message)) << b.name;
  }

  const absl::Status not_json =
      Tokenizer::FromHuggingFaceJsonText("{\"model\": ").status();
  EXPECT_TRUE(absl::IsInvalidArgument(not_json)) << not_json;
  EXPECT_THAT(std::string(not_json.message()), HasSubstr("not valid JSON"));

  const absl::Status missing =
      Tokenizer::FromHuggingFaceJson("/nonexistent/tokenizer.json").status();
  EXPECT_TRUE(absl::IsNotFound(missing)) << missing;
  EXPECT_THAT(std::string(missing.message()),
              HasSubstr("/nonexistent/tokenizer.json"));
}

TEST(MalformedGpt2FilesTest, ClearErrors) {
  const std::string dir = ::testing::TempDir();
  const std::string encoder = DataPath("encoder.json");
  auto write = [&](const std::string& name, const std::string& text) {
    const std::string path = absl::StrCat(dir, "/", name);
    std::ofstream(path, std::ios::binary) << text;
    return path;
  };
  EXPECT_TRUE(absl::IsNotFound(
      Tokenizer::FromGpt2Files(dir + "/none.json", DataPath("vocab.bpe"))
          .status()));
  EXPECT_TRUE(absl::IsNotFound(
      Tokenizer::FromGpt2Files(encoder, dir + "/none.bpe").status()));

  const absl::Status bad_line =
      Tokenizer::FromGpt2Files(
          encoder, write("bad_line.bpe", "#version: 0.2\nĠ t\nĠa\n"))
          .status();
  EXPECT_TRUE(absl::IsInvalidArgument(bad_line)) << bad_line;
  EXPECT_THAT(std::string(bad_line.message()), HasSubstr("line 3"));

  const absl::Status unknown =
      Tokenizer::FromGpt2Files(encoder,
                               write("unknown.bpe", "#version: 0.2\nĠ zzqx\n"))
          .status();
  EXPECT_TRUE(absl::IsInvalidArgument(unknown)) << unknown;
  EXPECT_THAT(std::string(unknown.message()),
              HasSubstr("'zzqx' is not in the vocabulary"));

  const absl::Status not_object =
      Tokenizer::FromGpt2Files(write("list.json", "[1, 2]"),
                               DataPath("vocab.bpe"))
          .status();
  EXPECT_TRUE(absl::IsInvalidArgument(not_object)) << not_object;
}

}  // namespace
}  // namespace md
