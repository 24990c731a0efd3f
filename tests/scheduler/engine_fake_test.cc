// The engine on a fake executor (tests/scheduler/fake_executor.h): the
// scheduling alone, in milliseconds. Failures injected into the forward and
// into a job end only their own request; jobs with more sequences than slots
// run in waves with the same answer; the engine keeps serving afterwards.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <stdexcept>
#include <vector>

#include "model/skills/jobs.h"
#include "scheduler/engine.h"
#include "tests/scheduler/fake_executor.h"

namespace md::scheduler {
namespace {

using testing::FakeConfig;
using testing::FakeExecutor;
using testing::FakeGazeIds;
using testing::FakeImage;
using ::testing::HasSubstr;
using testing::kPoisonToken;
using Result = CollectingSink::Result;

constexpr absl::Duration kWait = absl::Seconds(30);

std::unique_ptr<Engine> FakeEngine(int n_slots, int positions = 128) {
  EngineOptions options;
  options.max_admit_per_step = 32;
  auto engine = Engine::Create(
      std::make_unique<FakeExecutor>(n_slots, positions), options);
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? std::move(*engine) : nullptr;
}

Request TextRequest(std::vector<int> prompt, int image_seed,
                    int max_tokens = 12) {
  Request r;
  r.image = FakeImage(image_seed);
  TextOptions options;
  options.max_tokens = max_tokens;
  auto job = MakeTextJob(FakeConfig(), Skill::kQuery, std::move(prompt),
                         options, nullptr);
  EXPECT_TRUE(job.ok()) << job.status();
  r.job = std::move(*job);
  return r;
}

Request DetectRequest(std::vector<int> prompt, int image_seed) {
  Request r;
  r.image = FakeImage(image_seed);
  auto job = MakeRegionJob(FakeConfig(), Skill::kDetect, std::move(prompt), 5);
  EXPECT_TRUE(job.ok()) << job.status();
  r.job = std::move(*job);
  return r;
}

Request AccurateGazeRequest(int image_seed, uint64_t seed) {
  Request r;
  r.image = FakeImage(image_seed);
  GazeOptions options;
  options.face = FaceBox{0.2, 0.3, 0.6, 0.7};
  options.seed = seed;
  options.force_detect = true;  // Every probe answers: a combined gaze.
  auto job = MakeGazeJob(FakeConfig(), options, FakeGazeIds());
  EXPECT_TRUE(job.ok()) << job.status();
  r.job = std::move(*job);
  return r;
}

std::shared_ptr<CollectingSink> Submit(Engine& engine, Request request) {
  auto sink = std::make_shared<CollectingSink>();
  request.sink = sink;
  auto id = engine.Submit(std::move(request));
  EXPECT_TRUE(id.ok()) << id.status();
  return sink;
}

Result RunAlone(Engine& engine, Request request) {
  auto sink = Submit(engine, std::move(request));
  EXPECT_TRUE(sink->WaitDone(kWait));
  EXPECT_TRUE(engine.WaitIdle(kWait));
  return sink->result();
}

void ExpectIdle(Engine& engine) {
  ASSERT_TRUE(engine.WaitIdle(kWait));
  const EngineStats s = engine.Stats();
  EXPECT_EQ(s.queue_length, 0);
  EXPECT_EQ(s.running_requests, 0);
  EXPECT_EQ(s.slots_in_use, 0);
  EXPECT_TRUE(s.tenants.empty());
}

// The prompts of the failure tests: distinct, so answers differ.
std::vector<std::vector<int>> Prompts() {
  return {{20, 21, 22}, {30, 31}, {40, 41, 42, 43}, {50}, {60, 61}};
}

TEST(EngineFakeTest, AnswersAreTheSameAloneAndTogether) {
  auto engine = FakeEngine(8);
  std::vector<Result> alone;
  for (const auto& prompt : Prompts()) {
    alone.push_back(RunAlone(*engine, TextRequest(prompt, 1)));
    ASSERT_TRUE(alone.back().status.ok()) << alone.back().status;
  }
  std::vector<std::shared_ptr<CollectingSink>> sinks;
  for (const auto& prompt : Prompts()) {
    sinks.push_back(Submit(*engine, TextRequest(prompt, 1)));
  }
  for (size_t i = 0; i < sinks.size(); ++i) {
    ASSERT_TRUE(sinks[i]->WaitDone(kWait));
    EXPECT_EQ(sinks[i]->result().tokens, alone[i].tokens) << i;
  }
  ExpectIdle(*engine);
}

// An answer can be empty (the first token is the end): it ends OK with no
// tokens, and its slot is freed like any other.
TEST(EngineFakeTest, AnEmptyAnswerEndsCleanly) {
  auto engine = FakeEngine(2);
  bool found = false;
  for (int token = 3; token < testing::kFakeVocab && !found; ++token) {
    if (token == kPoisonToken) continue;
    const Result r = RunAlone(*engine, TextRequest({token}, 1));
    ASSERT_TRUE(r.status.ok()) << r.status;
    if (!r.tokens.empty()) continue;
    found = true;
    EXPECT_EQ(r.summary.stop, StopReason::kEos);
    EXPECT_EQ(r.summary.output_tokens, 0);
    EXPECT_EQ(r.text, "");
  }
  EXPECT_TRUE(found) << "no one-token prompt whose answer is empty";
  ExpectIdle(*engine);
}

// Must-show: one request's forward throws; it ends with INTERNAL, the others
// finish with the tokens they get without the failure, and the engine goes
// on serving.
TEST(EngineFakeTest, AThrowingForwardEndsOnlyItsRequest) {
  auto engine = FakeEngine(8);
  std::vector<Result> alone;
  for (const auto& prompt : Prompts()) {
    alone.push_back(RunAlone(*engine, TextRequest(prompt, 1)));
  }
  std::vector<std::shared_ptr<CollectingSink>> sinks;
  for (const auto& prompt : Prompts()) {
    sinks.push_back(Submit(*engine, TextRequest(prompt, 1)));
  }
  auto poisoned = Submit(*engine, TextRequest({25, kPoisonToken, 26}, 1));
  for (size_t i = 0; i < sinks.size(); ++i) {
    ASSERT_TRUE(sinks[i]->WaitDone(kWait));
    const Result r = sinks[i]->result();
    EXPECT_TRUE(r.status.ok()) << r.status;
    EXPECT_EQ(r.tokens, alone[i].tokens) << i;
  }
  ASSERT_TRUE(poisoned->WaitDone(kWait));
  EXPECT_EQ(poisoned->result().status.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(poisoned->result().status.message(),
              HasSubstr("injected failure"));
  EXPECT_EQ(engine->Stats().failed, 1);

  const Result after = RunAlone(*engine, TextRequest(Prompts()[0], 1));
  EXPECT_TRUE(after.status.ok()) << after.status;
  EXPECT_EQ(after.tokens, alone[0].tokens);
  ExpectIdle(*engine);
}

// A job whose own code throws (here: while emitting) ends alone too.
class ThrowingJob final : public SkillJob {
 public:
  explicit ThrowingJob(std::unique_ptr<SkillJob> inner)
      : inner_(std::move(inner)) {}
  Skill skill() const override { return inner_->skill(); }
  int prompt_positions() const override { return inner_->prompt_positions(); }
  int max_new_positions() const override { return inner_->max_new_positions(); }
  absl::StatusOr<SkillRun*> StartSequence(int i,
                                          const InputEmbedder& e) override {
    return inner_->StartSequence(i, e);
  }
  int Emit(int, OutputSink&) override {
    throw std::logic_error("a job that throws");
  }
  int Complete(OutputSink& sink) override { return inner_->Complete(sink); }
  int output_tokens() const override { return inner_->output_tokens(); }
  StopReason stop_reason() const override { return inner_->stop_reason(); }

 private:
  std::unique_ptr<SkillJob> inner_;
};

TEST(EngineFakeTest, AThrowingJobEndsOnlyItsRequest) {
  auto engine = FakeEngine(4);
  const Result expected = RunAlone(*engine, TextRequest(Prompts()[1], 2));
  Request bad = TextRequest(Prompts()[0], 2);
  bad.job = std::make_unique<ThrowingJob>(std::move(bad.job));
  auto bad_sink = Submit(*engine, std::move(bad));
  auto good_sink = Submit(*engine, TextRequest(Prompts()[1], 2));
  ASSERT_TRUE(bad_sink->WaitDone(kWait));
  ASSERT_TRUE(good_sink->WaitDone(kWait));
  EXPECT_EQ(bad_sink->result().status.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(bad_sink->result().status.message(), HasSubstr("throws"));
  EXPECT_TRUE(good_sink->result().status.ok());
  EXPECT_EQ(good_sink->result().tokens, expected.tokens);
  ExpectIdle(*engine);
}

// Accurate gaze runs 20 probes: with 20 slots side by side, with 4 in five
// waves, with 1 one after another; the answer is the same.
TEST(EngineFakeTest, ProbesRunInWavesWhenSlotsAreFew) {
  std::vector<Result> results;
  for (int n_slots : {20, 4, 1}) {
    auto engine = FakeEngine(n_slots);
    results.push_back(RunAlone(*engine, AccurateGazeRequest(3, 7)));
    ASSERT_TRUE(results.back().status.ok()) << results.back().status;
    ASSERT_TRUE(results.back().gaze_reported);
    ExpectIdle(*engine);
  }
  ASSERT_TRUE(results[0].gaze.has_value());
  for (const Result& r : results) {
    ASSERT_TRUE(r.gaze.has_value());
    EXPECT_EQ(r.gaze->x, results[0].gaze->x);
    EXPECT_EQ(r.gaze->y, results[0].gaze->y);
  }
}

TEST(EngineFakeTest, WavesShareSlotsWithOtherRequests) {
  auto engine = FakeEngine(4);
  const Result gaze_alone = RunAlone(*engine, AccurateGazeRequest(4, 9));
  const Result text_alone = RunAlone(*engine, TextRequest(Prompts()[2], 4));
  auto gaze = Submit(*engine, AccurateGazeRequest(4, 9));
  std::vector<std::shared_ptr<CollectingSink>> texts;
  for (int i = 0; i < 6; ++i) {
    texts.push_back(Submit(*engine, TextRequest(Prompts()[2], 4)));
  }
  ASSERT_TRUE(gaze->WaitDone(kWait));
  ASSERT_TRUE(gaze->result().gaze.has_value());
  EXPECT_EQ(gaze->result().gaze->x, gaze_alone.gaze->x);
  EXPECT_EQ(gaze->result().gaze->y, gaze_alone.gaze->y);
  for (auto& sink : texts) {
    ASSERT_TRUE(sink->WaitDone(kWait));
    EXPECT_EQ(sink->result().tokens, text_alone.tokens);
  }
  ExpectIdle(*engine);
}

TEST(EngineFakeTest, RegionAnswersAreTheSameAloneAndTogether) {
  auto engine = FakeEngine(3);
  const Result alone = RunAlone(*engine, DetectRequest({33, 34}, 5));
  ASSERT_TRUE(alone.status.ok()) << alone.status;
  auto detect = Submit(*engine, DetectRequest({33, 34}, 5));
  auto text = Submit(*engine, TextRequest(Prompts()[0], 5));
  ASSERT_TRUE(detect->WaitDone(kWait));
  ASSERT_TRUE(text->WaitDone(kWait));
  const Result together = detect->result();
  ASSERT_EQ(together.boxes.size(), alone.boxes.size());
  for (size_t i = 0; i < alone.boxes.size(); ++i) {
    EXPECT_EQ(together.boxes[i].x_min, alone.boxes[i].x_min);
    EXPECT_EQ(together.boxes[i].y_max, alone.boxes[i].y_max);
  }
  EXPECT_EQ(together.summary.output_tokens, alone.summary.output_tokens);
  EXPECT_EQ(together.summary.stop, alone.summary.stop);
  ExpectIdle(*engine);
}

TEST(EngineFakeTest, MirrorNeededButMissingIsRefusedAtSubmit) {
  auto engine = FakeEngine(2);
  Request r = AccurateGazeRequest(3, 1);
  auto image = std::make_shared<EngineImage>(*r.image);
  image->mirrored.reset();
  r.image = image;
  r.sink = std::make_shared<CollectingSink>();
  auto id = engine->Submit(std::move(r));
  EXPECT_EQ(id.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(id.status().message(), HasSubstr("mirror"));
}

}  // namespace
}  // namespace md::scheduler
