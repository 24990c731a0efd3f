// The engine on the golden model (float32): batching never changes a
// request's answer, the image prefix cache skips work, and every way a
// request can end (done, queue full, deadline, cancel, too long, invalid,
// drain, shutdown) leaves no slot behind.
#include "scheduler/engine.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "model/skills/skills.h"
#include "tests/scheduler/golden_requests.h"

namespace md::scheduler {
namespace {

using testing::ExpectMatchesGolden;
using testing::GoldenEngineImage;
using testing::GoldenGazeIds;
using testing::GoldenModel;
using testing::GoldenRequest;
using ::testing::HasSubstr;
using testing::Json;
using Result = CollectingSink::Result;

constexpr absl::Duration kWait = absl::Seconds(120);

EngineOptions GoldenOptions(int n_slots = 8) {
  EngineOptions options;
  options.n_slots = n_slots;
  options.model_id = "golden";
  return options;
}

std::unique_ptr<Engine> MakeEngine(EngineOptions options,
                                   StepCallback on_step = {}) {
  auto engine =
      Engine::Create(GoldenModel(), std::move(options), std::move(on_step));
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? std::move(*engine) : nullptr;
}

// Submits `request` with a fresh CollectingSink; the sink is returned.
std::shared_ptr<CollectingSink> SubmitCollecting(Engine& engine,
                                                 Request request,
                                                 uint64_t* id = nullptr) {
  auto sink = std::make_shared<CollectingSink>();
  request.sink = sink;
  auto submitted = engine.Submit(std::move(request));
  EXPECT_TRUE(submitted.ok()) << submitted.status();
  if (id != nullptr && submitted.ok()) *id = *submitted;
  return sink;
}

// Runs `request` on an otherwise idle engine; returns once the engine is idle
// again (its stats are published at the end of each step).
Result RunAlone(Engine& engine, Request request) {
  auto sink = SubmitCollecting(engine, std::move(request));
  EXPECT_TRUE(sink->WaitDone(kWait));
  EXPECT_TRUE(engine.WaitIdle(kWait));
  return sink->result();
}

void ExpectSameOutput(const Result& a, const Result& b) {
  EXPECT_EQ(a.status, b.status);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.text, b.text);
  EXPECT_EQ(a.summary.stop, b.summary.stop);
  ASSERT_EQ(a.boxes.size(), b.boxes.size());
  for (size_t i = 0; i < a.boxes.size(); ++i) {
    EXPECT_EQ(a.boxes[i].x_min, b.boxes[i].x_min);
    EXPECT_EQ(a.boxes[i].y_min, b.boxes[i].y_min);
    EXPECT_EQ(a.boxes[i].x_max, b.boxes[i].x_max);
    EXPECT_EQ(a.boxes[i].y_max, b.boxes[i].y_max);
  }
  ASSERT_EQ(a.points.size(), b.points.size());
  for (size_t i = 0; i < a.points.size(); ++i) {
    EXPECT_EQ(a.points[i].x, b.points[i].x);
    EXPECT_EQ(a.points[i].y, b.points[i].y);
  }
  EXPECT_EQ(a.gaze_reported, b.gaze_reported);
  ASSERT_EQ(a.gaze.has_value(), b.gaze.has_value());
  if (a.gaze) {
    EXPECT_EQ(a.gaze->x, b.gaze->x);
    EXPECT_EQ(a.gaze->y, b.gaze->y);
  }
}

// Nothing queued or running, no slot or KV position held.
void ExpectIdle(Engine& engine) {
  ASSERT_TRUE(engine.WaitIdle(kWait));
  const EngineStats s = engine.Stats();
  EXPECT_EQ(s.queue_length, 0);
  EXPECT_EQ(s.running_requests, 0);
  EXPECT_EQ(s.slots_in_use, 0);
  EXPECT_EQ(s.kv_positions_in_use, 0);
}

// 32 golden cases, skills interleaved (every skill, every image).
std::vector<const Json*> MixedCases(size_t n) {
  std::map<std::string, std::vector<const Json*>> by_task;
  for (const Json& c : testing::Cases()["text_cases"]) {
    by_task[c["task"]].push_back(&c);
  }
  std::vector<const Json*> picked;
  for (size_t round = 0; picked.size() < n; ++round) {
    bool any = false;
    for (auto& [task, cases] : by_task) {
      if (round < cases.size() && picked.size() < n) {
        picked.push_back(cases[round]);
        any = true;
      }
    }
    if (!any) break;
  }
  return picked;
}

// A text case that runs to max_tokens with at least `n` tokens.
const Json& LongTextCase(size_t n = 10) {
  for (const Json& c : testing::Cases()["text_cases"]) {
    if ((c["task"] == "query" || c["task"] == "caption") &&
        c["expected"]["stop_reason"] == "max_tokens" &&
        c["expected"]["tokens"].size() >= n) {
      return c;
    }
  }
  ADD_FAILURE() << "no long text case";
  static const Json empty;
  return empty;
}

// Blocks the engine thread inside the first OnToken (or the `at`-th) until
// Open(): the engine is then provably mid-step, so tests can queue, cancel
// or let a deadline pass at a known point.
class GateSink : public CollectingSink {
 public:
  explicit GateSink(int at = 1) : at_(at) {}

  void OnToken(int token, absl::string_view text) override {
    CollectingSink::OnToken(token, text);
    if (++tokens_ < at_) return;
    absl::MutexLock lock(&mu_);
    reached_ = true;
    // Bounded: a test that fails before Open() must not hold the engine
    // thread (and the engine's destructor) forever.
    mu_.AwaitWithTimeout(absl::Condition(&open_), kWait);
  }
  bool WaitReached() {
    absl::MutexLock lock(&mu_);
    return mu_.AwaitWithTimeout(absl::Condition(&reached_), kWait);
  }
  void Open() {
    absl::MutexLock lock(&mu_);
    open_ = true;
  }

 private:
  const int at_;
  int tokens_ = 0;  // Engine thread only.
  absl::Mutex mu_;
  bool reached_ ABSL_GUARDED_BY(mu_) = false;
  bool open_ ABSL_GUARDED_BY(mu_) = false;
};

std::shared_ptr<GateSink> SubmitGated(Engine& engine, Request request,
                                      uint64_t* id = nullptr, int at = 1) {
  auto sink = std::make_shared<GateSink>(at);
  request.sink = sink;
  auto submitted = engine.Submit(std::move(request));
  EXPECT_TRUE(submitted.ok()) << submitted.status();
  if (id != nullptr && submitted.ok()) *id = *submitted;
  return sink;
}

// ---- Batch invariance ----

// What each of MixedCases(32) produces alone on an idle engine (checked
// against the golden output once), shared by the batch tests.
const std::vector<Result>& AloneResults() {
  static const std::vector<Result>* alone = [] {
    auto* results = new std::vector<Result>();
    auto engine = MakeEngine(GoldenOptions(1));
    if (engine == nullptr) return results;
    for (const Json* c : MixedCases(32)) {
      results->push_back(RunAlone(*engine, GoldenRequest(*c)));
      ExpectMatchesGolden(*c, results->back());
    }
    return results;
  }();
  return *alone;
}

// Small prefill chunks and budgets, few admissions and images per step:
// prompts are cut into chunks and share steps with decodes of others.
EngineOptions ChunkedOptions() {
  EngineOptions options = GoldenOptions(32);
  options.max_admit_per_step = 3;
  options.prefill_chunk_tokens = 4;
  options.prefill_token_budget = 8;
  options.max_images_per_step = 2;
  return options;
}

void ExpectSameAsAloneAndGolden(
    const std::vector<const Json*>& cases,
    const std::vector<std::shared_ptr<CollectingSink>>& sinks) {
  const std::vector<Result>& alone = AloneResults();
  ASSERT_EQ(alone.size(), cases.size());
  ASSERT_EQ(sinks.size(), cases.size());
  for (size_t i = 0; i < cases.size(); ++i) {
    ASSERT_TRUE(sinks[i]->WaitDone(kWait));
    SCOPED_TRACE((*cases[i])["id"].get<std::string>());
    const Result together = sinks[i]->result();
    ExpectSameOutput(together, alone[i]);
    ExpectMatchesGolden(*cases[i], together);
  }
}

// Requests arrive while others stream, and images miss the prefix cache, so
// how they mix depends on timing (the encoder thread runs beside the
// engine): whatever the mix, every answer is the one it gets alone. That the
// mix really batches is shown deterministically by the next test.
TEST(EngineBatchTest, ThirtyTwoMixedRequestsMatchAloneAndGolden) {
  const std::vector<const Json*> cases = MixedCases(32);
  ASSERT_EQ(cases.size(), 32u);
  ASSERT_EQ(AloneResults().size(), 32u);

  auto engine = MakeEngine(ChunkedOptions());
  ASSERT_NE(engine, nullptr);
  std::vector<std::shared_ptr<CollectingSink>> sinks;
  // Four waves of eight: each wave arrives once the previous one streams.
  for (size_t wave = 0; wave < 4; ++wave) {
    for (size_t i = wave * 8; i < wave * 8 + 8; ++i) {
      sinks.push_back(SubmitCollecting(*engine, GoldenRequest(*cases[i])));
    }
    ASSERT_TRUE(sinks[wave * 8]->WaitFirstOutput(kWait));
  }
  ExpectSameAsAloneAndGolden(cases, sinks);
  ExpectIdle(*engine);
  EXPECT_EQ(engine->Stats().completed, 32);
}

// The same 32 queued in one instant behind a held engine, with every image's
// prefix already cached: no request waits for the asynchronous encoder, so
// the schedule, and the widest step, are a function of the queue alone.
TEST(EngineBatchTest, ThirtyTwoQueuedTogetherShareStepsAndMatchAlone) {
  const std::vector<const Json*> cases = MixedCases(32);
  ASSERT_EQ(AloneResults().size(), 32u);

  std::atomic<int> max_batch{0};
  auto engine = MakeEngine(ChunkedOptions(), [&max_batch](const StepReport& r) {
    max_batch = std::max(max_batch.load(), r.batch_size);
  });
  ASSERT_NE(engine, nullptr);
  const Json& held_case = LongTextCase();
  std::set<std::string> cached;
  for (size_t i = 0; i < cases.size(); ++i) {
    if (cached.insert((*cases[i])["image"].get<std::string>()).second) {
      ExpectSameOutput(RunAlone(*engine, GoldenRequest(*cases[i])),
                       AloneResults()[i]);
    }
  }
  if (cached.insert(held_case["image"].get<std::string>()).second) {
    RunAlone(*engine, GoldenRequest(held_case));
  }
  const int64_t encoded = engine->Stats().images_encoded;

  auto held = SubmitGated(*engine, GoldenRequest(held_case));
  ASSERT_TRUE(held->WaitReached());
  max_batch = 0;
  std::vector<std::shared_ptr<CollectingSink>> sinks;
  for (const Json* c : cases) {
    sinks.push_back(SubmitCollecting(*engine, GoldenRequest(*c)));
  }
  held->Open();
  ExpectSameAsAloneAndGolden(cases, sinks);
  ASSERT_TRUE(held->WaitDone(kWait));
  ExpectMatchesGolden(held_case, held->result());
  EXPECT_EQ(engine->Stats().images_encoded, encoded) << "a prefix missed";
  EXPECT_GE(max_batch.load(), 8) << "requests never shared a step";
  ExpectIdle(*engine);
}

TEST(EngineBatchTest, AccurateGazeRunsItsProbesInTheEngine) {
  const Model& model = GoldenModel();
  std::shared_ptr<const EngineImage> image =
      GoldenEngineImage(testing::GoldenImagesBySize()[0], /*with_mirror=*/true);
  const FaceBox face{0.3, 0.2, 0.6, 0.5};
  const uint64_t seed = 7;

  auto encoded = EncodeImages(model, {image->crops, *image->mirrored});
  ASSERT_TRUE(encoded.ok()) << encoded.status();
  auto direct = DetectGazeAccurate(model, (*encoded)[0], (*encoded)[1],
                                   GoldenGazeIds(), face, seed);
  ASSERT_TRUE(direct.ok()) << direct.status();

  auto accurate_gaze = [&] {
    Request gaze;
    gaze.image = image;
    GazeOptions options;
    options.face = face;
    options.seed = seed;
    auto job = MakeGazeJob(model.config(), options, GoldenGazeIds());
    EXPECT_TRUE(job.ok()) << job.status();
    gaze.job = std::move(*job);
    return gaze;
  };
  // 24 slots run the 20 probes side by side; 4 slots (fewer than the
  // probes, as with a small --slots) run them in waves: the same answer.
  for (int n_slots : {24, 4}) {
    SCOPED_TRACE(n_slots);
    auto engine = MakeEngine(GoldenOptions(n_slots));
    ASSERT_NE(engine, nullptr);
    // Neighbours share the steps.
    const Json& text_case = LongTextCase();
    auto neighbour = SubmitCollecting(*engine, GoldenRequest(text_case));
    auto sink = SubmitCollecting(*engine, accurate_gaze());
    ASSERT_TRUE(sink->WaitDone(kWait));
    ASSERT_TRUE(neighbour->WaitDone(kWait));
    const Result got = sink->result();
    ASSERT_TRUE(got.status.ok()) << got.status;
    ASSERT_TRUE(got.gaze_reported);
    ASSERT_EQ(got.gaze.has_value(), direct->has_value());
    if (got.gaze) {
      EXPECT_EQ(got.gaze->x, (*direct)->x);
      EXPECT_EQ(got.gaze->y, (*direct)->y);
    }
    ExpectMatchesGolden(text_case, neighbour->result());
    ExpectIdle(*engine);
  }
}

TEST(EngineSamplingTest, SeededSamplingIsReproducibleWhateverTheBatch) {
  const Json& c = LongTextCase();
  uint64_t sampling_seed = 42;
  auto sampled = [&] {
    return GoldenRequest(c, [&](TextOptions& o) {
      o.sampling = {.temperature = 1.0f,
                    .top_p = 0.95f,
                    .min_p = 0.02f,
                    .seed = sampling_seed};
    });
  };
  auto engine = MakeEngine(GoldenOptions(8));
  ASSERT_NE(engine, nullptr);
  const Result first = RunAlone(*engine, sampled());
  ASSERT_TRUE(first.status.ok()) << first.status;
  EXPECT_FALSE(first.tokens.empty());

  std::vector<std::shared_ptr<CollectingSink>> others;
  for (const Json* other : MixedCases(6)) {
    others.push_back(SubmitCollecting(*engine, GoldenRequest(*other)));
  }
  auto in_batch = SubmitCollecting(*engine, sampled());
  ASSERT_TRUE(in_batch->WaitDone(kWait));
  ExpectSameOutput(in_batch->result(), first);
  for (auto& sink : others) ASSERT_TRUE(sink->WaitDone(kWait));

  // A different seed is a different stream (the tiny model's flat
  // distributions make equal outputs vanishingly unlikely).
  sampling_seed = 43;
  const Result other_seed = RunAlone(*engine, sampled());
  EXPECT_NE(other_seed.tokens, first.tokens);
  ExpectIdle(*engine);
}

TEST(EngineSamplingTest, IgnoreEosGeneratesExactlyMaxTokens) {
  const Json* early = nullptr;
  for (const Json& c : testing::Cases()["text_cases"]) {
    if (c["task"] == "query" && c["expected"]["stop_reason"] == "eos" &&
        !c["expected"]["tokens"].empty()) {
      early = &c;
      break;
    }
  }
  ASSERT_NE(early, nullptr);
  auto engine = MakeEngine(GoldenOptions(2));
  ASSERT_NE(engine, nullptr);
  int max_tokens = 0;
  Request r = GoldenRequest(*early, [&](TextOptions& o) {
    o.ignore_eos = true;
    max_tokens = o.max_tokens;
  });
  const Result got = RunAlone(*engine, std::move(r));
  ASSERT_TRUE(got.status.ok()) << got.status;
  EXPECT_EQ(static_cast<int>(got.tokens.size()), max_tokens);
  EXPECT_EQ(got.summary.stop, StopReason::kMaxTokens);
  const auto golden = (*early)["expected"]["tokens"].get<std::vector<int>>();
  // Until the reference's eos, the same tokens; then eos itself is emitted.
  ASSERT_GT(got.tokens.size(), golden.size());
  EXPECT_EQ(
      std::vector<int>(got.tokens.begin(), got.tokens.begin() + golden.size()),
      golden);
  EXPECT_EQ(got.tokens[golden.size()], GoldenModel().config().tokenizer.eos_id);
}

// ---- Image prefix cache ----

TEST(EngineCacheTest, SecondRequestOnSameImageSkipsVisionAndPrefill) {
  const Json& c = LongTextCase();
  auto engine = MakeEngine(GoldenOptions(2));
  ASSERT_NE(engine, nullptr);
  const Result first = RunAlone(*engine, GoldenRequest(c));
  ExpectMatchesGolden(c, first);
  EXPECT_FALSE(first.summary.image_cache_hit);
  const EngineStats after_first = engine->Stats();
  EXPECT_EQ(after_first.images_encoded, 1);
  EXPECT_EQ(after_first.prefix_prefills, 1);
  EXPECT_EQ(after_first.cache_misses, 1);
  EXPECT_EQ(after_first.cache_hits, 0);
  EXPECT_EQ(after_first.cache_entries, 1);

  const Result second = RunAlone(*engine, GoldenRequest(c));
  ExpectSameOutput(second, first);
  EXPECT_TRUE(second.summary.image_cache_hit);
  const EngineStats after_second = engine->Stats();
  EXPECT_EQ(after_second.images_encoded, 1);
  EXPECT_EQ(after_second.prefix_prefills, 1);
  EXPECT_EQ(after_second.cache_hits, 1);
  EXPECT_EQ(after_second.cache_misses, 1);
  ExpectIdle(*engine);
}

TEST(EngineCacheTest, EvictsLeastRecentlyUsedUnderTheByteBudget) {
  const Model& model = GoldenModel();
  const TextConfig& t = model.config().text;
  const int64_t entry_bytes = int64_t{t.n_layers} * 2 * t.n_heads *
                              model.prefix_len() * t.head_dim() *
                              int64_t{sizeof(float)};
  EngineOptions options = GoldenOptions(2);
  options.prefix_cache_bytes = entry_bytes + entry_bytes / 2;  // One fits.
  auto engine = MakeEngine(options);
  ASSERT_NE(engine, nullptr);

  auto on = [](const std::string& image) {
    Request r;
    r.image = GoldenEngineImage(image);
    TextOptions options;
    options.max_tokens = 2;
    auto job = MakeTextJob(GoldenModel().config(), Skill::kQuery, {5, 6, 7},
                           options, nullptr);
    EXPECT_TRUE(job.ok()) << job.status();
    r.job = std::move(*job);
    return r;
  };
  const std::vector<std::string> images = testing::GoldenImagesBySize();
  ASSERT_GE(images.size(), 2u);
  const std::string& first = images[0];
  for (const std::string& image : {first, images[1], first}) {
    const Result r = RunAlone(*engine, on(image));
    ASSERT_TRUE(r.status.ok()) << r.status;
    EXPECT_FALSE(r.summary.image_cache_hit) << image;
  }
  EngineStats s = engine->Stats();
  EXPECT_EQ(s.images_encoded, 3);
  EXPECT_EQ(s.cache_evictions, 2);
  EXPECT_EQ(s.cache_entries, 1);
  EXPECT_EQ(s.cache_bytes, entry_bytes);
  EXPECT_LE(s.cache_bytes, options.prefix_cache_bytes);

  // The survivor is the most recent image.
  EXPECT_TRUE(RunAlone(*engine, on(first)).summary.image_cache_hit);
  EXPECT_EQ(engine->Stats().images_encoded, 3);

  // No budget: nothing is kept, requests still run.
  options.prefix_cache_bytes = 0;
  auto uncached = MakeEngine(options);
  ASSERT_NE(uncached, nullptr);
  for (int i = 0; i < 2; ++i) {
    const Result r = RunAlone(*uncached, on(first));
    ASSERT_TRUE(r.status.ok()) << r.status;
  }
  s = uncached->Stats();
  EXPECT_EQ(s.images_encoded, 2);
  EXPECT_EQ(s.cache_entries, 0);
  EXPECT_EQ(s.cache_bytes, 0);
  ExpectIdle(*uncached);
}

TEST(EngineCacheTest, RequestsAdmittedTogetherOnOneImageEncodeItOnce) {
  auto engine = MakeEngine(GoldenOptions(4));
  ASSERT_NE(engine, nullptr);
  const Json& c = LongTextCase();
  // Hold the engine so that all four are admitted in the same step.
  auto gate = SubmitGated(*engine, GoldenRequest(c));
  ASSERT_TRUE(gate->WaitReached());
  std::vector<std::shared_ptr<CollectingSink>> sinks;
  for (int i = 0; i < 3; ++i) {
    Request r = GoldenRequest(c);
    r.image = GoldenEngineImage(
        testing::GoldenImageOtherThan(c["image"].get<std::string>()));
    sinks.push_back(SubmitCollecting(*engine, std::move(r)));
  }
  gate->Open();
  for (auto& sink : sinks) {
    ASSERT_TRUE(sink->WaitDone(kWait));
    EXPECT_TRUE(sink->result().status.ok());
  }
  ASSERT_TRUE(engine->WaitIdle(kWait));
  EXPECT_EQ(engine->Stats().images_encoded, 2);  // Gate's image, then wide.
  ExpectIdle(*engine);
}

// A running request's image prefix is pinned in the cache (its sequence
// reads the cached tensor in place); the pin goes with the request. With no
// cache budget the prefix is still handed to the sequence (and not kept).
TEST(EngineCacheTest, RunningRequestsPinTheirPrefix) {
  const Json& c = LongTextCase();
  for (int64_t budget : {int64_t{1} << 30, int64_t{0}}) {
    SCOPED_TRACE(::testing::Message() << "budget " << budget);
    EngineOptions options = GoldenOptions(2);
    options.prefix_cache_bytes = budget;
    auto engine = MakeEngine(options);
    ASSERT_NE(engine, nullptr);
    const Result alone = RunAlone(*engine, GoldenRequest(c));
    ExpectMatchesGolden(c, alone);
    EXPECT_EQ(engine->Stats().cache_pinned_entries, 0);

    // Held at its second token: the step that emitted the first one (after
    // placing the prefix) has published its stats.
    auto gate = SubmitGated(*engine, GoldenRequest(c), nullptr, /*at=*/2);
    ASSERT_TRUE(gate->WaitReached());
    EXPECT_EQ(engine->Stats().cache_pinned_entries, budget > 0 ? 1 : 0);
    EXPECT_EQ(engine->Stats().cache_entries, budget > 0 ? 1 : 0);
    gate->Open();
    ASSERT_TRUE(gate->WaitDone(kWait));
    ExpectSameOutput(gate->result(), alone);
    ASSERT_TRUE(engine->WaitIdle(kWait));
    EXPECT_EQ(engine->Stats().cache_pinned_entries, 0);
    ExpectIdle(*engine);
  }
}

// ---- How requests end ----

TEST(EngineLifecycleTest, FullQueueRejectsAtOnceWithRetryHint) {
  EngineOptions options = GoldenOptions(1);
  options.max_queue = 2;
  auto engine = MakeEngine(options);
  ASSERT_NE(engine, nullptr);
  const Json& c = LongTextCase();
  auto running = SubmitGated(*engine, GoldenRequest(c));
  ASSERT_TRUE(running->WaitReached());  // Admitted: the queue is empty.
  auto b = SubmitCollecting(*engine, GoldenRequest(c));
  auto d = SubmitCollecting(*engine, GoldenRequest(c));
  Request extra = GoldenRequest(c);
  extra.sink = std::make_shared<CollectingSink>();
  auto rejected = engine->Submit(std::move(extra));
  EXPECT_EQ(rejected.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(rejected.status().message(), HasSubstr("retry"));
  EXPECT_EQ(engine->Stats().rejected_queue_full, 1);
  running->Open();
  for (auto* sink :
       {static_cast<CollectingSink*>(running.get()), b.get(), d.get()}) {
    ASSERT_TRUE(sink->WaitDone(kWait));
    ExpectMatchesGolden(c, sink->result());
  }
  ExpectIdle(*engine);
}

TEST(EngineLifecycleTest, PerTenantQueueLimitKeepsRoomForOthers) {
  EngineOptions options = GoldenOptions(1);
  options.max_queued_per_tenant = 1;
  auto engine = MakeEngine(options);
  ASSERT_NE(engine, nullptr);
  const Json& c = LongTextCase();
  auto running = SubmitGated(*engine, GoldenRequest(c));
  ASSERT_TRUE(running->WaitReached());
  auto of_tenant = [&](const char* tenant) {
    Request r = GoldenRequest(c);
    r.tenant = tenant;
    r.sink = std::make_shared<CollectingSink>();
    return r;
  };
  auto queued_a = SubmitCollecting(*engine, of_tenant("a"));
  auto rejected = engine->Submit(of_tenant("a"));
  EXPECT_EQ(rejected.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(rejected.status().message(), HasSubstr("tenant 'a'"));
  auto queued_b = SubmitCollecting(*engine, of_tenant("b"));
  EXPECT_EQ(engine->Stats().rejected_tenant_limit, 1);
  running->Open();
  for (auto* sink : {queued_a.get(), queued_b.get()}) {
    ASSERT_TRUE(sink->WaitDone(kWait));
    ExpectMatchesGolden(c, sink->result());
  }
  ExpectIdle(*engine);
  // Once its request left the queue, the tenant may queue again.
  EXPECT_TRUE(engine->Submit(of_tenant("a")).ok());
  ExpectIdle(*engine);
}

TEST(EngineLifecycleTest, DeadlinePassingWhileQueuedEndsTheRequest) {
  auto engine = MakeEngine(GoldenOptions(1));
  ASSERT_NE(engine, nullptr);
  const Json& c = LongTextCase();
  auto running = SubmitGated(*engine, GoldenRequest(c));
  ASSERT_TRUE(running->WaitReached());
  Request impatient = GoldenRequest(c);
  impatient.deadline = absl::Now() + absl::Milliseconds(20);
  auto queued = SubmitCollecting(*engine, std::move(impatient));
  absl::SleepFor(absl::Milliseconds(60));
  running->Open();
  ASSERT_TRUE(queued->WaitDone(kWait));
  const Result r = queued->result();
  EXPECT_EQ(r.status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(r.status.message(), HasSubstr("queued"));
  EXPECT_TRUE(r.tokens.empty());
  ASSERT_TRUE(running->WaitDone(kWait));
  EXPECT_TRUE(running->result().status.ok());
  EXPECT_EQ(engine->Stats().expired_queued, 1);
  ExpectIdle(*engine);
}

TEST(EngineLifecycleTest, DeadlinePassingMidGenerationFreesTheSlot) {
  auto engine = MakeEngine(GoldenOptions(2));
  ASSERT_NE(engine, nullptr);
  const Json& c = LongTextCase();
  // A whole warm-up answer (which also caches the image prefix) bounds the
  // time to the first token, so the deadline falls mid-generation however
  // slow this machine or sanitizer is.
  const absl::Time start = absl::Now();
  ExpectMatchesGolden(c, RunAlone(*engine, GoldenRequest(c)));
  const absl::Duration whole_answer = absl::Now() - start;
  Request r = GoldenRequest(c);
  const absl::Time deadline = absl::Now() + whole_answer + absl::Seconds(1);
  r.deadline = deadline;
  auto sink = SubmitGated(*engine, std::move(r));
  ASSERT_TRUE(sink->WaitReached());
  ASSERT_LT(absl::Now(), deadline) << "first token came after the deadline";
  absl::SleepFor(deadline - absl::Now() + absl::Milliseconds(10));
  sink->Open();
  ASSERT_TRUE(sink->WaitDone(kWait));
  const Result got = sink->result();
  EXPECT_EQ(got.status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(got.status.message(), HasSubstr("generating"));
  EXPECT_EQ(got.tokens.size(), 1u);
  EXPECT_EQ(engine->Stats().expired_running, 1);
  ExpectIdle(*engine);
}

TEST(EngineLifecycleTest, CancelMidStreamFreesTheSlotAtTheNextStep) {
  auto engine = MakeEngine(GoldenOptions(2));
  ASSERT_NE(engine, nullptr);
  const Json& c = LongTextCase();
  uint64_t id = 0;
  auto sink = SubmitGated(*engine, GoldenRequest(c), &id);
  ASSERT_TRUE(sink->WaitReached());
  engine->Cancel(id);
  engine->Cancel(id + 1000);  // Unknown ids are ignored.
  sink->Open();
  ASSERT_TRUE(sink->WaitDone(kWait));
  const Result got = sink->result();
  EXPECT_EQ(got.status.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(got.tokens.size(), 1u);
  EXPECT_EQ(engine->Stats().cancelled, 1);
  ExpectIdle(*engine);
  // The freed slot serves the next request.
  ExpectMatchesGolden(c, RunAlone(*engine, GoldenRequest(c)));
}

TEST(EngineLifecycleTest, CancelWhileQueuedNeverStarts) {
  auto engine = MakeEngine(GoldenOptions(1));
  ASSERT_NE(engine, nullptr);
  const Json& c = LongTextCase();
  auto running = SubmitGated(*engine, GoldenRequest(c));
  ASSERT_TRUE(running->WaitReached());
  uint64_t id = 0;
  auto queued = SubmitCollecting(*engine, GoldenRequest(c), &id);
  engine->Cancel(id);
  running->Open();
  ASSERT_TRUE(queued->WaitDone(kWait));
  EXPECT_EQ(queued->result().status.code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(queued->result().tokens.empty());
  ExpectIdle(*engine);
}

TEST(EngineLifecycleTest, RequestsThatCannotFitTheContextAreRejected) {
  const Json& c = LongTextCase();
  const int prompt = static_cast<int>(c["prompt_ids"].size());
  EngineOptions options = GoldenOptions(2);
  options.positions_per_slot = GoldenModel().prefix_len() + prompt + 4;
  auto engine = MakeEngine(options);
  ASSERT_NE(engine, nullptr);
  auto with_max_tokens = [&](int n) {
    Request r = GoldenRequest(c, [n](TextOptions& o) { o.max_tokens = n; });
    r.sink = std::make_shared<CollectingSink>();
    return r;
  };
  auto too_long = engine->Submit(with_max_tokens(5));
  EXPECT_EQ(too_long.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(too_long.status().message(), HasSubstr("max_tokens"));
  const Result fits = RunAlone(*engine, with_max_tokens(4));  // Exactly fits.
  EXPECT_TRUE(fits.status.ok()) << fits.status;
  Request r = GoldenRequest(c);
  r.sink = std::make_shared<CollectingSink>();
  // 50 objects × 3 positions cannot fit.
  auto job = MakeRegionJob(GoldenModel().config(), Skill::kDetect,
                           c["prompt_ids"].get<std::vector<int>>());
  ASSERT_TRUE(job.ok()) << job.status();
  r.job = std::move(*job);
  auto detect = engine->Submit(std::move(r));
  EXPECT_EQ(detect.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(engine->Stats().rejected_too_long, 2);
  ExpectIdle(*engine);
}

TEST(EngineLifecycleTest, InvalidRequestsAreRejectedWithTheReason) {
  auto engine = MakeEngine(GoldenOptions(2));
  ASSERT_NE(engine, nullptr);
  const Json& c = LongTextCase();
  struct Bad {
    std::string name;
    std::function<void(Request&)> spoil;
    std::string message;
  };
  // The skill's own fields are checked where its job is built (tests/model
  // jobs_test.cc); the engine checks what makes a request runnable here.
  const std::vector<Bad> table = {
      {"no sink", [](Request& r) { r.sink = nullptr; }, "sink"},
      {"no image", [](Request& r) { r.image = nullptr; }, "image"},
      {"no job", [](Request& r) { r.job = nullptr; }, "job"},
      {"accurate gaze without mirror image",
       [](Request& r) {
         GazeOptions gaze;
         gaze.face = FaceBox{0.3, 0.2, 0.6, 0.5};
         r.job = *MakeGazeJob(GoldenModel().config(), gaze, GoldenGazeIds());
       },
       "mirror"},
  };
  for (const Bad& bad : table) {
    SCOPED_TRACE(bad.name);
    Request r = GoldenRequest(c);
    r.sink = std::make_shared<CollectingSink>();
    bad.spoil(r);
    auto submitted = engine->Submit(std::move(r));
    EXPECT_EQ(submitted.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(submitted.status().message(), HasSubstr(bad.message));
  }
  EXPECT_EQ(engine->Stats().rejected_invalid,
            static_cast<int64_t>(table.size()));
  EXPECT_EQ(engine->Stats().submitted, 0);
  // Still serving.
  ExpectMatchesGolden(c, RunAlone(*engine, GoldenRequest(c)));
}

TEST(EngineLifecycleTest, DrainFinishesInFlightWorkThenRefuses) {
  auto engine = MakeEngine(GoldenOptions(2));
  ASSERT_NE(engine, nullptr);
  const Json& c = LongTextCase();
  std::vector<std::shared_ptr<CollectingSink>> sinks;
  for (int i = 0; i < 4; ++i) {
    sinks.push_back(SubmitCollecting(*engine, GoldenRequest(c)));
  }
  EXPECT_TRUE(engine->Drain(kWait));
  for (auto& sink : sinks) {
    ASSERT_TRUE(sink->result().done);
    ExpectMatchesGolden(c, sink->result());
  }
  Request late = GoldenRequest(c);
  late.sink = std::make_shared<CollectingSink>();
  EXPECT_EQ(engine->Submit(std::move(late)).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(engine->Stats().rejected_unavailable, 1);
}

TEST(EngineLifecycleTest, ShutdownEndsEveryRequest) {
  std::vector<std::shared_ptr<CollectingSink>> sinks;
  {
    auto engine = MakeEngine(GoldenOptions(2));
    ASSERT_NE(engine, nullptr);
    for (const Json* c : MixedCases(8)) {
      sinks.push_back(SubmitCollecting(*engine, GoldenRequest(*c)));
    }
  }
  for (auto& sink : sinks) {
    const Result r = sink->result();
    EXPECT_TRUE(r.done);
    EXPECT_TRUE(r.status.ok() ||
                r.status.code() == absl::StatusCode::kUnavailable)
        << r.status;
  }
}

TEST(EngineOptionsTest, BadSettingsAreRefused) {
  EngineOptions options = GoldenOptions(0);
  EXPECT_EQ(Engine::Create(GoldenModel(), options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options = GoldenOptions(2);
  options.positions_per_slot = 100;  // Not even the image prefix fits.
  EXPECT_THAT(Engine::Create(GoldenModel(), options).status().message(),
              HasSubstr("context per slot"));
}

}  // namespace
}  // namespace md::scheduler
