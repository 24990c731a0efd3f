// The scene trainer (tools/train): its cache-free forward gives the logits
// the served inference path gives for the same weights and sequence; a few
// steps overfit a fixed batch, bit for bit the same for a seed; and a run
// resumed from a checkpoint takes the same next step as one never stopped.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "model/bundle.h"
#include "model/config/config.h"
#include "model/io/weights.h"
#include "model/net/moondream.h"
#include "model/tokenizer/tokenizer.h"
#include "tests/tools/train_test_support.h"
#include "tools/scenes/random.h"
#include "tools/train/examples.h"
#include "tools/train/train_forward.h"
#include "tools/train/trainer.h"

namespace md::train {
namespace {

Tokenizer TinyTokenizer() {
  absl::StatusOr<Tokenizer> t =
      Tokenizer::FromHuggingFaceJson(kTinyDir + "/tokenizer.json");
  EXPECT_TRUE(t.ok()) << t.status();
  return std::move(*t);
}

// The first target row: everything before it and it is the prompt.
int PromptRows(const Sequence& s) {
  int row = static_cast<int>(s.rows.size());
  for (const auto& t : s.tokens) row = std::min(row, t.row);
  for (const auto& t : s.stops) row = std::min(row, t.row);
  return row + 1;
}

// A row embedded as the served skills embed what they feed.
at::Tensor InferenceEmbedding(const Model& model, const InputRow& row) {
  switch (row.kind) {
    case RowKind::kToken:
      return *model.EmbedTokens({row.token});
    case RowKind::kCoordinate:
      return *model.EncodeCoordinates({row.value[0]});
    case RowKind::kSize:
      return *model.EncodeSizes({row.value[0], row.value[1]});
  }
  return {};
}

// The served path's hidden states for one sequence: the image prefix
// prefilled into a slot, the prompt prefilled as one chunk, then every
// further row fed alone as a decode step, as RunToCompletion does.
at::Tensor InferenceHidden(const Model& model, const ImageCrops& crops,
                           const Sequence& seq) {
  const int p = model.prefix_len();
  const int n = static_cast<int>(seq.rows.size());
  absl::StatusOr<KvCache> cache = model.NewKvCache(1, p + n);
  EXPECT_TRUE(cache.ok());
  absl::StatusOr<std::vector<at::Tensor>> image = model.EmbedImages({crops});
  EXPECT_TRUE(image.ok()) << image.status();
  at::Tensor prefix = *model.PrefixEmbeddings((*image)[0]);
  EXPECT_TRUE(model.Forward(prefix, {{0, 0, p}}, *cache).ok());
  std::vector<at::Tensor> rows;
  for (const InputRow& row : seq.rows) {
    rows.push_back(InferenceEmbedding(model, row));
  }
  const int prompt = PromptRows(seq);
  std::vector<at::Tensor> hidden = {*model.Forward(
      at::cat(std::vector<at::Tensor>(rows.begin(), rows.begin() + prompt)),
      {{0, p, prompt}}, *cache)};
  for (int r = prompt; r < n; ++r) {
    hidden.push_back(*model.Forward(rows[r], {{0, p + r, 1}}, *cache));
  }
  return at::cat(hidden);
}

double MaxDiff(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

TEST(TrainForwardTest, LogitsEqualTheInferencePath) {
  const MoondreamConfig config = TestConfig();
  const Tokenizer tokenizer = TinyTokenizer();
  absl::StatusOr<Weights> weights =
      RandomWeights(config, {at::kFloat, at::kCPU}, 1234);
  ASSERT_TRUE(weights.ok()) << weights.status();
  absl::StatusOr<std::unique_ptr<Model>> model =
      Model::Create(config, *weights, {at::kFloat, at::kCPU});
  ASSERT_TRUE(model.ok()) << model.status();

  // A scene with several shapes, so detect and point feed objects.
  scenes::Scene scene;
  for (uint64_t i = 0;; ++i) {
    scene = scenes::GenerateScene(scenes::SceneSeed(3, i));
    if (scene.shapes.size() >= 3) break;
  }
  absl::StatusOr<SceneExample> example =
      MakeSceneExample(scene, config, tokenizer);
  ASSERT_TRUE(example.ok()) << example.status();
  // A query, a caption, and the detect and point asking for the most.
  std::vector<Sequence> picked;
  const Sequence* detect = nullptr;
  const Sequence* point = nullptr;
  for (const Sequence& s : example->sequences) {
    if (s.kind == scenes::TaskKind::kCount ||
        s.kind == scenes::TaskKind::kCaptionNormal) {
      picked.push_back(s);
    }
    if (s.kind == scenes::TaskKind::kDetect &&
        (!detect || s.sizes.size() > detect->sizes.size())) {
      detect = &s;
    }
    if (s.kind == scenes::TaskKind::kPoint &&
        (!point || s.coordinates.size() > point->coordinates.size())) {
      point = &s;
    }
  }
  ASSERT_TRUE(detect && point);
  ASSERT_GE(detect->sizes.size(), 1u);
  picked.push_back(*detect);
  picked.push_back(*point);

  at::NoGradGuard no_grad;
  const RotaryTable rotary = MakeRotaryTable(config.text, at::kCPU);
  at::Tensor image_PC = ImageEmbedding(example->crops, *weights, config.vision);
  EXPECT_EQ(MaxDiff(image_PC, (*(*model)->EmbedImages({example->crops}))[0]),
            0.0);
  at::Tensor rows_BTC = DecoderForward(
      PrefixEmbeddings(image_PC, *weights, config),
      EmbedSequences(picked, *weights), weights->text, config.text, rotary);

  for (size_t i = 0; i < picked.size(); ++i) {
    SCOPED_TRACE(std::string(scenes::TaskKindName(picked[i].kind)));
    const int64_t n = static_cast<int64_t>(picked[i].rows.size());
    at::Tensor train_NC = rows_BTC[i].narrow(0, 0, n);
    at::Tensor serve_NC = InferenceHidden(**model, example->crops, picked[i]);
    at::Tensor train_logits = *(*model)->Logits(train_NC);
    at::Tensor serve_logits = *(*model)->Logits(serve_NC);
    std::printf("%s: hidden max |diff| %.3g, logits max |diff| %.3g\n",
                std::string(scenes::TaskKindName(picked[i].kind)).c_str(),
                MaxDiff(train_NC, serve_NC),
                MaxDiff(train_logits, serve_logits));
    EXPECT_LT(MaxDiff(train_NC, serve_NC), 1e-4);
    EXPECT_LT(MaxDiff(train_logits, serve_logits), 1e-4);
    EXPECT_TRUE(at::equal(train_logits.argmax(-1), serve_logits.argmax(-1)));
    EXPECT_LT(MaxDiff(*(*model)->CoordinateLogits(train_NC),
                      *(*model)->CoordinateLogits(serve_NC)),
              1e-4);
    EXPECT_LT(MaxDiff(*(*model)->SizeLogits(train_NC),
                      *(*model)->SizeLogits(serve_NC)),
              1e-4);
  }
}

TEST(ExamplesTest, RegionSequencesFollowTheSkillsSteps) {
  const RegionTruth box = {0.25, 0.5, 0.2, 0.3};
  const Sequence detect = RegionSequence(scenes::TaskKind::kDetect, {10, 11},
                                         {&box, 1}, 2, 1024, 1024);
  // prompt, x, y, size
  ASSERT_EQ(detect.rows.size(), 5u);
  EXPECT_EQ(detect.rows[2].kind, RowKind::kCoordinate);
  EXPECT_EQ(detect.rows[2].value[0], 256.0f / 1024);
  EXPECT_EQ(detect.rows[4].kind, RowKind::kSize);
  ASSERT_EQ(detect.stops.size(), 2u);
  EXPECT_EQ(detect.stops[0].row, 1);
  EXPECT_FALSE(detect.stops[0].eos);
  EXPECT_EQ(detect.stops[1].row, 4);
  EXPECT_TRUE(detect.stops[1].eos);
  ASSERT_EQ(detect.coordinates.size(), 2u);
  EXPECT_EQ(detect.coordinates[0].row, 1);
  EXPECT_EQ(detect.coordinates[0].bin, 256);
  EXPECT_EQ(detect.coordinates[1].row, 2);
  EXPECT_EQ(detect.coordinates[1].bin, 512);
  ASSERT_EQ(detect.sizes.size(), 1u);
  EXPECT_EQ(detect.sizes[0].row, 3);

  const Sequence none =
      RegionSequence(scenes::TaskKind::kPoint, {10, 11}, {}, 2, 1024, 1024);
  ASSERT_EQ(none.stops.size(), 1u);
  EXPECT_TRUE(none.stops[0].eos);
  EXPECT_EQ(none.stops[0].row, 1);

  const Sequence text =
      TextSequence(scenes::TaskKind::kCount, {10, 11}, {17}, 2);
  ASSERT_EQ(text.tokens.size(), 2u);
  EXPECT_EQ(text.tokens[0].row, 1);
  EXPECT_EQ(text.tokens[0].token, 17);
  EXPECT_EQ(text.tokens[1].row, 2);
  EXPECT_EQ(text.tokens[1].token, 2);
  EXPECT_EQ(ValueBin(1.0, 1024), 1023);
  EXPECT_EQ(ValueBin(-0.1, 1024), 0);
}

bool SameBits(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

// Two runs' per-step losses, equal to the bit.
void ExpectSameLosses(const std::vector<double>& a,
                      const std::vector<double>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(SameBits(a[i], b[i]))
        << "step " << i << ": " << a[i] << " vs " << b[i];
  }
}

TEST(TrainerTest, OverfitsAFixedBatchTheSameWayEachRun) {
  TrainOptions o = SmallRun("overfit_a");
  o.scene_cycle = 1;  // the same scene and questions every step
  absl::StatusOr<std::unique_ptr<Trainer>> a = Trainer::Create(o);
  ASSERT_TRUE(a.ok()) << a.status();
  const std::vector<double> first = Losses(**a, 8);
  std::printf("overfit losses: %.4f .. %.4f\n", first.front(), first.back());
  EXPECT_LT(first.back(), 0.6 * first.front());

  o.out_dir = SmallRun("overfit_b").out_dir;
  absl::StatusOr<std::unique_ptr<Trainer>> b = Trainer::Create(o);
  ASSERT_TRUE(b.ok()) << b.status();
  ExpectSameLosses(first, Losses(**b, 8));
}

TEST(TrainerTest, ResumesWhereTheCheckpointLeftOff) {
  TrainOptions o = SmallRun("resume");
  absl::StatusOr<std::unique_ptr<Trainer>> a = Trainer::Create(o);
  ASSERT_TRUE(a.ok()) << a.status();
  Losses(**a, 3);
  ASSERT_TRUE((*a)->SaveCheckpoint().ok());
  const std::vector<double> uninterrupted = Losses(**a, 2);

  // Without --resume an existing checkpoint is never overwritten.
  EXPECT_FALSE(Trainer::Create(o).ok());
  o.resume = true;
  absl::StatusOr<std::unique_ptr<Trainer>> b = Trainer::Create(o);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ((*b)->step(), 3);
  ExpectSameLosses(uninterrupted, Losses(**b, 2));
}

// --stop-after: Run() ends at that step with a checkpoint, and a resumed
// run goes on exactly as one that never stopped.
TEST(TrainerTest, StopsAfterAStepAndResumesFromIt) {
  TrainOptions o = SmallRun("stop_after");
  o.steps = 6;
  o.stop_after = 2;
  o.checkpoint_every = 0;
  absl::StatusOr<std::unique_ptr<Trainer>> a = Trainer::Create(o);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE((*a)->Run().ok());
  EXPECT_EQ((*a)->step(), 2);
  EXPECT_TRUE(std::filesystem::exists((*a)->checkpoint_path()));
  const std::vector<double> uninterrupted = Losses(**a, 2);

  o.resume = true;
  o.stop_after = 0;
  absl::StatusOr<std::unique_ptr<Trainer>> b = Trainer::Create(o);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ((*b)->step(), 2);
  ExpectSameLosses(uninterrupted, Losses(**b, 2));
}

// Position features a linear read-out can tell apart: x and y of every
// patch are recoverable from the first channels (sin/cos of the highest
// frequency: one radian per patch), and no two patches share a row.
TEST(TrainerTest, PositionEmbeddingStartsAsSineCosineFeatures) {
  const at::Tensor pos = SinCosPositions(27, 64);
  ASSERT_EQ(pos.sizes(), (at::IntArrayRef{1, 729, 64}));
  const at::Tensor p = pos.squeeze(0);
  for (int64_t patch : {0, 1, 27, 100, 728}) {
    const double x = patch % 27, y = patch / 27;
    EXPECT_NEAR(p[patch][0].item<double>(), std::sin(x), 1e-6) << patch;
    EXPECT_NEAR(p[patch][16].item<double>(), std::cos(x), 1e-6) << patch;
    EXPECT_NEAR(p[patch][32].item<double>(), std::sin(y), 1e-6) << patch;
    EXPECT_NEAR(p[patch][48].item<double>(), std::cos(y), 1e-6) << patch;
  }
  const at::Tensor distances = at::cdist(p, p);
  const at::Tensor off_diagonal =
      distances + at::eye(729, distances.options()) * 1e9;
  EXPECT_GT(off_diagonal.min().item<double>(), 0.1);
  // A dimension not divisible by 4 keeps its last channels at zero.
  const at::Tensor odd = SinCosPositions(3, 10);
  EXPECT_EQ(odd.sizes(), (at::IntArrayRef{1, 9, 10}));
  EXPECT_EQ(odd.narrow(2, 8, 2).abs().max().item<double>(), 0.0);
}

// --max-shapes: the training scenes keep at most that many shapes.
TEST(TrainerTest, MaxShapesNarrowsTheTrainingScenes) {
  auto sequences = [](int max_shapes) {
    TrainOptions o = SmallRun("max_shapes_" + std::to_string(max_shapes));
    o.sequences_per_scene = 0;  // every question: their count tracks shapes
    o.max_shapes = max_shapes;
    absl::StatusOr<std::unique_ptr<Trainer>> t = Trainer::Create(o);
    EXPECT_TRUE(t.ok()) << t.status();
    int n = 0;
    for (int i = 0; i < 3 && t.ok(); ++i) {
      absl::StatusOr<StepStats> s = (*t)->Step();
      EXPECT_TRUE(s.ok()) << s.status();
      if (s.ok()) n += s->sequences;
    }
    return n;
  };
  // Some of the first three training scenes hold more than one shape, and
  // a scene cut to one shape asks fewer questions.
  EXPECT_LT(sequences(1), sequences(4));
}

TEST(TrainerTest, WritesADirectoryTheServerLoads) {
  TrainOptions o = SmallRun("model_dir");
  absl::StatusOr<std::unique_ptr<Trainer>> t = Trainer::Create(o);
  ASSERT_TRUE(t.ok()) << t.status();
  Losses(**t, 1);
  ASSERT_TRUE((*t)->WriteModelDirectory((*t)->model_dir()).ok());
  EXPECT_FALSE(std::filesystem::exists(
      std::filesystem::path((*t)->model_dir()) / "RANDOM-WEIGHTS"));
  absl::StatusOr<ModelBundle> bundle =
      LoadModelBundle((*t)->model_dir(), "moondream2", {});
  ASSERT_TRUE(bundle.ok()) << bundle.status();
  EXPECT_FALSE(bundle->random_weights);
  const std::string banner = DescribeBundle(*bundle);
  EXPECT_NE(banner.find("NOTE: a demo model, not Moondream's weights"),
            std::string::npos)
      << banner;
  EXPECT_NE(banner.find("How many shapes are there?"), std::string::npos)
      << banner;
  absl::StatusOr<std::unique_ptr<Model>> loaded =
      Model::Load((*t)->model_dir(), Moondream2Config(), {});
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const auto saved = NamedParameters(o.config, (*t)->weights());
  const auto read = NamedParameters(o.config, (*loaded)->weights());
  ASSERT_EQ(saved.size(), read.size());
  for (size_t i = 0; i < saved.size(); ++i) {
    EXPECT_TRUE(at::equal(saved[i].second.detach(), read[i].second))
        << saved[i].first;
  }
}

}  // namespace
}  // namespace md::train
