// The default model directory: it loads as a bundle, says its weights are
// random, and its tokenizer is GPT-2's BPE cut to the first 1,792 merges.
// And random-weight directories written by WriteRandomModelDirectory load
// the same way.
#include "model/bundle.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "model/config/config.h"
#include "model/io/weights.h"
#include "model/tokenizer/tokenizer.h"

namespace md {
namespace {

const std::string kDir = std::string(MD_SOURCE_DIR) + "/models/tiny-random";
const std::string kGpt2 = std::string(MD_SOURCE_DIR) + "/tests/data/tokenizer";

TEST(BundleTest, TinyRandomModelLoadsAndSaysItIsRandom) {
  auto bundle = LoadModelBundle(kDir, "moondream2", ModelOptions{});
  ASSERT_TRUE(bundle.ok()) << bundle.status();
  EXPECT_TRUE(bundle->random_weights);
  EXPECT_FALSE(bundle->released_shape);
  EXPECT_EQ(bundle->tokenizer->vocab_size(), 2048);
  EXPECT_NE(DescribeBundle(*bundle).find("meaningless"), std::string::npos);
  // The gaze strings tokenize inside the cut vocabulary.
  for (int id : bundle->gaze_ids.before) EXPECT_LT(id, 2048);
  for (int id : bundle->gaze_ids.after) EXPECT_LT(id, 2048);
}

TEST(BundleTest, ShippedTokenizerIsGpt2CutTo1792Merges) {
  auto cut =
      Tokenizer::FromGpt2Files(kGpt2 + "/encoder.json", kGpt2 + "/vocab.bpe",
                               TokenizerOptions{.max_merges = 1792});
  ASSERT_TRUE(cut.ok()) << cut.status();
  auto expected = cut->ToHuggingFaceJson();
  ASSERT_TRUE(expected.ok()) << expected.status();
  std::ifstream in(kDir + "/tokenizer.json", std::ios::binary);
  std::stringstream shipped;
  shipped << in.rdbuf();
  EXPECT_EQ(shipped.str(), *expected)
      << "regenerate models/tiny-random/tokenizer.json from the GPT-2 files";
}

TEST(BundleTest, MissingDirectoryAndTokenizerAreClearErrors) {
  auto missing =
      LoadModelBundle("/nonexistent/model", "moondream2", ModelOptions{});
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("does not exist"),
            absl::string_view::npos);
  auto no_tokenizer = LoadModelBundle(
      std::string(MD_SOURCE_DIR) + "/tests/data/golden", "moondream2", {});
  ASSERT_FALSE(no_tokenizer.ok());
  EXPECT_NE(no_tokenizer.status().message().find("tokenizer.json"),
            absl::string_view::npos);
}

// A fresh directory of this test alone.
std::string TempModelDir() {
  const std::string dir = absl::StrCat(
      ::testing::TempDir(), "/bundle_test_",
      ::testing::UnitTest::GetInstance()->current_test_info()->name(), "_",
      getpid());
  std::filesystem::remove_all(dir);
  return dir;
}

// The golden set's tiny shapes keep the written model small and fast.
MoondreamConfig TinyConfig() {
  auto config = LoadConfigFile(
      std::string(MD_SOURCE_DIR) + "/tests/data/golden/config.json",
      Moondream2Config());
  EXPECT_TRUE(config.ok()) << config.status();
  return config.ok() ? *config : Moondream2Config();
}

TEST(WriteRandomModelDirectoryTest, LoadsAsARandomModelWithTheSameWeights) {
  const std::string dir = TempModelDir();
  const MoondreamConfig config = TinyConfig();
  auto weights = RandomWeights(config, {at::kBFloat16, at::kCPU}, 9);
  ASSERT_TRUE(weights.ok()) << weights.status();
  ASSERT_TRUE(WriteRandomModelDirectory(dir, config, *weights,
                                        kDir + "/tokenizer.json",
                                        "random, for a test\n")
                  .ok());

  // Loaded over the other preset: config.json alone gives the shapes.
  auto bundle = LoadModelBundle(dir, "moondream-0.5b",
                                ModelOptions{at::kBFloat16, at::kCPU});
  ASSERT_TRUE(bundle.ok()) << bundle.status();
  EXPECT_TRUE(bundle->random_weights);
  EXPECT_NE(DescribeBundle(*bundle).find("WARNING: this model's weights are "
                                         "random"),
            std::string::npos);
  EXPECT_EQ(bundle->model->config().text.dim, config.text.dim);
  EXPECT_EQ(bundle->tokenizer->vocab_size(), 2048);
  const auto written = NamedParameters(config, *weights);
  const auto loaded = NamedParameters(config, bundle->model->weights());
  ASSERT_EQ(written.size(), loaded.size());
  for (size_t i = 0; i < written.size(); ++i) {
    SCOPED_TRACE(written[i].first);
    EXPECT_TRUE(at::equal(written[i].second, loaded[i].second));
  }
  std::ifstream marker(dir + "/" + kRandomWeightsMarker);
  std::stringstream text;
  text << marker.rdbuf();
  EXPECT_EQ(text.str(), "random, for a test\n");

  // An earlier random model is replaced.
  EXPECT_TRUE(WriteRandomModelDirectory(dir, config, *weights,
                                        kDir + "/tokenizer.json", "again\n")
                  .ok());
  std::filesystem::remove_all(dir);
}

TEST(LoadModelBundleTest, ADemoModelSaysWhatItIs) {
  const std::string dir = TempModelDir();
  const MoondreamConfig config = TinyConfig();
  auto weights = RandomWeights(config, {}, 9);
  ASSERT_TRUE(weights.ok()) << weights.status();
  ASSERT_TRUE(WriteRandomModelDirectory(dir, config, *weights,
                                        kDir + "/tokenizer.json", "random\n")
                  .ok());
  std::filesystem::remove(dir + "/" + kRandomWeightsMarker);
  std::ofstream(dir + "/" + kDemoModelMarker) << "it counts shapes.\n\n";
  auto bundle = LoadModelBundle(dir, "moondream2", {});
  ASSERT_TRUE(bundle.ok()) << bundle.status();
  EXPECT_FALSE(bundle->random_weights);
  EXPECT_EQ(bundle->demo_description, "it counts shapes.");
  EXPECT_NE(DescribeBundle(*bundle).find(
                "NOTE: a demo model, not Moondream's weights: it counts "
                "shapes."),
            std::string::npos)
      << DescribeBundle(*bundle);

  // A banner, not a document: an oversized file is an error, not a flood.
  std::ofstream(dir + "/" + kDemoModelMarker) << std::string(5000, 'x');
  auto too_long = LoadModelBundle(dir, "moondream2", {});
  EXPECT_EQ(too_long.status().code(), absl::StatusCode::kInvalidArgument);
  std::filesystem::remove_all(dir);
}

TEST(WriteRandomModelDirectoryTest, NeverWritesOverOtherFiles) {
  const std::string dir = TempModelDir();
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/model.safetensors") << "real weights";
  const MoondreamConfig config = TinyConfig();
  auto weights = RandomWeights(config, {}, 9);
  ASSERT_TRUE(weights.ok()) << weights.status();
  absl::Status status = WriteRandomModelDirectory(
      dir, config, *weights, kDir + "/tokenizer.json", "random\n");
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(status.message().find("refusing"), absl::string_view::npos);
  std::ifstream kept(dir + "/model.safetensors");
  std::stringstream text;
  text << kept.rdbuf();
  EXPECT_EQ(text.str(), "real weights");
  EXPECT_FALSE(std::filesystem::exists(dir + "/" + kRandomWeightsMarker));

  absl::Status no_tokenizer =
      WriteRandomModelDirectory(TempModelDir() + "_new", config, *weights,
                                "/nonexistent/tokenizer.json", "random\n");
  EXPECT_EQ(no_tokenizer.code(), absl::StatusCode::kNotFound);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace md
