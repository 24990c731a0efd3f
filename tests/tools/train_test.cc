// The scene trainer (tools/train): its cache-free forward gives the logits
// the served inference path gives for the same weights and sequence; a few
// steps overfit a fixed batch, bit for bit the same for a seed; and a run
// resumed from a checkpoint takes the same next step as one never stopped.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <numeric>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "base/status_macros.h"
#include "model/bundle.h"
#include "model/config/config.h"
#include "model/io/safetensors.h"
#include "model/io/weights.h"
#include "model/net/moondream.h"
#include "model/net/region.h"
#include "model/tokenizer/tokenizer.h"
#include "tests/tools/train_test_support.h"
#include "tools/scenes/metrics.h"
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
  const RegionTruth box = {0.25, 0.5, 0.2, 0.3, {}};
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

scenes::Shape Square(int x_min, int y_min, int side, scenes::Colour colour) {
  scenes::Shape s;
  s.kind = scenes::ShapeKind::kSquare;
  s.colour = colour;
  s.box = {x_min, y_min, x_min + side, y_min + side};
  return s;
}

scenes::Scene SceneOf(std::vector<scenes::Shape> shapes) {
  scenes::Scene scene;
  scene.width = scene.height = 378;  // one 14-pixel grid cell per patch
  scene.shapes = std::move(shapes);
  return scene;
}

std::vector<int> Cells(int col_min, int row_min, int n) {
  std::vector<int> positions;
  for (int row = row_min; row < row_min + n; ++row) {
    for (int col = col_min; col < col_min + n; ++col) {
      positions.push_back(1 + row * 27 + col);
    }
  }
  return positions;
}

// A red and a blue square apart: "square" asks for two (detect and point),
// "red square" and "blue square" for one.
scenes::Scene TwoSquares() {
  return SceneOf({Square(28, 28, 42, scenes::Colour::kRed),
                  Square(28 * 7, 28 * 7, 42, scenes::Colour::kBlue)});
}

// A square over cells 2..4 (pixels 28..70) covers their centres and no
// other: 9 image tokens, at prefix positions 1 + row·27 + col.
TEST(ExamplesTest, FocusCoversTheGridCellsOfAShape) {
  const scenes::Scene scene = TwoSquares();
  EXPECT_EQ(FocusPositions(scene, {0}, 27), Cells(2, 2, 3));
  std::vector<int> both = Cells(2, 2, 3);
  const std::vector<int> second = Cells(14, 14, 3);
  both.insert(both.end(), second.begin(), second.end());
  EXPECT_EQ(FocusPositions(scene, {1, 0}, 27), both);
  // A shape smaller than a cell still has its centre's cell.
  const scenes::Scene tiny = SceneOf({Square(30, 30, 6, scenes::Colour::kRed)});
  EXPECT_EQ(FocusPositions(tiny, {0}, 27), (std::vector<int>{1 + 2 * 27 + 2}));
}

// The scene's training sequences for the tiny model, with `options`.
absl::StatusOr<SceneExample> TinyExample(const scenes::Scene& scene,
                                         const ExampleOptions& options = {}) {
  ASSIGN_OR_RETURN(
      const MoondreamConfig config,
      LoadConfigFile(kTinyDir + "/config.json", Moondream2Config()));
  return MakeSceneExample(scene, config, TinyTokenizer(), options);
}

// The scene's training sequences laid out plainly and with `options`.
void PlainAndWith(const scenes::Scene& scene, const ExampleOptions& options,
                  SceneExample* plain, SceneExample* with) {
  absl::StatusOr<SceneExample> a = TinyExample(scene);
  absl::StatusOr<SceneExample> b = TinyExample(scene, options);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_EQ(a->sequences.size(), b->sequences.size());
  *plain = *std::move(a);
  *with = *std::move(b);
}

// The share-weighted mean of the cells' centres, in pixels of a 14-pixel
// grid (SceneOf's).
std::pair<double, double> FocusCentre(const Focus& focus) {
  double x = 0, y = 0;
  for (size_t i = 0; i < focus.positions.size(); ++i) {
    const int cell = focus.positions[i] - 1;
    x += focus.shares[i] * ((cell % 27) + 0.5) * 14;
    y += focus.shares[i] * ((cell / 27) + 0.5) * 14;
  }
  return {x, y};
}

// CoverageFocus: every cell the shape overlaps, in shares of its area
// there, so that the cells' centres weighted by their shares are the
// shape's centroid, also where the shape ends inside a cell.
TEST(ExamplesTest, CoverageFocusGathersTheShapesCentroid) {
  const scenes::Scene aligned =
      SceneOf({Square(28, 28, 28, scenes::Colour::kRed)});
  const Focus four = CoverageFocus(aligned, aligned.shapes[0], 27);
  EXPECT_EQ(four.positions, Cells(2, 2, 2));
  EXPECT_EQ(four.shares, std::vector<float>(4, 0.25f));

  // Pixels 35..63: half of column 2, all of 3, half of 4; rows 2 and 3.
  const scenes::Scene half =
      SceneOf({Square(35, 28, 28, scenes::Colour::kRed)});
  const Focus six = CoverageFocus(half, half.shapes[0], 27);
  ASSERT_EQ(six.positions.size(), 6u);
  EXPECT_EQ(six.positions.front(), 1 + 2 * 27 + 2);
  EXPECT_EQ(six.positions.back(), 1 + 3 * 27 + 4);
  EXPECT_FLOAT_EQ(six.shares[0], 0.125f);
  EXPECT_FLOAT_EQ(six.shares[1], 0.25f);
  EXPECT_NEAR(std::accumulate(six.shares.begin(), six.shares.end(), 0.0), 1.0,
              1e-6);
  EXPECT_NEAR(FocusCentre(six).first, 49, 1e-4);
  EXPECT_NEAR(FocusCentre(six).second, 42, 1e-4);
  // Pixels 37..65: the cells whose centre the square covers are columns 3
  // and 4, whose even spread gathers x = 56, 5 pixels off its centre; the
  // coverage shares come within the sampling's 1/8 of a cell.
  const scenes::Scene off = SceneOf({Square(37, 28, 28, scenes::Colour::kRed)});
  EXPECT_EQ(FocusPositions(off, {0}, 27).size(), 4u);
  EXPECT_NEAR(FocusCentre(CoverageFocus(off, off.shapes[0], 27)).first, 51,
              14.0 / 8);

  // A disc at pixels 31..71 × 40..80: its centroid within the sampling's
  // 1/8 of a cell.
  scenes::Shape disc = Square(31, 40, 40, scenes::Colour::kBlue);
  disc.kind = scenes::ShapeKind::kCircle;
  const scenes::Scene round = SceneOf({disc});
  const Focus circle = CoverageFocus(round, round.shapes[0], 27);
  EXPECT_NEAR(FocusCentre(circle).first, 51, 14.0 / 8);
  EXPECT_NEAR(FocusCentre(circle).second, 60, 14.0 / 8);

  // A shape inside one cell has that cell alone.
  const scenes::Scene tiny = SceneOf({Square(30, 30, 6, scenes::Colour::kRed)});
  const Focus one = CoverageFocus(tiny, tiny.shapes[0], 27);
  EXPECT_EQ(one.positions, (std::vector<int>{1 + 2 * 27 + 2}));
  EXPECT_EQ(one.shares, std::vector<float>{1.0f});
}

// PatchRanks: each shape cell holds 1 + its shape's rank left to right
// among the shapes of its kind (or of its kind and colour), background 0.
TEST(ExamplesTest, PatchRanksCountTheMatchingShapesToTheLeft) {
  // Three squares in a row, red, blue, red, drawn out of order.
  const scenes::Scene scene =
      SceneOf({Square(28 * 12, 28, 42, scenes::Colour::kRed),
               Square(28, 28, 42, scenes::Colour::kRed),
               Square(28 * 7, 28, 42, scenes::Colour::kBlue)});
  const std::vector<int> kind = PatchRanks(scene, 27, false);
  const std::vector<int> pair = PatchRanks(scene, 27, true);
  // Each square's middle cell (pixels 49 + 14·k: cell 3 + k) on row 3.
  auto middle = [](int x_min) { return 3 * 27 + (x_min + 21) / 14; };
  EXPECT_EQ(kind[middle(28)], 1);
  EXPECT_EQ(kind[middle(28 * 7)], 2);
  EXPECT_EQ(kind[middle(28 * 12)], 3);
  EXPECT_EQ(pair[middle(28)], 1);
  EXPECT_EQ(pair[middle(28 * 7)], 1);
  EXPECT_EQ(pair[middle(28 * 12)], 2);
  EXPECT_EQ(kind[20 * 27 + 20], 0);  // background
  EXPECT_EQ(pair[20 * 27 + 20], 0);
  const std::vector<int> kinds = PatchKinds(scene, 27);
  for (size_t cell = 0; cell < kinds.size(); ++cell) {
    EXPECT_EQ(kind[cell] == 0, kinds[cell] == 0) << cell;
  }
}

// ExampleOptions::several_repeats: a detect or point question that asks for
// two or more shapes is trained that many times, where it stands; every
// other question once, as without it.
TEST(ExamplesTest, SeveralRepeatsRepeatOnlyQuestionsForSeveralShapes) {
  const scenes::Scene scene = TwoSquares();
  absl::StatusOr<SceneExample> plain = TinyExample(scene);
  absl::StatusOr<SceneExample> thrice =
      TinyExample(scene, {.several_repeats = 3});
  ASSERT_TRUE(plain.ok()) << plain.status();
  ASSERT_TRUE(thrice.ok()) << thrice.status();
  auto same = [](const Sequence& a, const Sequence& b) {
    if (a.kind != b.kind || a.rows.size() != b.rows.size() ||
        a.coordinates.size() != b.coordinates.size()) {
      return false;
    }
    for (size_t i = 0; i < a.rows.size(); ++i) {
      if (a.rows[i].kind != b.rows[i].kind ||
          a.rows[i].token != b.rows[i].token ||
          a.rows[i].value != b.rows[i].value) {
        return false;
      }
    }
    return true;
  };
  int several = 0;
  size_t j = 0;
  for (const Sequence& p : plain->sequences) {
    // Two coordinate targets (x, y) per object answered.
    const bool for_several = p.coordinates.size() >= 4;
    several += for_several;
    for (int r = 0; r < (for_several ? 3 : 1); ++r, ++j) {
      ASSERT_LT(j, thrice->sequences.size());
      EXPECT_TRUE(same(thrice->sequences[j], p))
          << "sequence " << j << ", " << scenes::TaskKindName(p.kind);
    }
  }
  EXPECT_EQ(several, 2);  // detect and point "square"
  EXPECT_EQ(j, thrice->sequences.size());
}

// ExampleOptions::any_order: a region question that asks for several shapes
// answers them in a drawn order; each object's x row accepts, and attends
// to, every shape not yet answered, and its y (and size) rows follow the
// shape whose x was fed. Questions about one shape are as without it.
TEST(ExamplesTest, AnyOrderAcceptsEveryShapeNotYetAnswered) {
  const scenes::Scene scene = TwoSquares();
  absl::StatusOr<SceneExample> plain = TinyExample(scene);
  absl::StatusOr<SceneExample> any =
      TinyExample(scene, {.several_repeats = 8, .any_order = true});
  absl::StatusOr<SceneExample> again =
      TinyExample(scene, {.several_repeats = 8, .any_order = true});
  ASSERT_TRUE(plain.ok()) << plain.status();
  ASSERT_TRUE(any.ok()) << any.status();
  ASSERT_TRUE(again.ok()) << again.status();
  // Each square's (x, y) bins, from the left-to-right answers; its rows'
  // focus.
  std::map<int, int> y_of_x;
  for (const Sequence& p : plain->sequences) {
    for (size_t k = 0; k + 1 < p.coordinates.size(); k += 2) {
      y_of_x[p.coordinates[k].bin] = p.coordinates[k + 1].bin;
    }
  }
  ASSERT_EQ(y_of_x.size(), 2u);
  std::vector<Focus> foci;
  for (int i : {0, 1}) {
    foci.push_back({FocusPositions(scene, {i}, 27), {}});
  }
  const Focus both = MergedFocus(foci);
  ASSERT_EQ(both.positions.size(),
            foci[0].positions.size() + foci[1].positions.size());
  EXPECT_NEAR(std::accumulate(both.shares.begin(), both.shares.end(), 0.0), 1.0,
              1e-6);

  size_t j = 0;
  std::set<int> first_x;
  for (const Sequence& p : plain->sequences) {
    const bool several = p.coordinates.size() >= 4;
    for (int r = 0; r < (several ? 8 : 1); ++r, ++j) {
      ASSERT_LT(j, any->sequences.size());
      const Sequence& a = any->sequences[j];
      EXPECT_EQ(a.rows.size(), again->sequences[j].rows.size());
      ASSERT_EQ(a.coordinates.size(), p.coordinates.size());
      for (size_t k = 0; k < a.coordinates.size(); ++k) {
        EXPECT_EQ(a.coordinates[k].bin, again->sequences[j].coordinates[k].bin);
        EXPECT_EQ(a.coordinates[k].row, p.coordinates[k].row);
      }
      if (!several) {
        for (size_t k = 0; k < a.coordinates.size(); ++k) {
          EXPECT_EQ(a.coordinates[k].bin, p.coordinates[k].bin);
          EXPECT_TRUE(a.coordinates[k].also.empty());
        }
        continue;
      }
      // x, y of the first object, x, y of the second.
      const std::vector<CoordinateTarget>& c = a.coordinates;
      first_x.insert(c[0].bin);
      ASSERT_EQ(c[0].also.size(), 1u);
      EXPECT_NE(c[0].also[0], c[0].bin);
      EXPECT_EQ(c[2].bin, c[0].also[0]);
      EXPECT_TRUE(c[1].also.empty());
      EXPECT_TRUE(c[2].also.empty());
      EXPECT_EQ(c[1].bin, y_of_x.at(c[0].bin));
      EXPECT_EQ(c[3].bin, y_of_x.at(c[2].bin));
      // The first x row attends to both squares, the rest to their own.
      ASSERT_FALSE(a.focuses.empty());
      EXPECT_EQ(a.focuses[0].row, c[0].row);
      EXPECT_EQ(a.focuses[0].positions, both.positions);
      EXPECT_EQ(a.focuses[0].shares, both.shares);
      EXPECT_EQ(a.focuses[1].row, c[1].row);
      EXPECT_EQ(a.focuses[1].positions.size(), foci[0].positions.size());
    }
  }
  EXPECT_EQ(j, any->sequences.size());
  // Over eight repeats of two questions, both squares come first.
  EXPECT_EQ(first_x.size(), 2u);
}

// ExampleOptions::fed_jitter / fed_size_jitter: the coordinates and sizes
// a region answer's rows are fed move off the truth by about the asked
// error, each snapped to its bin, the same for the same scene; every
// target, focus and token row stays as without them.
TEST(ExamplesTest, FedJitterMovesWhatIsFedNotTheTargets) {
  const scenes::Scene scene = TwoSquares();
  constexpr double kSigma = 0.05, kSizeSigma = 0.2;
  constexpr float kBins = 1024;  // the tiny config's coordinate and size bins
  const ExampleOptions jitter = {.fed_jitter = kSigma,
                                 .fed_size_jitter = kSizeSigma};
  SceneExample plain, moved;
  PlainAndWith(scene, jitter, &plain, &moved);
  absl::StatusOr<SceneExample> again = TinyExample(scene, jitter);
  ASSERT_TRUE(again.ok()) << again.status();
  std::vector<double> coordinate_moves, size_log_moves;
  for (size_t i = 0; i < plain.sequences.size(); ++i) {
    const Sequence& p = plain.sequences[i];
    const Sequence& m = moved.sequences[i];
    ASSERT_EQ(m.rows.size(), p.rows.size());
    EXPECT_EQ(m.coordinates.size(), p.coordinates.size());
    for (size_t k = 0; k < m.coordinates.size(); ++k) {
      EXPECT_EQ(m.coordinates[k].bin, p.coordinates[k].bin);
      EXPECT_EQ(m.coordinates[k].row, p.coordinates[k].row);
    }
    ASSERT_EQ(m.sizes.size(), p.sizes.size());
    for (size_t k = 0; k < m.sizes.size(); ++k) {
      EXPECT_EQ(m.sizes[k].w_bin, p.sizes[k].w_bin);
      EXPECT_EQ(m.sizes[k].h_bin, p.sizes[k].h_bin);
    }
    EXPECT_EQ(m.tokens.size(), p.tokens.size());
    EXPECT_EQ(m.stops.size(), p.stops.size());
    ASSERT_EQ(m.focuses.size(), p.focuses.size());
    for (size_t k = 0; k < m.focuses.size(); ++k) {
      EXPECT_EQ(m.focuses[k].positions, p.focuses[k].positions);
    }
    for (size_t r = 0; r < p.rows.size(); ++r) {
      const InputRow &pr = p.rows[r], &mr = m.rows[r];
      ASSERT_EQ(mr.kind, pr.kind);
      EXPECT_EQ(mr.token, pr.token);
      EXPECT_EQ(mr.value, again->sequences[i].rows[r].value);
      for (int v = 0; v < (mr.kind == RowKind::kSize ? 2 : 1); ++v) {
        EXPECT_GE(mr.value[v], 0.0f);
        EXPECT_LT(mr.value[v], 1.0f);
        EXPECT_EQ(mr.value[v] * kBins, std::nearbyint(mr.value[v] * kBins));
      }
      if (mr.kind == RowKind::kCoordinate) {
        coordinate_moves.push_back(std::abs(mr.value[0] - pr.value[0]));
      } else if (mr.kind == RowKind::kSize) {
        for (int v : {0, 1}) {
          size_log_moves.push_back(
              std::abs(std::log(mr.value[v] / pr.value[v])));
        }
      } else {
        EXPECT_EQ(mr.value, pr.value);
      }
    }
  }
  // The mean |error| of a normal one is 0.8 sigma; with this many draws
  // the mean lands well inside [0.4, 1.2] sigma.
  auto mean = [](const std::vector<double>& v) {
    return std::accumulate(v.begin(), v.end(), 0.0) / v.size();
  };
  ASSERT_GE(coordinate_moves.size(), 16u);
  ASSERT_GE(size_log_moves.size(), 8u);
  EXPECT_GT(mean(coordinate_moves), 0.4 * kSigma);
  EXPECT_LT(mean(coordinate_moves), 1.2 * kSigma);
  EXPECT_GT(mean(size_log_moves), 0.4 * kSizeSigma);
  EXPECT_LT(mean(size_log_moves), 1.2 * kSizeSigma);
  EXPECT_LT(*std::max_element(coordinate_moves.begin(), coordinate_moves.end()),
            6 * kSigma);
}

// BinSetLoss: an even mixture over the set; either of its bins alone costs
// the same, and one bin without sigma is its negative log-likelihood.
TEST(TrainForwardTest, BinSetLossAcceptsAnyBinOfTheSet) {
  auto peaked = [](int64_t bin) {
    at::Tensor logits = at::zeros({1, 64});
    logits[0][bin] = 12.0;
    return logits;
  };
  for (double sigma : {0.0, 2.0}) {
    SCOPED_TRACE(sigma);
    const double at_10 =
        BinSetLoss(peaked(10), {{10, 40}}, sigma).item<double>();
    const double at_40 =
        BinSetLoss(peaked(40), {{10, 40}}, sigma).item<double>();
    const double at_25 =
        BinSetLoss(peaked(25), {{10, 40}}, sigma).item<double>();
    EXPECT_NEAR(at_10, at_40, 1e-4);
    EXPECT_GT(at_25, at_10 + 1.0);
    // A head that spreads its mass over both matches the mixture better
    // than one that picks one.
    at::Tensor two = at::zeros({1, 64});
    two[0][10] = 12.0;
    two[0][40] = 12.0;
    EXPECT_LT(BinSetLoss(two, {{10, 40}}, 0.0).item<double>(), 1e-3);
  }
  const at::Tensor logits = at::randn({3, 64});
  const at::Tensor nll = BinSetLoss(logits, {{1}, {7}, {63}}, 0.0);
  const at::Tensor lp = at::log_softmax(logits, -1);
  EXPECT_NEAR(nll[0].item<double>(), -lp[0][1].item<double>(), 1e-6);
  EXPECT_NEAR(nll[1].item<double>(), -lp[1][7].item<double>(), 1e-6);
  EXPECT_NEAR(nll[2].item<double>(), -lp[2][63].item<double>(), 1e-6);
}

// With ExampleOptions::focus_coverage a detection's and a point's rows
// attend to their shape's CoverageFocus; the other rows are as without it.
TEST(ExamplesTest, FocusCoverageChangesOnlyTheRegionRows) {
  const scenes::Scene scene =
      SceneOf({Square(35 + 28 * 6, 28, 28, scenes::Colour::kBlue),
               Square(35, 28, 28, scenes::Colour::kRed)});
  SceneExample plain, coverage;
  ASSERT_NO_FATAL_FAILURE(
      PlainAndWith(scene, {.focus_coverage = true}, &plain, &coverage));
  const Focus left = CoverageFocus(scene, scene.shapes[1], 27);
  const Focus right = CoverageFocus(scene, scene.shapes[0], 27);
  int region_rows = 0;
  for (size_t i = 0; i < plain.sequences.size(); ++i) {
    const Sequence& c = coverage.sequences[i];
    const Sequence& p = plain.sequences[i];
    ASSERT_EQ(c.focuses.size(), p.focuses.size());
    const bool region = c.kind == scenes::TaskKind::kDetect ||
                        c.kind == scenes::TaskKind::kPoint;
    const size_t per_object = c.kind == scenes::TaskKind::kDetect ? 3 : 2;
    for (size_t k = 0; k < c.focuses.size(); ++k) {
      EXPECT_EQ(c.focuses[k].row, p.focuses[k].row);
      if (!region) {
        EXPECT_EQ(c.focuses[k].positions, p.focuses[k].positions);
        EXPECT_EQ(c.focuses[k].shares, p.focuses[k].shares);
        continue;
      }
      // Objects come left to right: "square" asks for both; one colour's
      // square is one of them.
      const size_t objects = c.coordinates.size() / 2;
      const Focus& shape = objects == 2 ? (k < per_object ? left : right)
                           : c.focuses[k].positions == left.positions ? left
                                                                      : right;
      EXPECT_EQ(c.focuses[k].positions, shape.positions) << k;
      EXPECT_EQ(c.focuses[k].shares, shape.shares) << k;
      EXPECT_TRUE(p.focuses[k].shares.empty()) << k;
      ++region_rows;
    }
  }
  EXPECT_GT(region_rows, 0);
}

// Every row that answers about a shape looks at it: a caption's tokens at
// the shape of their phrase (left to right), a detection's x, y and size
// rows at the object they place.
TEST(ExamplesTest, AnswerRowsFocusOnTheirShapes) {
  const scenes::Scene scene =
      SceneOf({Square(28 * 7, 28, 42, scenes::Colour::kBlue),
               Square(28, 28, 42, scenes::Colour::kRed)});
  const Tokenizer tokenizer = TinyTokenizer();
  absl::StatusOr<MoondreamConfig> config =
      LoadConfigFile(kTinyDir + "/config.json", Moondream2Config());
  ASSERT_TRUE(config.ok()) << config.status();
  absl::StatusOr<SceneExample> example =
      MakeSceneExample(scene, *config, tokenizer);
  ASSERT_TRUE(example.ok()) << example.status();
  const std::vector<int> left = FocusPositions(scene, {1}, 27);
  const std::vector<int> right = FocusPositions(scene, {0}, 27);
  bool saw_caption = false, saw_detect = false;
  for (const Sequence& s : example->sequences) {
    if (s.kind == scenes::TaskKind::kCaptionShort) {
      saw_caption = true;
      // "a red square and a blue square": one focus per answer token.
      ASSERT_EQ(s.focuses.size(), s.tokens.size() - 1);
      EXPECT_EQ(s.focuses.front().row, s.tokens.front().row);
      EXPECT_EQ(s.focuses.front().positions, left);
      EXPECT_EQ(s.focuses.back().positions, right);
      ASSERT_TRUE(tokenizer.Encode("a red square").ok());
      const size_t first_phrase = tokenizer.Encode("a red square")->size();
      EXPECT_EQ(s.focuses[first_phrase - 1].positions, left);
      EXPECT_EQ(s.focuses[first_phrase].positions, right);
    }
    if (s.kind == scenes::TaskKind::kDetect && s.coordinates.size() == 4) {
      saw_detect = true;  // "square": both, left first
      ASSERT_EQ(s.focuses.size(), 6u);
      for (int i = 0; i < 3; ++i) {
        EXPECT_EQ(s.focuses[i].positions, left) << i;
        EXPECT_EQ(s.focuses[3 + i].positions, right) << i;
      }
      EXPECT_EQ(s.focuses[0].row, s.coordinates[0].row);
      EXPECT_EQ(s.focuses[1].row, s.coordinates[1].row);
      EXPECT_EQ(s.focuses[2].row, s.sizes[0].row);
    }
  }
  EXPECT_TRUE(saw_caption);
  EXPECT_TRUE(saw_detect);
}

// The focus loss is −log of the attention mass on the focus positions; the
// position loss is 0 for a probe that reads positions exactly.
TEST(TrainForwardTest, FocusAndPositionLosses) {
  TrainOptions o = SmallRun("focus_losses");
  absl::StatusOr<std::unique_ptr<Trainer>> t = Trainer::Create(o);
  ASSERT_TRUE(t.ok()) << t.status();
  const Sequence seq = TextSequence(scenes::TaskKind::kCount, {10, 11}, {17}, 2,
                                    std::vector<Focus>{{{5, 9}, {}}});
  ASSERT_EQ(seq.focuses.size(), 1u);
  const int64_t t_rows = static_cast<int64_t>(seq.rows.size());
  const int64_t p = 730, grid = 27;
  const at::Tensor rows_BTC = at::randn({1, t_rows, o.config.text.dim});
  FocusTaps taps;
  taps.probs_BTP = at::zeros({1, t_rows, p});
  taps.probs_BTP[0][seq.focuses[0].row][5] = 0.25;
  taps.probs_BTP[0][seq.focuses[0].row][9] = 0.125;
  taps.probs_BTP[0][seq.focuses[0].row][6] = 0.625;  // outside the focus
  // Values that hold each token's (x, y) cell centre in their first two
  // channels: the identity probe reads them exactly.
  const at::Tensor centre = (at::arange(grid, at::kFloat) + 0.5) / grid;
  taps.values_PD = at::zeros({p, 4});
  taps.values_PD.narrow(0, 1, grid * grid)
      .select(1, 0)
      .copy_(centre.repeat({grid}));
  taps.values_PD.narrow(0, 1, grid * grid)
      .select(1, 1)
      .copy_(centre.repeat_interleave(grid));
  LinearWeights probe;
  probe.weight = at::eye(2, 4);
  probe.bias = at::zeros({2});

  LossOptions off;
  const auto base = SequenceLosses(rows_BTC, {&seq, 1}, (*t)->weights(),
                                   o.config, off, &taps, &probe);
  EXPECT_EQ(base.n_focus, 0);
  LossOptions on;
  on.focus_weight = 2;
  on.position_weight = 1;
  const auto with = SequenceLosses(rows_BTC, {&seq, 1}, (*t)->weights(),
                                   o.config, on, &taps, &probe);
  EXPECT_EQ(with.n_focus, 1);
  EXPECT_NEAR(with.focus, -std::log(0.375 + 1e-6), 1e-6);
  EXPECT_NEAR(with.position, 0.0, 1e-10);
  EXPECT_NEAR(with.total.item<double>(),
              base.total.item<double>() + 2 * with.focus, 1e-5);

  // A probe that reads nothing scores the coordinates' variance: 1 − R² of
  // a constant guess at the mean is 1 (up to the grid's discreteness).
  LinearWeights blind;
  blind.weight = at::zeros({2, 4});
  blind.bias = at::full({2}, 0.5);
  const auto guessing = SequenceLosses(rows_BTC, {&seq, 1}, (*t)->weights(),
                                       o.config, on, &taps, &blind);
  EXPECT_NEAR(guessing.position, 1.0 - 1.0 / (grid * grid), 1e-4);

  // Spread: KL from the even spread over the two cells, above the mass's
  // −log because the mass falls unevenly; 0 once it is all there, evenly.
  on.focus_spread = true;
  const auto spread = SequenceLosses(rows_BTC, {&seq, 1}, (*t)->weights(),
                                     o.config, on, &taps, &probe);
  EXPECT_NEAR(
      spread.focus,
      -0.5 * (std::log(0.25 + 1e-6) + std::log(0.125 + 1e-6)) - std::log(2.0),
      1e-5);
  EXPECT_GT(spread.focus, with.focus);
  taps.probs_BTP[0][seq.focuses[0].row][5] = 0.5;
  taps.probs_BTP[0][seq.focuses[0].row][9] = 0.5;
  taps.probs_BTP[0][seq.focuses[0].row][6] = 0;
  const auto even = SequenceLosses(rows_BTC, {&seq, 1}, (*t)->weights(),
                                   o.config, on, &taps, &probe);
  EXPECT_NEAR(even.focus, 0.0, 1e-5);

  // Shares: the KL from the target's own spread, 0 when the mass matches
  // it, and −Σ s·log p − H(s) when it does not.
  const Sequence shared =
      TextSequence(scenes::TaskKind::kCount, {10, 11}, {17}, 2,
                   std::vector<Focus>{{{0, 5, 9}, {0.5f, 0.25f, 0.25f}}});
  taps.probs_BTP.zero_();
  taps.probs_BTP[0][shared.focuses[0].row][0] = 0.5;
  taps.probs_BTP[0][shared.focuses[0].row][5] = 0.25;
  taps.probs_BTP[0][shared.focuses[0].row][9] = 0.25;
  const auto matched = SequenceLosses(rows_BTC, {&shared, 1}, (*t)->weights(),
                                      o.config, on, &taps, &probe);
  EXPECT_NEAR(matched.focus, 0.0, 1e-5);
  taps.probs_BTP[0][shared.focuses[0].row][0] = 0.25;
  taps.probs_BTP[0][shared.focuses[0].row][5] = 0.5;
  const double entropy = -(0.5 * std::log(0.5) + 0.5 * std::log(0.25));
  const auto skewed = SequenceLosses(rows_BTC, {&shared, 1}, (*t)->weights(),
                                     o.config, on, &taps, &probe);
  EXPECT_NEAR(skewed.focus,
              -(0.5 * std::log(0.25 + 1e-6) + 0.25 * std::log(0.5 + 1e-6) +
                0.25 * std::log(0.25 + 1e-6)) -
                  entropy,
              1e-5);
  EXPECT_GT(skewed.focus, 0.1);
}

// With ExampleOptions::focus_sink the rows that decide how many attend to
// bos (position 0) and the shapes not yet answered, in equal shares: the
// count's digit to all of them, a caption's separators to the shapes not
// yet named, its eos row and a region's stop row to bos alone.
TEST(ExamplesTest, FocusSinkRowsDecideHowMany) {
  const scenes::Scene scene =
      SceneOf({Square(28 * 10, 28, 42, scenes::Colour::kGreen),
               Square(28 * 7, 28, 42, scenes::Colour::kBlue),
               Square(28, 28, 42, scenes::Colour::kRed)});
  const Focus all = SinkAndShapes(scene, {0, 1, 2}, 27);
  ASSERT_EQ(all.positions.size(), 1u + 3 * 9);
  EXPECT_EQ(all.positions[0], 0);
  EXPECT_FLOAT_EQ(all.shares[0], 0.25f);
  EXPECT_FLOAT_EQ(all.shares[1], 0.25f / 9);
  EXPECT_NEAR(std::accumulate(all.shares.begin(), all.shares.end(), 0.0), 1.0,
              1e-6);
  const Focus none = SinkAndShapes(scene, {}, 27);
  EXPECT_EQ(none.positions, std::vector<int>{0});
  EXPECT_EQ(none.shares, std::vector<float>{1.0f});

  const Tokenizer tokenizer = TinyTokenizer();
  SceneExample plain, sink;
  ASSERT_NO_FATAL_FAILURE(
      PlainAndWith(scene, {.focus_sink = true}, &plain, &sink));
  bool saw_count = false, saw_caption = false, saw_detect = false;
  for (size_t i = 0; i < sink.sequences.size(); ++i) {
    const Sequence& s = sink.sequences[i];
    const Sequence& p = plain.sequences[i];
    if (s.kind == scenes::TaskKind::kCount) {
      saw_count = true;
      ASSERT_EQ(s.focuses.size(), 1u);  // the digit "3"
      EXPECT_EQ(s.focuses[0].positions, all.positions);
      EXPECT_EQ(s.focuses[0].shares, all.shares);
    }
    if (s.kind == scenes::TaskKind::kCaptionNormal) {
      saw_caption = true;
      // "a red square, a blue square and a green square": one more focus
      // (the eos row's); the two separators differ from the plain layout.
      ASSERT_EQ(s.focuses.size(), p.focuses.size() + 1);
      ASSERT_TRUE(tokenizer.Encode("a red square").ok());
      ASSERT_TRUE(tokenizer.Encode("a red square, a blue square").ok());
      const size_t comma = tokenizer.Encode("a red square")->size();
      const size_t and_ =
          tokenizer.Encode("a red square, a blue square")->size();
      for (size_t k = 0; k < p.focuses.size(); ++k) {
        if (k == comma || k == and_) continue;
        EXPECT_EQ(s.focuses[k].positions, p.focuses[k].positions) << k;
        EXPECT_TRUE(s.focuses[k].shares.empty()) << k;
      }
      const Focus two = SinkAndShapes(scene, {1, 0}, 27);
      const Focus one = SinkAndShapes(scene, {0}, 27);
      EXPECT_EQ(s.focuses[comma].positions, two.positions);
      EXPECT_EQ(s.focuses[comma].shares, two.shares);
      EXPECT_FLOAT_EQ(s.focuses[comma].shares[0], 1.0f / 3);
      EXPECT_EQ(s.focuses[and_].positions, one.positions);
      EXPECT_FLOAT_EQ(s.focuses[and_].shares[0], 0.5f);
      EXPECT_EQ(s.focuses.back().row, s.tokens.back().row);  // eos
      EXPECT_EQ(s.focuses.back().positions, none.positions);
    }
    if (s.kind == scenes::TaskKind::kDetect && s.coordinates.size() == 6) {
      saw_detect = true;  // "square": all three, then the stop row
      ASSERT_EQ(s.focuses.size(), p.focuses.size() + 1);
      EXPECT_EQ(s.focuses.back().row, s.stops.back().row);
      EXPECT_TRUE(s.stops.back().eos);
      EXPECT_EQ(s.focuses.back().positions, none.positions);
    }
  }
  EXPECT_TRUE(saw_count);
  EXPECT_TRUE(saw_caption);
  EXPECT_TRUE(saw_detect);
}

// A red square at cells 2-4 and a green one at cells 20-22, in one row.
scenes::Scene RedAndGreenSquares() {
  return SceneOf({Square(28 * 10, 28, 42, scenes::Colour::kGreen),
                  Square(28, 28, 42, scenes::Colour::kRed)});
}

// ExampleOptions::free_region_stop: a detect's or point's stop row loses
// its sink focus; every other row keeps what focus_sink gives it.
TEST(ExamplesTest, FreeRegionStopDropsOnlyTheRegionStopsFocus) {
  const scenes::Scene scene = RedAndGreenSquares();
  SceneExample plain, sink;
  ASSERT_NO_FATAL_FAILURE(
      PlainAndWith(scene, {.focus_sink = true}, &plain, &sink));
  absl::StatusOr<SceneExample> freed =
      TinyExample(scene, {.focus_sink = true, .free_region_stop = true});
  ASSERT_TRUE(freed.ok()) << freed.status();
  ASSERT_EQ(freed->sequences.size(), sink.sequences.size());
  int regions = 0;
  for (size_t i = 0; i < sink.sequences.size(); ++i) {
    const Sequence& s = sink.sequences[i];
    const Sequence& f = freed->sequences[i];
    const bool region = !s.stops.empty();
    regions += region;
    ASSERT_EQ(f.focuses.size() + (region ? 1 : 0), s.focuses.size());
    for (size_t k = 0; k < f.focuses.size(); ++k) {
      EXPECT_EQ(f.focuses[k].row, s.focuses[k].row);
      EXPECT_EQ(f.focuses[k].positions, s.focuses[k].positions);
      EXPECT_EQ(f.focuses[k].shares, s.focuses[k].shares);
    }
    if (region) {
      // The dropped one is the stop row's, on the sink alone.
      EXPECT_EQ(s.focuses.back().row, s.stops.back().row);
      EXPECT_EQ(s.focuses.back().positions, std::vector<int>{0});
      // (A question for a shape the scene lacks has no other row.)
      EXPECT_TRUE(f.focuses.empty() ||
                  f.focuses.back().row != f.stops.back().row);
    }
  }
  EXPECT_GE(regions, 4);  // detect and point, for square and each colour
}

// ExampleOptions::answered_focus: a region answer's x row of each object
// after the first gets the objects before it as an answered target, and its
// stop row all of them; nothing else gets one, and the focus targets do
// not change.
TEST(ExamplesTest, AnsweredFocusNamesTheShapesAnsweredBefore) {
  const scenes::Scene scene = RedAndGreenSquares();
  SceneExample plain, with;
  ASSERT_NO_FATAL_FAILURE(
      PlainAndWith(scene, {.answered_focus = true}, &plain, &with));
  int with_two = 0, with_one = 0;
  for (size_t i = 0; i < with.sequences.size(); ++i) {
    const Sequence& p = plain.sequences[i];
    const Sequence& s = with.sequences[i];
    EXPECT_TRUE(p.answered.empty());
    ASSERT_EQ(s.focuses.size(), p.focuses.size());
    for (size_t k = 0; k < s.focuses.size(); ++k) {
      EXPECT_EQ(s.focuses[k].positions, p.focuses[k].positions);
    }
    if (s.stops.empty() || s.coordinates.empty()) {
      EXPECT_TRUE(s.answered.empty());  // text, or no matching shape
      continue;
    }
    // Objects left to right: the red square (cells 2-4), then the green.
    const std::vector<int> red = Cells(2, 2, 3), green = Cells(20, 2, 3);
    if (s.stops.size() == 3) {  // "square": both
      ++with_two;
      ASSERT_EQ(s.answered.size(), 2u);
      EXPECT_EQ(s.answered[0].row, s.coordinates[2].row);  // 2nd object's x
      EXPECT_EQ(s.answered[0].positions, red);
      EXPECT_EQ(s.answered[1].row, s.stops.back().row);
      std::vector<int> both = red;
      both.insert(both.end(), green.begin(), green.end());
      std::sort(both.begin(), both.end());
      EXPECT_EQ(s.answered[1].positions, both);
      ASSERT_EQ(s.answered[1].shares.size(), both.size());
      EXPECT_FLOAT_EQ(s.answered[1].shares[0], 0.5f / red.size());
    } else {
      ++with_one;
      ASSERT_EQ(s.stops.size(), 2u);
      ASSERT_EQ(s.answered.size(), 1u);  // the stop row, on its one shape
      EXPECT_EQ(s.answered[0].row, s.stops.back().row);
      EXPECT_EQ(s.answered[0].positions,
                s.coordinates[0].bin < 1024 / 2 ? red : green);
    }
  }
  EXPECT_EQ(with_two, 2);  // detect and point "square"
  EXPECT_GE(with_one, 4);  // "red", "green", "red square", "green square"
}

// PatchKinds marks the cells a shape covers with 1 + its kind; the loss
// weighs background and shape cells alike: ln 4 for a probe that knows
// nothing, ~0 for one that reads the kind off the embedding.
TEST(TrainForwardTest, PatchKindsAndTheirLoss) {
  const scenes::Scene scene =
      SceneOf({Square(28, 28, 42, scenes::Colour::kRed)});
  const std::vector<int> kinds = PatchKinds(scene, 27);
  ASSERT_EQ(kinds.size(), 729u);
  std::vector<int> covered;
  for (int i = 0; i < 729; ++i) {
    if (kinds[i] != 0) {
      EXPECT_EQ(kinds[i], 1 + static_cast<int>(scenes::ShapeKind::kSquare));
      covered.push_back(1 + i);
    }
  }
  EXPECT_EQ(covered, Cells(2, 2, 3));
  // PatchColours labels the same cells with 1 + the colour.
  const std::vector<int> colours = PatchColours(scene, 27);
  for (int i = 0; i < 729; ++i) {
    EXPECT_EQ(colours[i],
              kinds[i] != 0 ? 1 + static_cast<int>(scenes::Colour::kRed) : 0);
  }

  // Embeddings that hold their cell's kind one-hot in channels 0..3.
  at::Tensor image_PC = at::zeros({729, 8});
  for (int i = 0; i < 729; ++i) image_PC[i][kinds[i]] = 1;
  LinearWeights blind;
  blind.weight = at::zeros({4, 8});
  blind.bias = at::zeros({4});
  EXPECT_NEAR(PatchClassLoss(image_PC, kinds, blind).item<double>(),
              std::log(4.0), 1e-6);
  LinearWeights reader;
  reader.weight = at::eye(4, 8) * 30;
  reader.bias = at::zeros({4});
  EXPECT_LT(PatchClassLoss(image_PC, kinds, reader).item<double>(), 1e-9);
}

// PatchExtentLoss reads log(w), log(h) of the covering shape, in image
// fractions, on its cells only; guessing the typical size scores about 1.
TEST(TrainForwardTest, PatchExtentLossReadsLogSizes) {
  const scenes::Scene scene =
      SceneOf({Square(28, 28, 42, scenes::Colour::kRed)});
  const std::vector<int> kinds = PatchKinds(scene, 27);
  const std::vector<PatchBox> boxes = PatchBoxes(scene, 27);
  const at::Tensor image_PC = at::ones({729, 4});
  const Box truth = scenes::NormalizedBox(scene, scene.shapes[0]);
  const double log_w = std::log(truth.x_max - truth.x_min);
  const double log_h = std::log(truth.y_max - truth.y_min);
  LinearWeights exact;
  exact.weight = at::zeros({2, 4});
  exact.bias =
      at::tensor({static_cast<float>(log_w), static_cast<float>(log_h)});
  EXPECT_LT(PatchExtentLoss(image_PC, kinds, boxes, exact).item<double>(),
            1e-9);
  LinearWeights quarter;
  quarter.weight = at::zeros({2, 4});
  quarter.bias = at::full({2}, std::log(0.25));
  const double miss_w = log_w - std::log(0.25), miss_h = log_h - std::log(0.25);
  EXPECT_NEAR(PatchExtentLoss(image_PC, kinds, boxes, quarter).item<double>(),
              (miss_w * miss_w + miss_h * miss_h) / 2 / 0.1, 1e-5);
  // Background-only scenes cost nothing.
  EXPECT_EQ(PatchExtentLoss(image_PC, std::vector<int>(729, 0), boxes, exact)
                .item<double>(),
            0);

  // Over generated scenes, a probe guessing the mean log size scores ~1.
  std::vector<scenes::Scene> drawn;
  double sum = 0;
  int n = 0;
  for (int i = 0; i < 200; ++i) {
    drawn.push_back(scenes::GenerateScene(scenes::SceneSeed(4242, i)));
    for (const scenes::Shape& s : drawn.back().shapes) {
      const Box b = scenes::NormalizedBox(drawn.back(), s);
      sum += std::log(b.x_max - b.x_min) + std::log(b.y_max - b.y_min);
      n += 2;
    }
  }
  LinearWeights mean;
  mean.weight = at::zeros({2, 4});
  mean.bias = at::full({2}, sum / n);
  double loss = 0;
  for (const scenes::Scene& s : drawn) {
    loss +=
        PatchExtentLoss(image_PC, PatchKinds(s, 27), PatchBoxes(s, 27), mean)
            .item<double>() /
        drawn.size();
  }
  std::printf("patch-extent loss of the mean guess: %.3f\n", loss);
  EXPECT_GT(loss, 0.5);
  EXPECT_LT(loss, 2.0);
}

// RowExtentLoss reads log(w), log(h) from the size rows alone, scaled as
// the patch-extent loss.
TEST(TrainForwardTest, RowExtentLossReadsLogSizesOnSizeRows) {
  constexpr int kBins = 1024;
  Sequence seq;
  seq.sizes.push_back({2, 205, 103});  // w 0.2, h ~0.1
  seq.coordinates.push_back({1, 512});
  const at::Tensor rows_BTC = at::randn({1, 4, 8});
  const double log_w = std::log(205.0 / kBins), log_h = std::log(103.0 / kBins);
  LinearWeights exact;
  exact.weight = at::zeros({2, 8});
  exact.bias =
      at::tensor({static_cast<float>(log_w), static_cast<float>(log_h)});
  EXPECT_LT(RowExtentLoss(rows_BTC, {seq}, kBins, exact).item<double>(), 1e-9);
  LinearWeights quarter;
  quarter.weight = at::zeros({2, 8});
  quarter.bias = at::full({2}, std::log(0.25));
  const double miss_w = log_w - std::log(0.25), miss_h = log_h - std::log(0.25);
  EXPECT_NEAR(RowExtentLoss(rows_BTC, {seq}, kBins, quarter).item<double>(),
              (miss_w * miss_w + miss_h * miss_h) / 2 / 0.1, 1e-5);
  // The probe reads the size row (2), layer-normed, and no other.
  LinearWeights reader;
  reader.weight = at::zeros({2, 8});
  reader.weight[0][0] = 1;
  reader.bias = at::zeros({2});
  const at::Tensor ln_C = at::layer_norm(rows_BTC[0][2], {8});
  const double read = ln_C[0].item<double>();
  EXPECT_NEAR(RowExtentLoss(rows_BTC, {seq}, kBins, reader).item<double>(),
              ((read - log_w) * (read - log_w) + log_h * log_h) / 2 / 0.1,
              1e-5);
  // Sequences without size rows cost nothing.
  Sequence point;
  point.coordinates.push_back({1, 512});
  EXPECT_EQ(RowExtentLoss(rows_BTC, {point}, kBins, exact).item<double>(), 0);
}

TEST(TrainForwardTest, RowCentreLossReadsXOnXRowsAndYOnYRows) {
  constexpr int kBins = 1024;
  Sequence seq;
  seq.coordinates.push_back({1, 256});  // x 0.25
  seq.coordinates.push_back({2, 768});  // y 0.75
  seq.sizes.push_back({3, 205, 103});
  const at::Tensor rows_BTC = at::randn({1, 5, 8});
  const double x = 256.0 / kBins, y = 768.0 / kBins;
  LinearWeights exact;
  exact.weight = at::zeros({2, 8});
  exact.bias = at::tensor({static_cast<float>(x), static_cast<float>(y)});
  EXPECT_LT(RowCentreLoss(rows_BTC, {seq}, kBins, exact).item<double>(), 1e-9);
  // Output 0 answers the x row and output 1 the y row, not the other way.
  LinearWeights swapped;
  swapped.weight = at::zeros({2, 8});
  swapped.bias = at::tensor({static_cast<float>(y), static_cast<float>(x)});
  EXPECT_NEAR(RowCentreLoss(rows_BTC, {seq}, kBins, swapped).item<double>(),
              (x - y) * (x - y) / 0.05, 1e-5);
  // The probe reads the x row (1), layer-normed, and the size row not at
  // all.
  LinearWeights reader;
  reader.weight = at::zeros({2, 8});
  reader.weight[0][3] = 1;
  reader.bias = at::zeros({2});
  const double read = at::layer_norm(rows_BTC[0][1], {8})[3].item<double>();
  EXPECT_NEAR(RowCentreLoss(rows_BTC, {seq}, kBins, reader).item<double>(),
              ((read - x) * (read - x) + y * y) / 2 / 0.05, 1e-5);
  // Sequences without coordinate rows cost nothing.
  Sequence caption;
  EXPECT_EQ(RowCentreLoss(rows_BTC, {caption}, kBins, exact).item<double>(), 0);
  // An x row that may answer another shape too (--any-order) has no centre
  // to read: the swapped probe then pays for the y row alone.
  Sequence either = seq;
  either.coordinates[0].also = {900};
  EXPECT_NEAR(RowCentreLoss(rows_BTC, {either}, kBins, swapped).item<double>(),
              (x - y) * (x - y) / 0.05, 1e-5);
  EXPECT_NEAR(RowCentreLoss(rows_BTC, {either}, kBins, reader).item<double>(),
              y * y / 0.05, 1e-5);
}

// ShrinkScene: a scene too big for one crop is scaled to fit it, boxes
// rounded; one that fits is left alone.
TEST(ExamplesTest, ShrinkSceneFitsOneCrop) {
  scenes::Scene big = SceneOf({Square(28, 28, 42, scenes::Colour::kRed)});
  big.width = 756;
  big.height = 504;
  big.shapes[0].box = {100, 200, 250, 350};
  const scenes::Scene small = ShrinkScene(big, 378);
  EXPECT_EQ(small.width, 378);
  EXPECT_EQ(small.height, 252);
  const scenes::PixelBox& b = small.shapes[0].box;
  EXPECT_EQ(b.x_min, 50);
  EXPECT_EQ(b.y_min, 100);
  EXPECT_EQ(b.x_max, 125);
  EXPECT_EQ(b.y_max, 175);
  EXPECT_EQ(small.shapes[0].kind, big.shapes[0].kind);
  EXPECT_EQ(small.shapes[0].colour, big.shapes[0].colour);
  // Patch kinds depend on fractions of the image: halving keeps them.
  EXPECT_EQ(PatchKinds(small, 27), PatchKinds(big, 27));

  const scenes::Scene fits = ShrinkScene(small, 378);
  EXPECT_EQ(fits.width, small.width);
  EXPECT_EQ(fits.shapes[0].box.x_max, small.shapes[0].box.x_max);
}

// TrainingScene: with no wide share it is the specification's scene of
// that seed; with one, about that share of the scenes are redrawn to the
// aspect asked for, the rest kept, each still within the specification and
// the same on every call.
TEST(ExamplesTest, TrainingSceneOversamplesWideImages) {
  constexpr uint64_t kBase = 1000000;
  constexpr int kScenes = 400;
  auto same = [](const scenes::Scene& a, const scenes::Scene& b) {
    return a.seed == b.seed && a.width == b.width && a.height == b.height &&
           a.shapes.size() == b.shapes.size();
  };
  int wide_before = 0, wide_after = 0, kept = 0;
  for (int i = 0; i < kScenes; ++i) {
    const scenes::Scene spec =
        scenes::GenerateScene(scenes::SceneSeed(kBase, i));
    EXPECT_TRUE(same(TrainingScene(kBase, i, 0, 1.8), spec));
    const scenes::Scene drawn = TrainingScene(kBase, i, 0.5, 1.8);
    EXPECT_TRUE(same(drawn, TrainingScene(kBase, i, 0.5, 1.8)));
    EXPECT_GE(std::min(drawn.width, drawn.height), scenes::kMinCanvasSide);
    EXPECT_LE(std::max(drawn.width, drawn.height), scenes::kMaxCanvasSide);
    wide_before += scenes::SceneAspect(spec) >= 1.8;
    wide_after += scenes::SceneAspect(drawn) >= 1.8;
    kept += same(drawn, spec);
    // Every scene redrawn is one of the aspect asked for.
    if (!same(drawn, spec)) {
      EXPECT_GE(scenes::SceneAspect(drawn), 1.8);
    }
  }
  // The specification: ~20% at 1.8 or more; half redrawn: ~60%.
  EXPECT_NEAR(wide_before, 0.2 * kScenes, 0.06 * kScenes);
  EXPECT_NEAR(wide_after, 0.6 * kScenes, 0.08 * kScenes);
  EXPECT_NEAR(kept, 0.6 * kScenes, 0.08 * kScenes);
  scenes::Scene tall;
  tall.width = 300;
  tall.height = 750;
  EXPECT_DOUBLE_EQ(scenes::SceneAspect(tall), 2.5);
  std::swap(tall.width, tall.height);
  EXPECT_DOUBLE_EQ(scenes::SceneAspect(tall), 2.5);
}

// --focus-coverage gives the focus loss shares to match: without the
// spread loss (or any focus loss) there is nothing to match them.
TEST(TrainerTest, FocusCoverageNeedsTheSpreadLoss) {
  TrainOptions o = SmallRun("focus_coverage");
  o.examples.focus_coverage = true;
  EXPECT_FALSE(Trainer::Create(o).ok());
  o.loss.focus_weight = 1;
  EXPECT_FALSE(Trainer::Create(o).ok());
  o.loss.focus_spread = true;
  absl::StatusOr<std::unique_ptr<Trainer>> t = Trainer::Create(o);
  ASSERT_TRUE(t.ok()) << t.status();
  absl::StatusOr<StepStats> step = (*t)->Step();
  ASSERT_TRUE(step.ok()) << step.status();
  EXPECT_TRUE(std::isfinite(step->parts.focus));
  EXPECT_GT(step->parts.focus, 0);
}

// --answered-weight: its head is in the layer before the last, and its
// loss reaches the step (a fresh model attends evenly, so it is large).
TEST(TrainerTest, AnsweredLossNeedsTwoLayersAndTrains) {
  TrainOptions o = SmallRun("answered");
  o.loss.answered_weight = -1;
  EXPECT_FALSE(Trainer::Create(o).ok());
  o.loss.answered_weight = 1;
  TrainOptions one_layer = o;
  one_layer.config.text.n_layers = 1;
  EXPECT_FALSE(Trainer::Create(one_layer).ok());
  ASSERT_GE(o.config.text.n_layers, 2);
  o.sequences_per_scene = 0;  // every question: some ask for two shapes
  o.max_shapes = 4;
  absl::StatusOr<std::unique_ptr<Trainer>> t = Trainer::Create(o);
  ASSERT_TRUE(t.ok()) << t.status();
  absl::StatusOr<StepStats> step = (*t)->Step();
  ASSERT_TRUE(step.ok()) << step.status();
  EXPECT_GT(step->parts.n_answered, 0);
  EXPECT_TRUE(std::isfinite(step->parts.answered));
  EXPECT_GT(step->parts.answered, 0.5);
}

// --several-repeats: 1 to 8 (0 would drop the questions); the held-out
// loss asks every question once whatever the training repeats, so stages
// with and without compare.
TEST(TrainerTest, SeveralRepeatsTrainOnlyAndInRange) {
  TrainOptions o = SmallRun("several_repeats");
  for (int bad : {0, 9}) {
    o.examples.several_repeats = bad;
    EXPECT_FALSE(Trainer::Create(o).ok()) << bad;
  }
  absl::StatusOr<std::unique_ptr<Trainer>> once =
      Trainer::Create(SmallRun("several_once"));
  TrainOptions three = SmallRun("several_thrice");
  three.examples.several_repeats = 3;
  absl::StatusOr<std::unique_ptr<Trainer>> thrice = Trainer::Create(three);
  ASSERT_TRUE(once.ok()) << once.status();
  ASSERT_TRUE(thrice.ok()) << thrice.status();
  absl::StatusOr<double> a = (*once)->HeldOutLoss(7000000, 2);
  absl::StatusOr<double> b = (*thrice)->HeldOutLoss(7000000, 2);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(*a, *b);
  absl::StatusOr<StepStats> step = (*thrice)->Step();
  ASSERT_TRUE(step.ok()) << step.status();
  EXPECT_TRUE(std::isfinite(step->loss));
}

// --vision-only: steps lower the patch-kind loss by changing the vision
// tower, projection and probe only; the text decoder and region head keep
// their bits. Without a patch-kind loss there is nothing to train.
TEST(TrainerTest, VisionOnlyTrainsTheTowerAlone) {
  TrainOptions o = SmallRun("vision_only");
  o.vision_only = true;
  EXPECT_FALSE(Trainer::Create(o).ok());
  o.loss.patch_kind_weight = 1;
  o.loss.patch_box_weight = 1;
  o.loss.patch_extent_weight = 1;
  o.loss.patch_colour_weight = 1;
  o.vision_only_max_side = -1;
  EXPECT_FALSE(Trainer::Create(o).ok());
  o.vision_only_max_side = 0;
  o.vision_lr_scale = 0;  // a frozen tower alone would train nothing
  EXPECT_FALSE(Trainer::Create(o).ok());
  o.vision_lr_scale = 1;
  o.scene_cycle = 1;
  absl::StatusOr<std::unique_ptr<Trainer>> t = Trainer::Create(o);
  ASSERT_TRUE(t.ok()) << t.status();
  const Weights before = (*t)->weights();
  const at::Tensor wte = before.text.wte.detach().clone();
  const at::Tensor region =
      before.region.coord_decoder.fc2.weight.detach().clone();
  const at::Tensor patch_emb = before.vision.patch_emb.weight.detach().clone();
  const at::Tensor proj = before.vision.proj_mlp.fc2.weight.detach().clone();

  const std::vector<double> losses = Losses(**t, 8);
  std::printf("vision-only losses: %.4f .. %.4f\n", losses.front(),
              losses.back());
  EXPECT_LT(losses.back(), 0.8 * losses.front());
  const Weights after = (*t)->weights();
  EXPECT_TRUE(at::equal(after.text.wte, wte));
  EXPECT_TRUE(at::equal(after.region.coord_decoder.fc2.weight, region));
  EXPECT_FALSE(at::equal(after.vision.patch_emb.weight, patch_emb));
  EXPECT_FALSE(at::equal(after.vision.proj_mlp.fc2.weight, proj));

  absl::StatusOr<PatchProbeEval> eval = (*t)->HeldOutPatchProbes(7, 2);
  ASSERT_TRUE(eval.ok()) << eval.status();
  EXPECT_GT(eval->kind_loss, 0);
  EXPECT_GT(eval->box_loss, 0);
  EXPECT_GT(eval->extent_loss, 0);
  EXPECT_GT(eval->colour_loss, 0);
  EXPECT_GE(eval->shape_cell_accuracy, 0);
  EXPECT_LE(eval->shape_cell_accuracy, 1);
  EXPECT_GE(eval->colour_cell_accuracy, 0);
  EXPECT_LE(eval->colour_cell_accuracy, 1);

  // A fresh full run takes the trained tower and nothing else from it.
  ASSERT_TRUE((*t)->SaveCheckpoint().ok());
  TrainOptions full = SmallRun("vision_init");
  full.init_vision_from = (*t)->checkpoint_path();
  full.loss.patch_kind_weight = 1;
  full.loss.patch_box_weight = 1;
  full.loss.patch_colour_weight = 1;
  full.vision_lr_scale = 0;  // frozen: full steps keep the tower
  absl::StatusOr<std::unique_ptr<Trainer>> f = Trainer::Create(full);
  ASSERT_TRUE(f.ok()) << f.status();
  const Weights started = (*f)->weights();
  EXPECT_TRUE(at::equal(started.vision.patch_emb.weight,
                        after.vision.patch_emb.weight));
  EXPECT_TRUE(at::equal(started.vision.proj_mlp.fc2.weight,
                        after.vision.proj_mlp.fc2.weight));
  EXPECT_TRUE(at::equal(started.text.wte, wte));
  EXPECT_EQ((*f)->step(), 0);
  absl::StatusOr<PatchProbeEval> same = (*f)->HeldOutPatchProbes(7, 2);
  ASSERT_TRUE(same.ok()) << same.status();
  EXPECT_EQ(same->kind_loss, eval->kind_loss);  // the probes came along too
  EXPECT_EQ(same->box_loss, eval->box_loss);
  EXPECT_EQ(same->colour_loss, eval->colour_loss);
  Losses(**f, 1);
  EXPECT_TRUE(at::equal((*f)->weights().vision.patch_emb.weight,
                        after.vision.patch_emb.weight));
  EXPECT_FALSE(at::equal((*f)->weights().text.wte, wte));

  // A tower of another shape is refused.
  TrainOptions other = SmallRun("vision_init_other");
  other.init_vision_from = (*t)->checkpoint_path();
  other.config.vision.enc_dim *= 2;
  EXPECT_FALSE(Trainer::Create(other).ok());
}

// PatchBoxes: the square's box (centre 49/378, side 42/378) on the cells it
// covers, zeros elsewhere; a probe that reads it exactly scores 0, one that
// always answers 0.5 scores 12 × the mean squared distance to it.
TEST(TrainForwardTest, PatchBoxesAndTheirLoss) {
  const scenes::Scene scene =
      SceneOf({Square(28, 28, 42, scenes::Colour::kRed)});
  const std::vector<int> kinds = PatchKinds(scene, 27);
  const std::vector<PatchBox> boxes = PatchBoxes(scene, 27);
  ASSERT_EQ(boxes.size(), 729u);
  const std::array<float, 4> box = {49 / 378.0f, 49 / 378.0f, 42 / 378.0f,
                                    42 / 378.0f};
  for (int i = 0; i < 729; ++i) {
    const std::array<float, 4> want =
        kinds[i] != 0 ? box : std::array<float, 4>{0, 0, 0, 0};
    for (int k = 0; k < 4; ++k) {
      EXPECT_FLOAT_EQ(boxes[i].cx_cy_w_h[k], want[k]) << i << " " << k;
    }
  }

  // Image tokens that hold their cell's box in channels 0..3.
  at::Tensor image_PC = at::zeros({729, 6});
  for (int i = 0; i < 729; ++i) {
    for (int k = 0; k < 4; ++k) image_PC[i][k] = boxes[i].cx_cy_w_h[k];
  }
  LinearWeights reader;
  reader.weight = at::eye(4, 6);
  reader.bias = at::zeros({4});
  EXPECT_LT(PatchBoxLoss(image_PC, kinds, boxes, reader).item<double>(), 1e-12);
  LinearWeights half;
  half.weight = at::zeros({4, 6});
  half.bias = at::full({4}, 0.5);
  double squared = 0;
  for (float v : box) squared += (v - 0.5) * (v - 0.5);
  EXPECT_NEAR(PatchBoxLoss(image_PC, kinds, boxes, half).item<double>(),
              12 * squared / 4, 1e-5);
  // No shape, no loss.
  EXPECT_EQ(PatchBoxLoss(image_PC, std::vector<int>(729, 0), boxes, half)
                .item<double>(),
            0.0);
}

// --stop-weight scales the stop rows' share of the mean loss, nothing else.
TEST(TrainForwardTest, StopWeightScalesTheStopRows) {
  TrainOptions o = SmallRun("stop_weight");
  absl::StatusOr<std::unique_ptr<Trainer>> t = Trainer::Create(o);
  ASSERT_TRUE(t.ok()) << t.status();
  const RegionTruth box = {0.25, 0.5, 0.2, 0.3, {}};
  const Sequence detect = RegionSequence(scenes::TaskKind::kDetect, {10, 11},
                                         {&box, 1}, 2, 1024, 1024);
  const at::Tensor rows_BTC = at::randn(
      {1, static_cast<int64_t>(detect.rows.size()), o.config.text.dim});
  LossOptions one, three;
  three.stop_weight = 3;
  const auto a =
      SequenceLosses(rows_BTC, {&detect, 1}, (*t)->weights(), o.config, one);
  const auto b =
      SequenceLosses(rows_BTC, {&detect, 1}, (*t)->weights(), o.config, three);
  ASSERT_EQ(a.n_stop, 2);
  EXPECT_EQ(a.stop, b.stop);  // reported unweighted
  const int entries = a.n_token + a.n_stop + a.n_coordinate + a.n_size;
  EXPECT_NEAR(b.total.item<double>() - a.total.item<double>(),
              2 * a.stop * a.n_stop / entries, 1e-5);
}

// HeadInput with centre_gradient: the rows' values unchanged, the gradient
// that reaches them less its mean over the rows (so it sums to zero), and
// without it the plain gradient.
TEST(TrainForwardTest, CentreGradientRemovesTheRowsCommonPush) {
  const at::Tensor rows_NC = at::randn({5, 4}).requires_grad_(true);
  const at::Tensor push_NC = at::randn({5, 4}) + 3;  // a common part too
  LossOptions on;
  on.centre_gradient = true;
  const at::Tensor centred = HeadInput(rows_NC, on);
  EXPECT_TRUE(at::equal(centred.detach(), rows_NC.detach()));
  (centred * push_NC).sum().backward();
  const at::Tensor grad_NC = rows_NC.grad().clone();
  EXPECT_TRUE(at::allclose(grad_NC, push_NC - push_NC.mean(0), 1e-5, 1e-6));
  EXPECT_LT(grad_NC.sum(0).abs().max().item<double>(), 1e-5);
  rows_NC.grad().zero_();
  (HeadInput(rows_NC, LossOptions()) * push_NC).sum().backward();
  EXPECT_TRUE(at::equal(rows_NC.grad(), push_NC));
}

// The row-norm penalty: max(0, log(rms / limit)) per target row, its mean
// reported (and the largest rms) whether or not it is weighted, and added to
// the total × its weight.
TEST(TrainForwardTest, RowNormPenalisesOnlyRowsAboveTheLimit) {
  TrainOptions o = SmallRun("row_norm");
  absl::StatusOr<std::unique_ptr<Trainer>> t = Trainer::Create(o);
  ASSERT_TRUE(t.ok()) << t.status();
  // Prompt rows 0, 1; the answer's row 1 (target 17) and row 2 (eos).
  const Sequence seq =
      TextSequence(scenes::TaskKind::kCount, {10, 11}, {17}, 2);
  const int64_t c = o.config.text.dim;
  at::Tensor rows_BTC = at::ones({1, 3, c});
  rows_BTC[0][0].fill_(1000);    // a prompt row: not a target, not penalised
  rows_BTC[0][2].fill_(8 * 24);  // rms 192 = 8 × the limit
  LossOptions off, on;
  on.row_norm_weight = 2;
  const auto a =
      SequenceLosses(rows_BTC, {&seq, 1}, (*t)->weights(), o.config, off);
  const auto b =
      SequenceLosses(rows_BTC, {&seq, 1}, (*t)->weights(), o.config, on);
  EXPECT_NEAR(a.row_norm, std::log(8.0) / 2, 1e-5);  // rows 1 and 2
  EXPECT_NEAR(a.row_rms_max, 192, 1e-3);
  EXPECT_EQ(a.row_norm, b.row_norm);
  EXPECT_NEAR(b.total.item<double>() - a.total.item<double>(),
              2 * std::log(8.0) / 2, 1e-4);
}

// A row that goes on must make some token other than eos the argmax, as
// the skills decide by the greedy token: one whose eos is the single most
// likely token scores badly even when the other tokens together outweigh
// it; one that favours kGoOnToken scores well.
TEST(TrainForwardTest, StopRowsAreTrainedTowardOneGoOnToken) {
  const int vocab = 64, eos = 2;
  // Row 0: eos 0.3, the rest spread evenly (together 0.7).
  at::Tensor spread_V = at::full({vocab}, std::log(0.7 / (vocab - 1)));
  spread_V[eos] = std::log(0.3);
  // Row 1: kGoOnToken 0.9.
  at::Tensor go_on_V = at::full({vocab}, std::log(0.1 / (vocab - 1)));
  go_on_V[kGoOnToken] = std::log(0.9);
  const at::Tensor logits_NV = at::stack({spread_V, go_on_V});
  ASSERT_EQ(logits_NV[0].argmax().item<int64_t>(), eos);

  const std::vector<uint8_t> go_on = {0, 0};
  const at::Tensor nll_N = StopNll(logits_NV, go_on, eos);
  EXPECT_NEAR(nll_N[0].item<double>(), -std::log(0.7 / (vocab - 1)), 1e-5);
  EXPECT_NEAR(nll_N[1].item<double>(), -std::log(0.9), 1e-5);
  // Balanced: one eos row among three weighs as much as the two others.
  const std::vector<uint8_t> mixed = {1, 0, 0};
  const at::Tensor balanced =
      BalanceStops(at::tensor({1.0f, 2.0f, 4.0f}), mixed);
  EXPECT_NEAR(balanced.mean().item<double>(), 0.5 * 1.0 + 0.5 * 3.0, 1e-6);
  const std::vector<uint8_t> stop = {1, 1};
  EXPECT_NEAR(StopNll(logits_NV, stop, eos)[0].item<double>(), -std::log(0.3),
              1e-5);
}

// HeldOutR2: ~1 for a linear signal (even on features of very different
// scales), ~0 for none.
TEST(TrainerTest, HeldOutR2ReadsALinearSignalAndNothingElse) {
  at::manual_seed(3);
  // 2,000 fitted rows: fitting noise with 32 features scores ~ −32/2000.
  at::Tensor x_NF = at::randn({4000, 32}, at::kDouble);
  x_NF.select(1, 5).mul_(1e4);  // a loud direction
  const at::Tensor w_F = at::randn({32}, at::kDouble);
  const at::Tensor signal_N = at::matmul(x_NF / x_NF.std(0), w_F);
  EXPECT_GT(HeldOutR2(x_NF, signal_N + 0.01 * at::randn({4000})), 0.99);
  const double none = HeldOutR2(x_NF, at::randn({4000}, at::kDouble));
  EXPECT_LT(std::abs(none), 0.05);
  EXPECT_EQ(HeldOutR2(x_NF.narrow(0, 0, 10), signal_N.narrow(0, 0, 10)), 0);
}

// FourierBins: row b is cos/sin of the bin's phase at each cycle count.
TEST(TrainerTest, FourierBinsAreAFourierBasisOverTheBins) {
  const at::Tensor basis = FourierBins(1024, 10);
  ASSERT_EQ(basis.sizes(), (at::IntArrayRef{1024, 10}));
  // 5 cycle counts, geometric from 1/2 to 1024/16 = 64.
  const double cycles[] = {0.5, 0.5 * std::pow(128.0, 0.25),
                           0.5 * std::pow(128.0, 0.5),
                           0.5 * std::pow(128.0, 0.75), 64.0};
  for (int64_t bin : {0, 1, 300, 1023}) {
    for (int k = 0; k < 5; ++k) {
      const double phase = 2 * M_PI * cycles[k] * bin / 1024;
      EXPECT_NEAR(basis[bin][2 * k].item<double>(), std::cos(phase), 1e-5);
      EXPECT_NEAR(basis[bin][2 * k + 1].item<double>(), std::sin(phase), 1e-5);
    }
  }
}

// MimeticAttention: with one head the query-key product is 0.7·(Z + I) and
// the value-output product 0.4·(Z − I), Z noise of variance 1/dim; with
// more heads each head keeps a low-rank part of its own such target.
TEST(TrainerTest, MimeticAttentionStartsNearIdentity) {
  const int64_t dim = 64;
  at::Generator gen = at::detail::createCPUGenerator(5);
  for (int64_t heads : {1, 2}) {
    SCOPED_TRACE(heads);
    const MimeticWeights m = MimeticAttention(dim, heads, gen);
    ASSERT_EQ(m.qkv_weight.sizes(), (at::IntArrayRef{3 * dim, dim}));
    ASSERT_EQ(m.proj_weight.sizes(), (at::IntArrayRef{dim, dim}));
    const int64_t hd = dim / heads;
    for (int64_t h = 0; h < heads; ++h) {
      const at::Tensor wq = m.qkv_weight.narrow(0, h * hd, hd);
      const at::Tensor wk = m.qkv_weight.narrow(0, dim + h * hd, hd);
      const at::Tensor wv = m.qkv_weight.narrow(0, 2 * dim + h * hd, hd);
      const at::Tensor wo = m.proj_weight.narrow(1, h * hd, hd);
      const at::Tensor qk = wq.t().matmul(wk), vo = wo.matmul(wv);
      const double qk_diag = qk.diagonal().mean().item<double>();
      const double vo_diag = vo.diagonal().mean().item<double>();
      if (heads == 1) {
        EXPECT_NEAR(qk_diag, kMimeticQk, 0.08);
        EXPECT_NEAR(vo_diag, -kMimeticVo, 0.05);
        const at::Tensor noise = qk - kMimeticQk * at::eye(dim);
        const double noise_std =
            (noise - at::diag(noise.diagonal())).std().item<double>();
        EXPECT_NEAR(noise_std, kMimeticQk / 8, 0.02);  // 0.7 / sqrt(64)
      } else {
        EXPECT_GT(qk_diag, 0.2);
        EXPECT_LT(vo_diag, -0.1);
      }
    }
  }
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

// A curriculum may switch a probe on at a resume: the model's weights come
// from the checkpoint, the new probe starts fresh, and the run goes on.
TEST(TrainerTest, AResumeMaySwitchOnAProbe) {
  TrainOptions o = SmallRun("resume_probe");
  absl::StatusOr<std::unique_ptr<Trainer>> a = Trainer::Create(o);
  ASSERT_TRUE(a.ok()) << a.status();
  Losses(**a, 2);
  ASSERT_TRUE((*a)->SaveCheckpoint().ok());

  o.resume = true;
  o.loss.focus_weight = 1;
  o.loss.position_weight = 1;
  absl::StatusOr<std::unique_ptr<Trainer>> b = Trainer::Create(o);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ((*b)->step(), 2);
  const Weights before = (*a)->weights(), after = (*b)->weights();
  EXPECT_TRUE(at::equal(before.region.coord_decoder.fc2.weight,
                        after.region.coord_decoder.fc2.weight));
  EXPECT_TRUE(at::equal(before.text.blocks[0].attn.qkv.weight,
                        after.text.blocks[0].attn.qkv.weight));
  absl::StatusOr<StepStats> next = (*b)->Step();
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_GT(next->parts.position, 0);
}

// --reinit: the named parameters start from the values a fresh run starts
// from, every other one from the checkpoint, and training goes on.
TEST(TrainerTest, AResumeMayReinitialiseNamedParameters) {
  TrainOptions o = SmallRun("resume_reinit");
  absl::StatusOr<std::unique_ptr<Trainer>> fresh = Trainer::Create(o);
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  const at::Tensor initial_fc1 =
      (*fresh)->weights().text.blocks.back().mlp.fc1.weight.clone();
  Losses(**fresh, 2);
  ASSERT_TRUE((*fresh)->SaveCheckpoint().ok());
  const Weights trained = (*fresh)->weights();
  ASSERT_FALSE(
      at::equal(trained.text.blocks.back().mlp.fc1.weight, initial_fc1));

  o.resume = true;
  o.reinit_prefixes = {"model.text.blocks." +
                       std::to_string(o.config.text.n_layers - 1) + ".mlp"};
  absl::StatusOr<std::unique_ptr<Trainer>> b = Trainer::Create(o);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ((*b)->step(), 2);
  const Weights after = (*b)->weights();
  EXPECT_TRUE(at::equal(after.text.blocks.back().mlp.fc1.weight, initial_fc1));
  EXPECT_TRUE(at::equal(after.text.blocks.back().attn.qkv.weight,
                        trained.text.blocks.back().attn.qkv.weight));
  EXPECT_TRUE(at::equal(after.text.blocks[0].mlp.fc1.weight,
                        trained.text.blocks[0].mlp.fc1.weight));
  absl::StatusOr<StepStats> next = (*b)->Step();
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_TRUE(std::isfinite(next->loss));
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

// With the region head centred (its running mean folded into fc1's bias)
// and the focus, position, head-patch, prefix-rank, row-box, row-extent and
// row-centre losses (and the readout diagnostic) on, a resumed run still takes
// the same steps, and the written model is the one the trainer scores.
TEST(TrainerTest, CentredHeadAndFocusLossesResumeAndWriteExactly) {
  TrainOptions o = SmallRun("centred");
  o.center_region_head = true;
  o.fourier_bins = true;
  o.loss.focus_weight = 1;
  o.loss.position_weight = 1;
  o.loss.head_patch_weight = 1;
  o.loss.prefix_rank_weight = 1;
  o.loss.row_box_weight = 1;
  o.loss.row_extent_weight = 1;
  o.loss.row_centre_weight = 1;
  o.readout_probe = true;
  absl::StatusOr<std::unique_ptr<Trainer>> a = Trainer::Create(o);
  ASSERT_TRUE(a.ok()) << a.status();
  absl::StatusOr<StepStats> first = (*a)->Step();
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_GT(first->parts.head_patch, 0);
  EXPECT_GT(first->parts.prefix_rank, 0);
  EXPECT_GT(first->parts.row_box, 0);
  EXPECT_GT(first->parts.row_extent, 0);
  EXPECT_GT(first->parts.row_centre, 0);
  Losses(**a, 1);
  ASSERT_TRUE((*a)->SaveCheckpoint().ok());
  const std::vector<double> uninterrupted = Losses(**a, 2);
  o.resume = true;
  absl::StatusOr<std::unique_ptr<Trainer>> b = Trainer::Create(o);
  ASSERT_TRUE(b.ok()) << b.status();
  ExpectSameLosses(uninterrupted, Losses(**b, 2));

  ASSERT_TRUE((*b)->WriteModelDirectory((*b)->model_dir()).ok());
  absl::StatusOr<std::unique_ptr<Model>> loaded =
      Model::Load((*b)->model_dir(), Moondream2Config(), {});
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const Weights served = (*b)->weights();
  const at::Tensor hidden_NC = at::randn({5, o.config.text.dim});
  EXPECT_TRUE(
      at::equal(DecodeCoordinate(hidden_NC, served.region).detach(),
                DecodeCoordinate(hidden_NC, (*loaded)->weights().region)));
  EXPECT_TRUE(at::equal(DecodeSize(hidden_NC, served.region).detach(),
                        DecodeSize(hidden_NC, (*loaded)->weights().region)));
}

// The "step" a written model directory's weights carry in their metadata.
std::string WrittenStep(const std::string& model_dir) {
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file =
      SafetensorsFile::Open(model_dir + "/model.safetensors");
  if (!file.ok()) return file.status().ToString();
  const auto step = (*file)->metadata().find("step");
  return step == (*file)->metadata().end() ? "none" : step->second;
}

// A trainer of `o` that ran no step and wrote its model directory (nullptr,
// with a test failure, when it cannot).
std::unique_ptr<Trainer> WrittenModel(TrainOptions o) {
  o.steps = 0;
  absl::StatusOr<std::unique_ptr<Trainer>> t = Trainer::Create(o);
  EXPECT_TRUE(t.ok()) << t.status();
  if (!t.ok() || !(*t)->Run().ok()) return nullptr;
  EXPECT_TRUE(std::filesystem::exists((*t)->model_dir()));
  return std::move(*t);
}

// A vision-only stage writes a model directory only when it started from
// one: then the directory holds its tower on the decoder it started from,
// unchanged; from scratch the decoder is noise and nothing is written.
TEST(TrainerTest, AVisionOnlyStageFromAModelWritesItsDirectory) {
  TrainOptions o = SmallRun("vision_only_source");
  const std::unique_ptr<Trainer> source = WrittenModel(o);
  ASSERT_NE(source, nullptr);

  TrainOptions v = SmallRun("vision_only_from_model");
  v.vision_only = true;
  v.loss.patch_kind_weight = 1;
  v.steps = 2;
  TrainOptions scratch = v;
  scratch.out_dir += "_scratch";
  std::filesystem::remove_all(scratch.out_dir);
  absl::StatusOr<std::unique_ptr<Trainer>> from_scratch =
      Trainer::Create(scratch);
  ASSERT_TRUE(from_scratch.ok()) << from_scratch.status();
  EXPECT_FALSE((*from_scratch)->WritesModelDirectory());
  ASSERT_TRUE((*from_scratch)->Run().ok());
  EXPECT_FALSE(std::filesystem::exists((*from_scratch)->model_dir()));

  v.init_from = source->model_dir();
  absl::StatusOr<std::unique_ptr<Trainer>> t = Trainer::Create(v);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_TRUE((*t)->WritesModelDirectory());
  ASSERT_TRUE((*t)->Run().ok());
  absl::StatusOr<std::unique_ptr<Model>> written =
      Model::Load((*t)->model_dir(), Moondream2Config(), {});
  ASSERT_TRUE(written.ok()) << written.status();
  const Weights& before = source->weights();
  const Weights& after = (*written)->weights();
  EXPECT_TRUE(at::equal(after.text.wte, before.text.wte));
  EXPECT_TRUE(at::equal(after.region.coord_decoder.fc2.weight,
                        before.region.coord_decoder.fc2.weight));
  EXPECT_FALSE(
      at::equal(after.vision.patch_emb.weight, before.vision.patch_emb.weight));
  // Its start-up banner says the decoder cannot read the new tower yet.
  absl::StatusOr<ModelBundle> bundle =
      LoadModelBundle((*t)->model_dir(), "moondream2", {});
  ASSERT_TRUE(bundle.ok()) << bundle.status();
  EXPECT_NE(bundle->demo_description.find("vision-only training stage"),
            std::string::npos)
      << bundle->demo_description;
  EXPECT_NE(bundle->demo_description.find("meaningless"), std::string::npos);
}

// --grow-vision: a model with fewer vision layers starts a deeper tower
// that computes exactly what it did (the appended blocks add nothing);
// without the flag, or when anything but the vision layers differs, or to
// shrink, it is an error.
TEST(TrainerTest, GrowVisionAppendsBlocksThatAddNothing) {
  const TrainOptions o = SmallRun("grow_source");
  const std::unique_ptr<Trainer> source = WrittenModel(o);
  ASSERT_NE(source, nullptr);

  TrainOptions g = SmallRun("grow");
  g.config.vision.enc_n_layers = 4;
  g.init_from = source->model_dir();
  EXPECT_FALSE(Trainer::Create(g).ok());  // the shapes differ
  g.grow_vision = true;
  absl::StatusOr<std::unique_ptr<Trainer>> grown = Trainer::Create(g);
  ASSERT_TRUE(grown.ok()) << grown.status();
  const Weights& before = source->weights();
  const Weights& after = (*grown)->weights();
  ASSERT_EQ(after.vision.blocks.size(), 4u);
  EXPECT_TRUE(at::equal(after.vision.blocks[1].attn.qkv.weight,
                        before.vision.blocks[1].attn.qkv.weight));
  for (int layer : {2, 3}) {
    const VisionBlockWeights& b = after.vision.blocks[layer];
    EXPECT_EQ(b.attn.proj.weight.abs().max().item<float>(), 0);
    EXPECT_EQ(b.mlp.fc2.bias.abs().max().item<float>(), 0);
    EXPECT_GT(b.attn.qkv.weight.abs().max().item<float>(), 0);  // fresh
  }
  const scenes::Scene scene = scenes::GenerateScene(scenes::SceneSeed(77, 0));
  absl::StatusOr<ImageCrops> crops = SceneCrops(scene, o.config.vision);
  ASSERT_TRUE(crops.ok()) << crops.status();
  at::NoGradGuard no_grad;
  EXPECT_TRUE(at::equal(ImageEmbedding(*crops, after, g.config.vision),
                        ImageEmbedding(*crops, before, o.config.vision)));

  TrainOptions other = g;
  other.config.text.n_layers = 3;
  absl::StatusOr<std::unique_ptr<Trainer>> mismatch = Trainer::Create(other);
  ASSERT_FALSE(mismatch.ok());
  EXPECT_NE(mismatch.status().message().find("vision layers alone"),
            std::string::npos)
      << mismatch.status();
  TrainOptions shrink = g;
  shrink.config.vision.enc_n_layers = 1;
  absl::StatusOr<std::unique_ptr<Trainer>> smaller = Trainer::Create(shrink);
  ASSERT_FALSE(smaller.ok());
  EXPECT_NE(smaller.status().message().find("only grows"), std::string::npos)
      << smaller.status();
}

// --grow-text: a model with fewer text layers starts a deeper decoder that
// computes exactly what it did. The source's last layer stays last (the
// focus losses and the region head read it); the inserted blocks before it
// add nothing; a decoder does not shrink.
TEST(TrainerTest, GrowTextInsertsBlocksBeforeTheLast) {
  const TrainOptions o = SmallRun("grow_text_source");
  const std::unique_ptr<Trainer> source = WrittenModel(o);
  ASSERT_NE(source, nullptr);
  absl::StatusOr<double> source_loss = source->HeldOutLoss(11, 2);
  ASSERT_TRUE(source_loss.ok()) << source_loss.status();

  const int layers = o.config.text.n_layers;
  TrainOptions g = SmallRun("grow_text");
  g.config.text.n_layers = layers + 2;
  g.init_from = source->model_dir();
  EXPECT_FALSE(Trainer::Create(g).ok());  // the shapes differ
  g.grow_text = true;
  absl::StatusOr<std::unique_ptr<Trainer>> grown = Trainer::Create(g);
  ASSERT_TRUE(grown.ok()) << grown.status();
  const Weights& before = source->weights();
  const Weights& after = (*grown)->weights();
  ASSERT_EQ(after.text.blocks.size(), static_cast<size_t>(layers + 2));
  for (int layer = 0; layer + 1 < layers; ++layer) {
    EXPECT_TRUE(at::equal(after.text.blocks[layer].attn.qkv.weight,
                          before.text.blocks[layer].attn.qkv.weight));
  }
  EXPECT_TRUE(at::equal(after.text.blocks.back().mlp.fc2.weight,
                        before.text.blocks.back().mlp.fc2.weight));
  for (int layer : {layers - 1, layers}) {
    const TextBlockWeights& b = after.text.blocks[layer];
    EXPECT_EQ(b.attn.proj.weight.abs().max().item<float>(), 0);
    EXPECT_EQ(b.mlp.fc2.bias.abs().max().item<float>(), 0);
    EXPECT_GT(b.attn.qkv.weight.abs().max().item<float>(), 0);  // fresh
  }
  absl::StatusOr<double> grown_loss = (*grown)->HeldOutLoss(11, 2);
  ASSERT_TRUE(grown_loss.ok()) << grown_loss.status();
  EXPECT_EQ(*grown_loss, *source_loss);

  TrainOptions shrink = g;
  shrink.config.text.n_layers = layers - 1;
  absl::StatusOr<std::unique_ptr<Trainer>> smaller = Trainer::Create(shrink);
  ASSERT_FALSE(smaller.ok());
  EXPECT_NE(smaller.status().message().find("only grows"), std::string::npos)
      << smaller.status();
}

// A fresh decoder of another shape on a written model's tower: the tower
// and projection come from the directory, every other weight is the fresh
// run's own.
TEST(TrainerTest, AFreshDecoderMayStartOnAWrittenModelsTower) {
  TrainOptions o = SmallRun("tower_source");
  o.seed += 17;  // a tower unlike the fresh run's own
  const std::unique_ptr<Trainer> source = WrittenModel(o);
  ASSERT_NE(source, nullptr);

  TrainOptions d = SmallRun("tower_decoder");
  d.config.text.n_layers = o.config.text.n_layers + 2;
  absl::StatusOr<std::unique_ptr<Trainer>> fresh = Trainer::Create(d);
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  d.out_dir += "_init";
  d.init_vision_from = source->model_dir();
  absl::StatusOr<std::unique_ptr<Trainer>> on_tower = Trainer::Create(d);
  ASSERT_TRUE(on_tower.ok()) << on_tower.status();
  const Weights& tower = source->weights();
  const Weights& got = (*on_tower)->weights();
  EXPECT_TRUE(
      at::equal(got.vision.patch_emb.weight, tower.vision.patch_emb.weight));
  EXPECT_TRUE(at::equal(got.vision.blocks.back().mlp.fc2.weight,
                        tower.vision.blocks.back().mlp.fc2.weight));
  EXPECT_TRUE(at::equal(got.vision.proj_mlp.fc2.weight,
                        tower.vision.proj_mlp.fc2.weight));
  EXPECT_FALSE(at::equal(got.vision.patch_emb.weight,
                         (*fresh)->weights().vision.patch_emb.weight));
  EXPECT_TRUE(at::equal(got.text.wte, (*fresh)->weights().text.wte));
  EXPECT_TRUE(at::equal(got.region.coord_decoder.fc2.weight,
                        (*fresh)->weights().region.coord_decoder.fc2.weight));
  EXPECT_EQ((*on_tower)->step(), 0);

  TrainOptions other = SmallRun("tower_other");
  other.init_vision_from = source->model_dir();
  other.config.vision.enc_dim *= 2;
  absl::StatusOr<std::unique_ptr<Trainer>> refused = Trainer::Create(other);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("vision config"), std::string::npos)
      << refused.status();

  // So is a tower with fewer layers, which would leave ours half random.
  TrainOptions deeper = SmallRun("tower_deeper");
  deeper.init_vision_from = source->model_dir();
  deeper.config.vision.enc_n_layers += 1;
  absl::StatusOr<std::unique_ptr<Trainer>> partial = Trainer::Create(deeper);
  ASSERT_FALSE(partial.ok());
  EXPECT_NE(partial.status().message().find("vision config"), std::string::npos)
      << partial.status();
}

// A new stage on a written model (its checkpoint gone): every weight comes
// from the directory, and the served function does not jump when the first
// step measures the region rows' mean the directory's heads have folded in.
TEST(TrainerTest, AFreshRunMayStartFromAWrittenModel) {
  TrainOptions o = SmallRun("init_from_source");
  o.center_region_head = true;
  absl::StatusOr<std::unique_ptr<Trainer>> a = Trainer::Create(o);
  ASSERT_TRUE(a.ok()) << a.status();
  Losses(**a, 3);
  ASSERT_TRUE((*a)->WriteModelDirectory((*a)->model_dir()).ok());
  absl::StatusOr<double> a_loss = (*a)->HeldOutLoss(11, 2);
  ASSERT_TRUE(a_loss.ok()) << a_loss.status();

  TrainOptions next = SmallRun("init_from");
  next.center_region_head = true;
  next.init_from = (*a)->model_dir();
  next.learning_rate = 1e-12;  // a step that measures the mean, moves nothing
  absl::StatusOr<std::unique_ptr<Trainer>> b = Trainer::Create(next);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ((*b)->step(), 0);
  const auto want = NamedParameters(o.config, (*a)->weights());
  const auto got = NamedParameters(o.config, (*b)->weights());
  ASSERT_EQ(want.size(), got.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_TRUE(at::equal(want[i].second.detach(), got[i].second.detach()))
        << want[i].first;
  }
  absl::StatusOr<double> b_loss = (*b)->HeldOutLoss(11, 2);
  ASSERT_TRUE(b_loss.ok()) << b_loss.status();
  EXPECT_EQ(*b_loss, *a_loss);
  Losses(**b, 1);
  absl::StatusOr<double> stepped = (*b)->HeldOutLoss(11, 2);
  ASSERT_TRUE(stepped.ok()) << stepped.status();
  EXPECT_NEAR(*stepped, *a_loss, 1e-4 * *a_loss);

  // The written model counts the source's 3 steps and this stage's; so does
  // a resume of this stage.
  ASSERT_TRUE((*b)->WriteModelDirectory((*b)->model_dir()).ok());
  EXPECT_EQ(WrittenStep((*b)->model_dir()), "4");
  ASSERT_TRUE((*b)->SaveCheckpoint().ok());
  next.resume = true;
  absl::StatusOr<std::unique_ptr<Trainer>> resumed = Trainer::Create(next);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  ASSERT_TRUE((*resumed)->WriteModelDirectory((*resumed)->model_dir()).ok());
  EXPECT_EQ(WrittenStep((*resumed)->model_dir()), "4");

  // Another model shape is refused, naming the tensor.
  TrainOptions other = SmallRun("init_from_other");
  other.init_from = (*a)->model_dir();
  other.config.region.inner_dim *= 2;
  absl::StatusOr<std::unique_ptr<Trainer>> refused = Trainer::Create(other);
  EXPECT_FALSE(refused.ok());
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
  EXPECT_NE(banner.find("How well it does: moondream-bench scenes-eval"),
            std::string::npos)
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
