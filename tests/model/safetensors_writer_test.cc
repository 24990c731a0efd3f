// The writer against the project's own reader: what is written reads back
// byte for byte, the header follows the format (8-byte aligned data, dtype
// names, shapes, offsets), and a misuse never leaves a file under the name.
#include "model/io/safetensors_writer.h"

#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/io/safetensors.h"

namespace md {
namespace {

using ::testing::HasSubstr;

// A file name of this test alone, so parallel test runs never collide.
std::string TempPath(const std::string& name) {
  const ::testing::TestInfo* info =
      ::testing::UnitTest::GetInstance()->current_test_info();
  return absl::StrCat(::testing::TempDir(), "/", info->name(), "_", getpid(),
                      "_", name);
}

struct TensorData {
  TensorHeader header;
  std::string bytes;
};

std::string RandomBytes(size_t n, std::mt19937_64& rng) {
  std::string out(n, '\0');
  for (char& c : out) c = static_cast<char>(rng() & 0xff);
  return out;
}

// Tensors of every float dtype the model uses and a few others, with odd
// sizes so no tensor after the first starts aligned by luck.
std::vector<TensorData> RandomTensors() {
  std::mt19937_64 rng(42);
  const std::vector<TensorHeader> headers = {
      {"model.text.wte", DType::kBF16, {7, 5}},
      {"model.vision.pos_emb", DType::kF32, {1, 3, 3}},
      {"scalar", DType::kF64, {}},
      {"empty", DType::kF16, {0, 4}},
      {"mask", DType::kU8, {3}},
      {"ids", DType::kI64, {2}},
  };
  std::vector<TensorData> tensors;
  for (const TensorHeader& h : headers) {
    absl::StatusOr<uint64_t> n = TensorDataBytes(h);
    EXPECT_TRUE(n.ok()) << n.status();
    tensors.push_back({h, RandomBytes(n.ok() ? *n : 0, rng)});
  }
  return tensors;
}

std::vector<TensorHeader> Headers(const std::vector<TensorData>& tensors) {
  std::vector<TensorHeader> headers;
  for (const TensorData& t : tensors) headers.push_back(t.header);
  return headers;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(SafetensorsWriterTest, RoundTripsThroughTheReader) {
  const std::vector<TensorData> tensors = RandomTensors();
  const std::string path = TempPath("round_trip.safetensors");
  auto writer = SafetensorsWriter::Create(path, Headers(tensors),
                                          {{"format", "pt"}, {"k", "v"}});
  ASSERT_TRUE(writer.ok()) << writer.status();
  for (const TensorData& t : tensors) {
    ASSERT_TRUE(
        (*writer)->Write(t.header.name, t.bytes.data(), t.bytes.size()).ok());
  }
  ASSERT_TRUE((*writer)->Finish().ok());
  writer->reset();

  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->Names().size(), tensors.size());
  EXPECT_EQ((*file)->metadata().at("format"), "pt");
  EXPECT_EQ((*file)->metadata().at("k"), "v");
  for (const TensorData& t : tensors) {
    SCOPED_TRACE(t.header.name);
    auto view = (*file)->Get(t.header.name);
    ASSERT_TRUE(view.ok()) << view.status();
    EXPECT_EQ(view->dtype, t.header.dtype);
    EXPECT_EQ(view->shape, t.header.shape);
    ASSERT_EQ(view->n_bytes, t.bytes.size());
    EXPECT_EQ(std::memcmp(view->data, t.bytes.data(), t.bytes.size()), 0);
  }
  std::filesystem::remove(path);
}

TEST(SafetensorsWriterTest, HeaderFollowsTheFormat) {
  const std::vector<TensorData> tensors = RandomTensors();
  absl::StatusOr<std::string> prefix =
      EncodeSafetensorsHeader(Headers(tensors));
  ASSERT_TRUE(prefix.ok()) << prefix.status();
  // The data starts 8-byte aligned; the padding is spaces.
  EXPECT_EQ(prefix->size() % 8, 0u);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i)
    n = (n << 8) | static_cast<uint8_t>((*prefix)[i]);
  ASSERT_EQ(n, prefix->size() - 8);
  const std::string json = prefix->substr(8);
  EXPECT_EQ(json.find_last_not_of(' '), json.rfind('}'));

  const nlohmann::json header = nlohmann::json::parse(json);
  EXPECT_FALSE(header.contains("__metadata__"));
  EXPECT_EQ(header["model.text.wte"]["dtype"], "BF16");
  EXPECT_EQ(header["model.vision.pos_emb"]["dtype"], "F32");
  EXPECT_EQ(header["model.text.wte"]["shape"], nlohmann::json({7, 5}));
  EXPECT_EQ(header["scalar"]["shape"], nlohmann::json::array());
  // Back to back in the declared order.
  EXPECT_EQ(header["model.text.wte"]["data_offsets"], nlohmann::json({0, 70}));
  EXPECT_EQ(header["model.vision.pos_emb"]["data_offsets"],
            nlohmann::json({70, 106}));
  EXPECT_EQ(header["scalar"]["data_offsets"], nlohmann::json({106, 114}));
  EXPECT_EQ(header["empty"]["data_offsets"], nlohmann::json({114, 114}));

  // In memory too, the reader accepts it.
  std::string bytes = *prefix;
  for (const TensorData& t : tensors) bytes += t.bytes;
  auto file = SafetensorsFile::FromBytes(bytes);
  ASSERT_TRUE(file.ok()) << file.status();
}

TEST(SafetensorsWriterTest, EmptyFileIsValid) {
  absl::StatusOr<std::string> prefix = EncodeSafetensorsHeader({});
  ASSERT_TRUE(prefix.ok()) << prefix.status();
  EXPECT_EQ(prefix->size(), 16u);
  auto file = SafetensorsFile::FromBytes(*prefix);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_TRUE((*file)->Names().empty());
}

TEST(SafetensorsWriterTest, RefusesBadHeaders) {
  const std::vector<std::vector<TensorHeader>> bad = {
      {{"", DType::kF32, {1}}},
      {{"__metadata__", DType::kF32, {1}}},
      {{"a", DType::kF32, {1}}, {"a", DType::kF16, {2}}},
      {{"a", DType::kF32, {-1}}},
      {{"a", DType::kF64, {int64_t{1} << 62, 4}}},
  };
  for (const std::vector<TensorHeader>& headers : bad) {
    absl::StatusOr<std::string> prefix = EncodeSafetensorsHeader(headers);
    ASSERT_FALSE(prefix.ok()) << headers[0].name;
    EXPECT_EQ(prefix.status().code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST(SafetensorsWriterTest, WritesMustFollowTheDeclaration) {
  const std::vector<TensorData> tensors = RandomTensors();
  const std::string path = TempPath("misuse.safetensors");
  auto writer = SafetensorsWriter::Create(path, Headers(tensors));
  ASSERT_TRUE(writer.ok()) << writer.status();
  SafetensorsWriter& w = **writer;
  const TensorData& first = tensors[0];
  const TensorData& second = tensors[1];

  absl::Status out_of_order =
      w.Write(second.header.name, second.bytes.data(), second.bytes.size());
  EXPECT_EQ(out_of_order.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(out_of_order.message(), HasSubstr("model.text.wte"));
  absl::Status short_write =
      w.Write(first.header.name, first.bytes.data(), first.bytes.size() - 1);
  EXPECT_EQ(short_write.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(short_write.message(), HasSubstr("needs 70 bytes"));
  ASSERT_TRUE(
      w.Write(first.header.name, first.bytes.data(), first.bytes.size()).ok());

  absl::Status early = w.Finish();
  EXPECT_EQ(early.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(early.message(), HasSubstr("not written"));
  // Abandoned: nothing under the name, and the partial file is gone.
  writer->reset();
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_FALSE(std::filesystem::exists(path + ".partial"));
}

TEST(SafetensorsWriterTest, NothingAppearsBeforeFinish) {
  const std::string path = TempPath("late.safetensors");
  const std::string bytes(8, 'x');
  auto writer = SafetensorsWriter::Create(path, {{"w", DType::kF32, {2}}}, {});
  ASSERT_TRUE(writer.ok()) << writer.status();
  ASSERT_TRUE((*writer)->Write("w", bytes.data(), bytes.size()).ok());
  EXPECT_FALSE(std::filesystem::exists(path));
  ASSERT_TRUE((*writer)->Finish().ok());
  EXPECT_TRUE(std::filesystem::exists(path));
  EXPECT_FALSE(std::filesystem::exists(path + ".partial"));
  absl::Status extra = (*writer)->Write("w", bytes.data(), bytes.size());
  EXPECT_EQ(extra.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ReadFile(path).substr(ReadFile(path).size() - 8), bytes);
  std::filesystem::remove(path);
}

TEST(SafetensorsWriterTest, UnwritableDirectoryIsAnError) {
  auto writer = SafetensorsWriter::Create("/nonexistent/dir/x.safetensors",
                                          {{"w", DType::kF32, {1}}});
  ASSERT_FALSE(writer.ok());
  EXPECT_THAT(writer.status().message(), HasSubstr("/nonexistent/dir"));
}

}  // namespace
}  // namespace md
