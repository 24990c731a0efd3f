#include "model/io/safetensors.h"

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace md {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// --- Building files in memory. ---

std::string U64LittleEndian(uint64_t v) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  return out;
}

// Length prefix + header + data, with no checking at all.
std::string RawFile(absl::string_view header_json, absl::string_view data) {
  return absl::StrCat(U64LittleEndian(header_json.size()), header_json, data);
}

struct TensorSpec {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

// Lays the tensors out back to back in the given order and writes a header
// that indexes them; `metadata_json` is spliced in verbatim when non-empty.
std::string BuildFile(const std::vector<TensorSpec>& tensors,
                      absl::string_view metadata_json = "") {
  std::vector<std::string> entries;
  if (!metadata_json.empty()) {
    entries.push_back(absl::StrCat("\"__metadata__\":", metadata_json));
  }
  std::string data;
  for (const TensorSpec& t : tensors) {
    const size_t begin = data.size();
    data += t.bytes;
    entries.push_back(
        absl::StrCat("\"", t.name, "\":{\"dtype\":\"", t.dtype,
                     "\",\"shape\":[", absl::StrJoin(t.shape, ","),
                     "],\"data_offsets\":[", begin, ",", data.size(), "]}"));
  }
  return RawFile(absl::StrCat("{", absl::StrJoin(entries, ","), "}"), data);
}

// `n` bytes counting up from `seed`, so every tensor's content is distinct.
std::string Pattern(size_t n, uint8_t seed) {
  std::string out(n, '\0');
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<char>(seed + i);
  return out;
}

std::vector<TensorSpec> ValidTensors() {
  return {
      {"text.wte", "F16", {2, 3}, Pattern(12, 0x10)},
      {"vision.norm", "BF16", {4}, Pattern(8, 0x40)},
      {"proj.w", "F32", {2, 2}, Pattern(16, 0x60)},
      {"ids", "I64", {3}, Pattern(24, 0x80)},
      {"mask", "U8", {5}, Pattern(5, 0xc0)},
  };
}

std::string ValidFile() {
  return BuildFile(ValidTensors(), R"({"format":"pt","source":"test"})");
}

// A one-tensor file whose entry for "w" is `entry_json` over `data`.
std::string OneEntry(absl::string_view entry_json, absl::string_view data) {
  return RawFile(absl::StrCat(R"({"w":)", entry_json, "}"), data);
}

// The parse must fail with InvalidArgument, naming the file and each word.
void ExpectInvalid(const std::string& bytes,
                   const std::vector<std::string>& words) {
  auto file = SafetensorsFile::FromBytes(bytes, "bad.safetensors");
  ASSERT_FALSE(file.ok()) << "expected an error mentioning "
                          << absl::StrJoin(words, ", ");
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument)
      << file.status();
  EXPECT_THAT(file.status().message(), HasSubstr("bad.safetensors"));
  for (const std::string& word : words) {
    EXPECT_THAT(file.status().message(), HasSubstr(word));
  }
}

std::string WriteTempFile(const std::string& name, const std::string& bytes) {
  const std::string path = absl::StrCat(::testing::TempDir(), "/", name);
  std::FILE* f = std::fopen(path.c_str(), "wb");
  EXPECT_NE(f, nullptr) << path;
  if (f == nullptr) return path;
  EXPECT_EQ(std::fwrite(bytes.data(), 1, bytes.size(), f), bytes.size());
  std::fclose(f);
  return path;
}

void ExpectValidContents(const SafetensorsFile& file) {
  EXPECT_THAT(file.Names(),
              ElementsAre("ids", "mask", "proj.w", "text.wte", "vision.norm"));
  for (const TensorSpec& spec : ValidTensors()) {
    SCOPED_TRACE(spec.name);
    EXPECT_TRUE(file.Contains(spec.name));
    auto view = file.Get(spec.name);
    ASSERT_TRUE(view.ok()) << view.status();
    EXPECT_EQ(view->name, spec.name);
    EXPECT_EQ(DTypeName(view->dtype), spec.dtype);
    EXPECT_EQ(view->shape, spec.shape);
    ASSERT_EQ(view->n_bytes, spec.bytes.size());
    EXPECT_EQ(view->n_bytes, static_cast<size_t>(view->NumElements()) *
                                 DTypeSize(view->dtype));
    ASSERT_NE(view->data, nullptr);
    EXPECT_EQ(std::memcmp(view->data, spec.bytes.data(), spec.bytes.size()), 0);
  }
  EXPECT_EQ(file.metadata().size(), 2u);
  EXPECT_EQ(file.metadata().at("format"), "pt");
  EXPECT_EQ(file.metadata().at("source"), "test");
}

// --- DTypes. ---

TEST(DTypeTest, SizesAndNames) {
  struct Case {
    DType dtype;
    size_t size;
    std::string_view name;
  };
  const Case cases[] = {
      {DType::kBool, 1, "BOOL"}, {DType::kU8, 1, "U8"},
      {DType::kI8, 1, "I8"},     {DType::kI16, 2, "I16"},
      {DType::kI32, 4, "I32"},   {DType::kI64, 8, "I64"},
      {DType::kF16, 2, "F16"},   {DType::kBF16, 2, "BF16"},
      {DType::kF32, 4, "F32"},   {DType::kF64, 8, "F64"},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(DTypeSize(c.dtype), c.size) << c.name;
    EXPECT_EQ(DTypeName(c.dtype), c.name);
  }
}

TEST(TensorViewTest, NumElements) {
  TensorView view;
  EXPECT_EQ(view.NumElements(), 1);  // A scalar.
  view.shape = {2, 3, 4};
  EXPECT_EQ(view.NumElements(), 24);
  view.shape = {5, 0};
  EXPECT_EQ(view.NumElements(), 0);
}

// --- Valid files. ---

TEST(SafetensorsTest, ReadsValidFileFromBytes) {
  auto file = SafetensorsFile::FromBytes(ValidFile(), "valid.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->display_name(), "valid.safetensors");
  ExpectValidContents(**file);
}

TEST(SafetensorsTest, OpensValidFileFromDisk) {
  const std::string path = WriteTempFile("valid.safetensors", ValidFile());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->display_name(), path);
  ExpectValidContents(**file);
}

TEST(SafetensorsTest, AcceptsOffsetsOutOfNameOrder) {
  // Offsets need not follow the order the entries are written in.
  const std::string data = Pattern(12, 0);
  const std::string header =
      R"({"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("a":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})";
  auto file = SafetensorsFile::FromBytes(RawFile(header, data));
  ASSERT_TRUE(file.ok()) << file.status();
  auto a = (*file)->Get("a");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(std::memcmp(a->data, data.data() + 8, 4), 0);
}

TEST(SafetensorsTest, AcceptsScalarEmptyTensorAndPaddedHeader) {
  std::string header =
      R"({"s":{"dtype":"F64","shape":[],"data_offsets":[0,8]},)"
      R"("e":{"dtype":"BOOL","shape":[0,7],"data_offsets":[8,8]}})";
  header.append(8 - header.size() % 8, ' ');  // Writers pad with spaces.
  auto file = SafetensorsFile::FromBytes(RawFile(header, Pattern(8, 1)));
  ASSERT_TRUE(file.ok()) << file.status();
  auto s = (*file)->Get("s");
  ASSERT_TRUE(s.ok());
  EXPECT_TRUE(s->shape.empty());
  EXPECT_EQ(s->NumElements(), 1);
  auto e = (*file)->Get("e");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->n_bytes, 0u);
  EXPECT_EQ(e->NumElements(), 0);
  EXPECT_TRUE((*file)->metadata().empty());
}

TEST(SafetensorsTest, AcceptsEmptyHeaderObject) {
  auto file = SafetensorsFile::FromBytes(RawFile("{}", ""));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_TRUE((*file)->Names().empty());
}

TEST(SafetensorsTest, GetMissingTensorIsNotFound) {
  auto file = SafetensorsFile::FromBytes(ValidFile(), "valid.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_FALSE((*file)->Contains("nope"));
  auto view = (*file)->Get("nope");
  ASSERT_FALSE(view.ok());
  EXPECT_EQ(view.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(view.status().message(), HasSubstr("'nope'"));
  EXPECT_THAT(view.status().message(), HasSubstr("not found"));
  EXPECT_THAT(view.status().message(), HasSubstr("valid.safetensors"));
}

// --- Open() errors. ---

TEST(SafetensorsOpenTest, NonexistentPathIsNotFound) {
  const std::string path =
      absl::StrCat(::testing::TempDir(), "/does_not_exist.safetensors");
  auto file = SafetensorsFile::Open(path);
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(file.status().message(), HasSubstr(path));
}

TEST(SafetensorsOpenTest, EmptyFileIsTruncated) {
  const std::string path = WriteTempFile("empty.safetensors", "");
  auto file = SafetensorsFile::Open(path);
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(file.status().message(), HasSubstr(path));
  EXPECT_THAT(file.status().message(), HasSubstr("empty"));
  EXPECT_THAT(file.status().message(), HasSubstr("truncated"));
}

TEST(SafetensorsOpenTest, ShortFileIsTruncated) {
  const std::string path =
      WriteTempFile("short.safetensors", std::string("\x05\0\0", 3));
  auto file = SafetensorsFile::Open(path);
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(file.status().message(), HasSubstr(path));
  EXPECT_THAT(file.status().message(), HasSubstr("truncated"));
}

TEST(SafetensorsOpenTest, MalformedFileOnDiskNamesPath) {
  const std::string path =
      WriteTempFile("bad_json.safetensors", RawFile("{oops", ""));
  auto file = SafetensorsFile::Open(path);
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(file.status().message(), HasSubstr(path));
  EXPECT_THAT(file.status().message(), HasSubstr("not valid JSON"));
}

TEST(SafetensorsOpenTest, DirectoryIsRejected) {
  auto file = SafetensorsFile::Open(::testing::TempDir());
  ASSERT_FALSE(file.ok());
  EXPECT_THAT(file.status().message(), HasSubstr(::testing::TempDir()));
}

// --- Malformed files. ---

TEST(SafetensorsMalformedTest, EmptyFile) {
  ExpectInvalid("", {"truncated", "empty"});
}

TEST(SafetensorsMalformedTest, ShorterThanLengthPrefix) {
  ExpectInvalid(std::string("\x02\0\0\0\0", 5), {"truncated", "5 bytes"});
}

TEST(SafetensorsMalformedTest, HeaderLengthZero) {
  ExpectInvalid(U64LittleEndian(0) + "{}", {"header length is 0"});
}

TEST(SafetensorsMalformedTest, HeaderLengthPastEnd) {
  ExpectInvalid(U64LittleEndian(100) + "{}",
                {"header length 100 runs past the end of the file (size 10)"});
}

TEST(SafetensorsMalformedTest, HeaderLengthHuge) {
  ExpectInvalid(U64LittleEndian(std::numeric_limits<uint64_t>::max()) + "{}",
                {"header length 18446744073709551615", "maximum"});
  // Just under the maximum still runs past this small file.
  ExpectInvalid(U64LittleEndian(SafetensorsFile::kMaxHeaderBytes) + "{}",
                {"runs past the end"});
}

TEST(SafetensorsMalformedTest, BadJson) {
  ExpectInvalid(RawFile(R"({"w": {"dtype": "F32",)", ""), {"not valid JSON"});
  ExpectInvalid(RawFile("{} trailing", ""), {"not valid JSON"});
  ExpectInvalid(RawFile(std::string("{\"\xff\":1}"), ""), {"not valid JSON"});
}

TEST(SafetensorsMalformedTest, JsonNotAnObject) {
  ExpectInvalid(RawFile("[1, 2, 3]", ""), {"not a JSON object", "array"});
  ExpectInvalid(RawFile("42", ""), {"not a JSON object"});
}

TEST(SafetensorsMalformedTest, EntryNotAnObject) {
  ExpectInvalid(OneEntry("[1]", ""), {"tensor 'w'", "not an object"});
}

TEST(SafetensorsMalformedTest, MissingFields) {
  ExpectInvalid(OneEntry(R"({"shape":[1],"data_offsets":[0,4]})", "abcd"),
                {"tensor 'w'", "missing 'dtype'"});
  ExpectInvalid(OneEntry(R"({"dtype":"F32","data_offsets":[0,4]})", "abcd"),
                {"tensor 'w'", "missing 'shape'"});
  ExpectInvalid(OneEntry(R"({"dtype":"F32","shape":[1]})", "abcd"),
                {"tensor 'w'", "missing 'data_offsets'"});
}

TEST(SafetensorsMalformedTest, FieldsOfWrongType) {
  ExpectInvalid(
      OneEntry(R"({"dtype":7,"shape":[1],"data_offsets":[0,4]})", "abcd"),
      {"tensor 'w'", "'dtype' is not a string"});
  ExpectInvalid(
      OneEntry(R"({"dtype":"F32","shape":1,"data_offsets":[0,4]})", "abcd"),
      {"tensor 'w'", "'shape' is not an array"});
  ExpectInvalid(
      OneEntry(R"({"dtype":"F32","shape":[1],"data_offsets":[0]})", "abcd"),
      {"tensor 'w'", "data_offsets", "exactly 2"});
  ExpectInvalid(
      OneEntry(R"({"dtype":"F32","shape":[1],"data_offsets":[0,4,4]})", "abcd"),
      {"tensor 'w'", "data_offsets", "exactly 2"});
  ExpectInvalid(
      OneEntry(R"({"dtype":"F32","shape":[1],"data_offsets":[-1,4]})", "abcd"),
      {"tensor 'w'", "data_offsets", "non-negative integers"});
  ExpectInvalid(
      OneEntry(R"({"dtype":"F32","shape":[1],"data_offsets":"0,4"})", "abcd"),
      {"tensor 'w'", "data_offsets"});
}

TEST(SafetensorsMalformedTest, UnknownDType) {
  ExpectInvalid(
      OneEntry(R"({"dtype":"Q","shape":[1],"data_offsets":[0,4]})", "abcd"),
      {"tensor 'w': unknown dtype 'Q'"});
  ExpectInvalid(
      OneEntry(R"({"dtype":"f32","shape":[1],"data_offsets":[0,4]})", "abcd"),
      {"tensor 'w': unknown dtype 'f32'"});
}

TEST(SafetensorsMalformedTest, NegativeShape) {
  ExpectInvalid(
      OneEntry(R"({"dtype":"U8","shape":[-4],"data_offsets":[0,4]})", "abcd"),
      {"tensor 'w'", "shape dimension 0", "negative"});
}

TEST(SafetensorsMalformedTest, NonIntegerShape) {
  ExpectInvalid(
      OneEntry(R"({"dtype":"U8","shape":[2,2.0],"data_offsets":[0,4]})",
               "abcd"),
      {"tensor 'w'", "shape dimension 1", "not a non-negative integer"});
  ExpectInvalid(
      OneEntry(R"({"dtype":"U8","shape":["4"],"data_offsets":[0,4]})", "abcd"),
      {"tensor 'w'", "shape dimension 0", "string"});
  // Larger than any uint64: nlohmann reads it as a float.
  ExpectInvalid(
      OneEntry(
          R"({"dtype":"U8","shape":[99999999999999999999],"data_offsets":[0,4]})",
          "abcd"),
      {"tensor 'w'", "shape dimension 0"});
}

TEST(SafetensorsMalformedTest, TooManyDimensions) {
  ExpectInvalid(
      OneEntry(
          R"({"dtype":"U8","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,1]})",
          "a"),
      {"tensor 'w'", "9 dimensions"});
}

TEST(SafetensorsMalformedTest, OffsetsOutOfRange) {
  ExpectInvalid(
      OneEntry(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})", "abcd"),
      {"tensor 'w'", "[0, 8]", "past the end of the data buffer (size 4)"});
  ExpectInvalid(
      OneEntry(
          R"({"dtype":"U8","shape":[1],"data_offsets":[18446744073709551615,18446744073709551615]})",
          "abcd"),
      {"tensor 'w'", "past the end of the data buffer"});
}

TEST(SafetensorsMalformedTest, BeginAfterEnd) {
  ExpectInvalid(
      OneEntry(R"({"dtype":"U8","shape":[2],"data_offsets":[4,2]})", "abcd"),
      {"tensor 'w'", "begin 4 is greater than end 2"});
}

TEST(SafetensorsMalformedTest, ByteCountDoesNotMatchShape) {
  ExpectInvalid(
      OneEntry(R"({"dtype":"F32","shape":[2],"data_offsets":[0,4]})", "abcd"),
      {"tensor 'w'", "needs 8 bytes", "span 4 bytes"});
}

TEST(SafetensorsMalformedTest, ByteCountOverflows) {
  ExpectInvalid(
      OneEntry(
          R"({"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,4]})",
          "abcd"),
      {"tensor 'w'", "overflows"});
  // numel fits in 64 bits, numel * 8 does not.
  ExpectInvalid(
      OneEntry(
          R"({"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,4]})",
          "abcd"),
      {"tensor 'w'", "overflows"});
}

TEST(SafetensorsMalformedTest, OverlappingTensors) {
  const std::string header =
      R"({"a":{"dtype":"U8","shape":[6],"data_offsets":[0,6]},)"
      R"("b":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})";
  ExpectInvalid(RawFile(header, Pattern(8, 0)),
                {"tensor 'b'", "overlaps", "tensor 'a'"});
  const std::string same =
      R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
      R"("b":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})";
  ExpectInvalid(RawFile(same, Pattern(4, 0)),
                {"tensor 'b'", "overlaps", "tensor 'a'"});
}

TEST(SafetensorsMalformedTest, HoleInBuffer) {
  const std::string header =
      R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
      R"("b":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})";
  ExpectInvalid(RawFile(header, Pattern(8, 0)),
                {"hole", "[2, 4)", "tensor 'b'"});
}

TEST(SafetensorsMalformedTest, UnindexedTrailingBytes) {
  ExpectInvalid(
      OneEntry(R"({"dtype":"U8","shape":[2],"data_offsets":[0,2]})", "abcd"),
      {"hole", "trailing bytes [2, 4)"});
  ExpectInvalid(RawFile("{}", "xyz"), {"hole", "[0, 3)"});
}

TEST(SafetensorsMalformedTest, MetadataNotStringMap) {
  ExpectInvalid(BuildFile({}, R"({"format":1})"),
                {"__metadata__", "'format'", "not a string"});
  ExpectInvalid(BuildFile({}, R"(["pt"])"), {"__metadata__", "not an object"});
}

TEST(SafetensorsMalformedTest, DuplicateTensorName) {
  const std::string header =
      R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
      R"("a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})";
  ExpectInvalid(RawFile(header, "ab"), {"duplicate key 'a'"});
}

TEST(SafetensorsMalformedTest, NestedDuplicateKeysAreNotTopLevel) {
  // Only top-level keys name tensors; a repeated inner key is nlohmann's
  // business (last one wins), not a duplicate tensor.
  const std::string header =
      R"({"a":{"dtype":"F32","dtype":"U8","shape":[2],"data_offsets":[0,2]}})";
  auto file = SafetensorsFile::FromBytes(RawFile(header, "ab"));
  ASSERT_TRUE(file.ok()) << file.status();
}

TEST(SafetensorsMalformedTest, ControlCharactersInNamesAreEscaped) {
  const std::string header =
      R"({"a\nb":{"dtype":"Q","shape":[2],"data_offsets":[0,2]}})";
  ExpectInvalid(RawFile(header, "ab"), {"tensor 'a\\nb'", "unknown dtype"});
}

// --- Fuzz-style robustness: deterministic, so failures reproduce. ---

TEST(SafetensorsFuzzTest, EveryTruncationIsAnError) {
  const std::string valid = ValidFile();
  ASSERT_TRUE(SafetensorsFile::FromBytes(valid).ok());
  for (size_t n = 0; n < valid.size(); ++n) {
    // Copy into an exactly sized buffer so ASan sees any over-read.
    auto file = SafetensorsFile::FromBytes(valid.substr(0, n));
    EXPECT_FALSE(file.ok()) << "prefix of " << n << " bytes was accepted";
  }
}

TEST(SafetensorsFuzzTest, SingleByteCorruptionsNeverCrash) {
  const std::string valid = ValidFile();
  std::mt19937 rng(20250109);
  std::uniform_int_distribution<size_t> position(0, valid.size() - 1);
  std::uniform_int_distribution<int> byte(0, 255);
  int n_ok = 0;
  int n_error = 0;
  for (int i = 0; i < 500; ++i) {
    std::string corrupt = valid;
    corrupt[position(rng)] = static_cast<char>(byte(rng));
    auto file = SafetensorsFile::FromBytes(std::move(corrupt));
    if (file.ok()) {
      // Whatever was accepted must be internally consistent.
      for (const std::string& name : (*file)->Names()) {
        auto view = (*file)->Get(name);
        ASSERT_TRUE(view.ok()) << view.status();
        EXPECT_EQ(view->n_bytes, static_cast<size_t>(view->NumElements()) *
                                     DTypeSize(view->dtype));
      }
      ++n_ok;
    } else {
      EXPECT_FALSE(file.status().message().empty());
      ++n_error;
    }
  }
  // Both outcomes occur: corruptions inside tensor data stay valid.
  EXPECT_GT(n_ok, 0);
  EXPECT_GT(n_error, 0);
}

TEST(SafetensorsFuzzTest, RandomHeaderBytesNeverCrash) {
  // Mostly-structural noise: random bytes drawn from JSON's alphabet behind a
  // consistent length prefix.
  const std::string alphabet = "{}[]\":,0123456789-.eE \"dtypeshapeF32U8";
  std::mt19937 rng(7);
  std::uniform_int_distribution<size_t> pick(0, alphabet.size() - 1);
  std::uniform_int_distribution<size_t> length(1, 64);
  for (int i = 0; i < 300; ++i) {
    std::string header;
    const size_t n = length(rng);
    for (size_t j = 0; j < n; ++j) header += alphabet[pick(rng)];
    auto file = SafetensorsFile::FromBytes(RawFile(header, Pattern(16, 0)));
    if (!file.ok()) {
      EXPECT_FALSE(file.status().message().empty());
    }
  }
}

}  // namespace
}  // namespace md
