// The default model directory: it loads as a bundle, says its weights are
// random, and its tokenizer is GPT-2's BPE cut to the first 1,792 merges.
#include "model/bundle.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>

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

}  // namespace
}  // namespace md
