// The skill field rules (model/skills/checks.h) at their edges. Linked
// without LibTorch: the transports' fuzzers rely on that.
#include "model/skills/checks.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace md {
namespace {

using ::testing::HasSubstr;

TEST(ChecksTest, MaxTokensIsOneToTheRoom) {
  EXPECT_TRUE(CheckMaxTokens(1, 64).ok());
  EXPECT_TRUE(CheckMaxTokens(64, 64).ok());
  EXPECT_EQ(CheckMaxTokens(0, 64).message(),
            "max_tokens must be in [1, 64], got 0");
  EXPECT_EQ(CheckMaxTokens(65, 64).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(CheckMaxTokens(std::numeric_limits<int>::min(), 64).ok());
}

TEST(ChecksTest, MaxObjectsIsOneToTheLimit) {
  EXPECT_TRUE(CheckMaxObjects(1).ok());
  EXPECT_TRUE(CheckMaxObjects(limits::kMaxObjects).ok());
  EXPECT_THAT(CheckMaxObjects(0).message(), HasSubstr("max_objects"));
  EXPECT_FALSE(CheckMaxObjects(limits::kMaxObjects + 1).ok());
}

TEST(ChecksTest, SamplingRangesIncludeTheirEnds) {
  EXPECT_TRUE(
      CheckSampling(
          {.temperature = limits::kMaxTemperature, .top_p = 1, .min_p = 1})
          .ok());
  EXPECT_TRUE(CheckSampling({.min_p = 0}).ok());
  EXPECT_FALSE(CheckSampling({.top_p = NAN}).ok());
  EXPECT_FALSE(CheckSampling({.temperature = -0.001f}).ok());
}

TEST(ChecksTest, EyeAndFaceAreWithinTheImage) {
  EXPECT_TRUE(CheckEye({0, 1}).ok());
  EXPECT_EQ(CheckEye({0.5, -0.25}).message(),
            "eye.y must be a number in [0, 1], got -0.25");
  EXPECT_FALSE(CheckEye({INFINITY, 0.5}).ok());
  EXPECT_TRUE(CheckFace({0.2, 0.2, 0.2, 0.2}).ok());
  EXPECT_THAT(CheckFace({0.1, 0.2, 1.5, 0.5}).message(),
              HasSubstr("face.x_max"));
  EXPECT_EQ(CheckFace({0.6, 0.2, 0.3, 0.5}).message(),
            "face must have x_min <= x_max and y_min <= y_max");
}

TEST(ChecksTest, GazeOptionsCheckTheFaceWhenThereIsOne) {
  GazeOptions eye_only;
  eye_only.eye = {2, 2};
  EXPECT_THAT(CheckGazeOptions(eye_only).message(), HasSubstr("eye.x"));
  // With a face the eye is unused, so it is not judged.
  GazeOptions accurate{.eye = {2, 2}, .face = FaceBox{0.1, 0.1, 0.3, 0.3}};
  EXPECT_TRUE(CheckGazeOptions(accurate).ok());
}

TEST(ChecksTest, TextOptionsCheckMaxTokensFirst) {
  TextOptions options;
  options.max_tokens = 0;
  options.sampling.top_p = 0;
  EXPECT_THAT(CheckTextOptions(options, 64).message(), HasSubstr("max_tokens"));
  options.max_tokens = 8;
  EXPECT_THAT(CheckTextOptions(options, 64).message(), HasSubstr("top_p"));
}

}  // namespace
}  // namespace md
