// The job factories: the one place where a request's skill fields are
// checked, against the limits table. Every bad value is refused with a
// message naming the field; good ones build a job whose shape the engine
// can plan with.
#include "model/skills/jobs.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

namespace md {
namespace {

using ::testing::HasSubstr;

MoondreamConfig SmallConfig() {
  MoondreamConfig config;
  config.text.vocab_size = 100;
  config.text.max_context = 64;
  config.tokenizer.eos_id = 2;
  return config;
}

TEST(JobsTest, TheSkillTableNamesEverySkillOnce) {
  std::vector<std::string> names;
  for (const SkillSpec& spec : SkillTable()) {
    EXPECT_EQ(SkillFromName(spec.name), spec.skill);
    EXPECT_EQ(SkillName(spec.skill), spec.name);
    names.emplace_back(spec.name);
  }
  EXPECT_THAT(names, ::testing::ElementsAre("caption", "query", "detect",
                                            "point", "gaze"));
  EXPECT_FALSE(SkillFromName("segment").has_value());
  EXPECT_TRUE(SpecOf(Skill::kQuery).streams_text);
  EXPECT_FALSE(SpecOf(Skill::kDetect).streams_text);
}

TEST(JobsTest, BadTextRequestsNameTheField) {
  struct Bad {
    std::string name;
    std::vector<int> prompt;
    std::function<void(TextOptions&)> spoil;
    std::string message;
  };
  const std::vector<Bad> table = {
      {"empty prompt", {}, [](TextOptions&) {}, "empty"},
      {"token outside vocab", {5, 100}, [](TextOptions&) {}, "vocabulary"},
      {"negative token", {-1}, [](TextOptions&) {}, "vocabulary"},
      {"zero max_tokens",
       {5},
       [](TextOptions& o) { o.max_tokens = 0; },
       "max_tokens"},
      {"max_tokens past the context",
       {5},
       [](TextOptions& o) { o.max_tokens = 65; },
       "max_tokens"},
      {"huge max_tokens",
       {5},
       [](TextOptions& o) { o.max_tokens = 2147483647; },
       "max_tokens"},
      {"negative temperature",
       {5},
       [](TextOptions& o) { o.sampling.temperature = -1; },
       "temperature"},
      {"temperature above the limit",
       {5},
       [](TextOptions& o) { o.sampling.temperature = 2.5f; },
       "temperature"},
      {"nan temperature",
       {5},
       [](TextOptions& o) { o.sampling.temperature = NAN; },
       "temperature"},
      {"top_p zero",
       {5},
       [](TextOptions& o) { o.sampling.top_p = 0; },
       "top_p"},
      {"top_p above one",
       {5},
       [](TextOptions& o) { o.sampling.top_p = 1.5; },
       "top_p"},
      {"min_p above one",
       {5},
       [](TextOptions& o) { o.sampling.min_p = 2; },
       "min_p"},
  };
  for (const Bad& bad : table) {
    SCOPED_TRACE(bad.name);
    TextOptions options;
    options.max_tokens = 8;  // Within the small context, unless spoiled.
    bad.spoil(options);
    auto job =
        MakeTextJob(SmallConfig(), Skill::kQuery, bad.prompt, options, nullptr);
    ASSERT_FALSE(job.ok());
    EXPECT_EQ(job.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(job.status().message(), HasSubstr(bad.message));
  }
}

TEST(JobsTest, BadRegionAndGazeRequestsNameTheField) {
  const MoondreamConfig config = SmallConfig();
  EXPECT_THAT(MakeRegionJob(config, Skill::kDetect, {5}, 0).status().message(),
              HasSubstr("max_objects"));
  EXPECT_THAT(MakeRegionJob(config, Skill::kPoint, {5}, limits::kMaxObjects + 1)
                  .status()
                  .message(),
              HasSubstr("max_objects"));
  EXPECT_FALSE(MakeRegionJob(config, Skill::kQuery, {5}, 1).ok());
  EXPECT_FALSE(MakeTextJob(config, Skill::kGaze, {5}, {}, nullptr).ok());

  const GazePromptIds ids{{5}, {6}};
  GazeOptions eye_outside;
  eye_outside.eye = {1.5, 0.5};
  EXPECT_THAT(MakeGazeJob(config, eye_outside, ids).status().message(),
              HasSubstr("eye"));
  GazeOptions nan_eye;
  nan_eye.eye = {NAN, 0.5};
  EXPECT_THAT(MakeGazeJob(config, nan_eye, ids).status().message(),
              HasSubstr("eye"));
  GazeOptions inverted;
  inverted.face = FaceBox{0.6, 0.2, 0.3, 0.5};
  EXPECT_THAT(MakeGazeJob(config, inverted, ids).status().message(),
              HasSubstr("face"));
}

TEST(JobsTest, JobsDescribeTheirShape) {
  const MoondreamConfig config = SmallConfig();
  TextOptions text;
  text.max_tokens = 7;
  auto query = MakeTextJob(config, Skill::kQuery, {5, 6, 7}, text, nullptr);
  ASSERT_TRUE(query.ok()) << query.status();
  EXPECT_EQ((*query)->skill(), Skill::kQuery);
  EXPECT_EQ((*query)->n_sequences(), 1);
  EXPECT_EQ((*query)->prompt_positions(), 3);
  EXPECT_EQ((*query)->max_new_positions(), 7);

  auto detect = MakeRegionJob(config, Skill::kDetect, {5, 6}, 4);
  ASSERT_TRUE(detect.ok());
  EXPECT_EQ((*detect)->max_new_positions(), 4 * 3);  // x, y, size
  auto point = MakeRegionJob(config, Skill::kPoint, {5, 6}, 4);
  ASSERT_TRUE(point.ok());
  EXPECT_EQ((*point)->max_new_positions(), 4 * 2);  // x, y

  GazeOptions accurate;
  accurate.face = FaceBox{0.2, 0.2, 0.4, 0.4};
  auto gaze = MakeGazeJob(config, accurate, {{5, 6, 7}, {8, 9}});
  ASSERT_TRUE(gaze.ok()) << gaze.status();
  EXPECT_EQ((*gaze)->n_sequences(), 2 * kGazeProbesPerSide);
  EXPECT_EQ((*gaze)->image_of(0), ImageSide::kImage);
  EXPECT_EQ((*gaze)->image_of(kGazeProbesPerSide), ImageSide::kMirror);
  EXPECT_EQ((*gaze)->prompt_positions(), 5 + 2);
}

}  // namespace
}  // namespace md
