// The feature probe (tools/train/feature_probe.h): its held-out R² uses only
// the rows it is told to fit, every shape and covered cell of the scenes
// becomes a row, and the truth readout (which cells a shape covers) reads
// the boxes, which is the grid's resolution the other readouts are
// compared with.
#include "tools/train/feature_probe.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "model/io/weights.h"
#include "model/net/moondream.h"
#include "model/tokenizer/tokenizer.h"
#include "tests/tools/train_test_support.h"
#include "tools/scenes/questions.h"
#include "tools/scenes/random.h"
#include "tools/scenes/scene.h"
#include "tools/train/examples.h"
#include "tools/train/trainer.h"

namespace md::train {
namespace {

// Fitted on the given rows only: a test side whose relation is the
// opposite of the fitted side's scores far below 0.
TEST(FeatureProbeTest, HeldOutR2FitsOnlyTheGivenRows) {
  at::manual_seed(11);
  at::Tensor x_NF = at::randn({2000, 16}, at::kDouble);
  const at::Tensor signal_N = at::matmul(x_NF, at::randn({16}, at::kDouble));
  const at::Tensor fit = at::arange(0, 1000), test = at::arange(1000, 2000);
  EXPECT_GT(HeldOutR2(x_NF, signal_N, fit, test), 0.999);
  at::Tensor flipped_N = signal_N.clone();
  flipped_N.narrow(0, 1000, 1000).neg_();
  EXPECT_LT(HeldOutR2(x_NF, flipped_N, fit, test), -2.0);
  EXPECT_EQ(HeldOutR2(x_NF, signal_N, fit, at::arange(1000, 1020)), 0);
}

class FeatureProbeModelTest : public ::testing::Test {
 protected:
  static constexpr uint64_t kSeed = 5;
  static constexpr int kScenes = 80;

  static void SetUpTestSuite() {
    const MoondreamConfig config = TestConfig();
    absl::StatusOr<Weights> weights =
        RandomWeights(config, {at::kFloat, at::kCPU}, 77);
    ASSERT_TRUE(weights.ok()) << weights.status();
    absl::StatusOr<std::unique_ptr<Model>> model =
        Model::Create(config, *weights, {at::kFloat, at::kCPU});
    ASSERT_TRUE(model.ok()) << model.status();
    absl::StatusOr<Tokenizer> tokenizer =
        Tokenizer::FromHuggingFaceJson(kTinyDir + "/tokenizer.json");
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    absl::StatusOr<FeatureProbeReport> report =
        ProbeImageFeatures(**model, &*tokenizer, kSeed, kScenes);
    ASSERT_TRUE(report.ok()) << report.status();
    report_ = new FeatureProbeReport(*std::move(report));
  }
  static void TearDownTestSuite() { delete report_; }

  static const FeatureReadout& Readout(const std::string& name) {
    for (const FeatureReadout& r : report_->readouts) {
      if (r.name == name) return r;
    }
    ADD_FAILURE() << "no readout " << name;
    return report_->readouts.front();
  }

  static FeatureProbeReport* report_;
};
FeatureProbeReport* FeatureProbeModelTest::report_ = nullptr;

TEST_F(FeatureProbeModelTest, EveryShapeAndCoveredCellIsARow) {
  ASSERT_NE(report_, nullptr);
  int shapes = 0, with_cells = 0, cells = 0, detected = 0;
  for (int i = 0; i < kScenes; ++i) {
    const scenes::Scene scene = scenes::GenerateScene(
        scenes::SceneSeed(kSeed, static_cast<uint64_t>(i)));
    for (const scenes::SceneTask& task : scenes::SceneTasks(scene)) {
      if (task.kind == scenes::TaskKind::kDetect) {
        detected += static_cast<int>(task.targets.size());
      }
    }
    for (const scenes::Shape& s : scene.shapes) {
      ++shapes;
      int covered = 0;
      for (bool c : CoveredCells(scene, s, 27)) covered += c;
      with_cells += covered > 0;
      cells += covered;
    }
  }
  EXPECT_EQ(report_->scenes, kScenes);
  EXPECT_EQ(report_->shapes, with_cells);
  EXPECT_EQ(report_->shapes + report_->shapes_without_cells, shapes);
  EXPECT_EQ(report_->shape_cells, cells);
  ASSERT_EQ(report_->readouts.size(), 15u);
  for (const FeatureReadout& r : report_->readouts) {
    if (r.name == "answers, 2nd+ objects") {
      EXPECT_EQ(r.rows, report_->later_focus_rows);
      continue;
    }
    const bool per_cell = r.name.find("per cell") != std::string::npos;
    const bool detect_row = r.name.find(" row") != std::string::npos ||
                            r.name == "region head's answers";
    EXPECT_EQ(r.rows, per_cell     ? cells
                      : detect_row ? detected
                                   : with_cells)
        << r.name;
    for (double r2 : r.r2) {
      EXPECT_TRUE(std::isfinite(r2)) << r.name;
      EXPECT_LE(r2, 1.0) << r.name;
    }
  }
}

// The cells a shape covers say where it is and how big, on held-out
// scenes: the 27×27 grid resolves the boxes, so a tower that fails to is
// the tower's limit, not the grid's.
TEST_F(FeatureProbeModelTest, TheCoveredCellsReadTheBox) {
  ASSERT_NE(report_, nullptr);
  const FeatureReadout& mask = Readout("cell mask (truth)");
  EXPECT_GT(mask.r2[0], 0.95);  // cx
  EXPECT_GT(mask.r2[1], 0.95);  // cy
  EXPECT_GT(mask.r2[2], 0.7);   // w
  EXPECT_GT(mask.r2[3], 0.7);   // h
  EXPECT_GT(mask.r2[4], 0.6);   // log(w / h)
}

// The size row is fed the object's y (the region encoder's embedding of
// it), so even a random decoder's residual stream there reads y back: the
// readout takes the rows the region head reads the size from, not others.
TEST_F(FeatureProbeModelTest, TheSizeRowIsTheRowFedTheObjectsY) {
  ASSERT_NE(report_, nullptr);
  EXPECT_GT(Readout("detect size row").r2[1], 0.99);  // cy
}

// Likewise the y row is fed the object's x: read back there, and not on
// the x row, which comes before the x is known.
TEST_F(FeatureProbeModelTest, TheYRowIsTheRowFedTheObjectsX) {
  ASSERT_NE(report_, nullptr);
  EXPECT_GT(Readout("detect y row").r2[0], 0.99);  // cx
  EXPECT_LT(Readout("detect x row").r2[0], 0.9);   // cx
}

// One x row per detected shape, each with its focus target; the shares of
// where its attention goes add up to the whole of it.
TEST_F(FeatureProbeModelTest, SplitsTheFocusHeadsAttentionOnEachXRow) {
  ASSERT_NE(report_, nullptr);
  EXPECT_EQ(report_->focus_rows, Readout("detect x row").rows);
  const FeatureProbeReport::FocusMass& m = report_->x_row_focus;
  for (double share : {m.shape, m.other_shapes, m.image_rest, m.bos, m.text}) {
    EXPECT_GT(share, 0);
    EXPECT_LT(share, 1);
  }
  // Zero when no question of these scenes asks for two shapes.
  EXPECT_GE(m.other_answers, 0);
  EXPECT_LT(m.other_answers, 1);
  EXPECT_NEAR(m.shape + m.other_answers + m.other_shapes + m.image_rest +
                  m.bos + m.text,
              1, 1e-5);
  EXPECT_NE(FormatFeatureProbe(*report_).find("on the shape it answers"),
            std::string::npos);

  // The rows of second and later objects, split out: every object but the
  // first of each answer. Only they have shapes answered before them.
  const FeatureProbeReport::FocusMass& later = report_->later_x_row_focus;
  ASSERT_GT(report_->later_focus_rows, 0);
  EXPECT_LT(report_->later_focus_rows, report_->focus_rows);
  EXPECT_NEAR(later.shape + later.other_answers + later.other_shapes +
                  later.image_rest + later.bos + later.text,
              1, 1e-5);
  EXPECT_GT(later.answered, 0);
  EXPECT_LE(later.answered, later.other_answers);
  EXPECT_LE(m.answered, m.other_answers);
  EXPECT_NEAR(m.answered * report_->focus_rows,
              later.answered * report_->later_focus_rows, 1e-6);
  EXPECT_NE(FormatFeatureProbe(*report_).find("second and later objects"),
            std::string::npos);
  // The layer before's first head on the same rows: some of its mass is on
  // the shapes answered before, never all of it (bos and the text rows get
  // some under any softmax).
  EXPECT_GT(report_->later_x_row_before_last_on_answered, 0);
  EXPECT_LT(report_->later_x_row_before_last_on_answered, 1);
  EXPECT_NE(FormatFeatureProbe(*report_).find("layer before it"),
            std::string::npos);
}

TEST_F(FeatureProbeModelTest, TheTableNamesEveryReadoutAndTarget) {
  ASSERT_NE(report_, nullptr);
  const std::string table = FormatFeatureProbe(*report_);
  std::printf("%s", table.c_str());
  for (const FeatureReadout& r : report_->readouts) {
    EXPECT_NE(table.find(r.name), std::string::npos) << table;
  }
  for (const char* target : kProbeTargetNames) {
    EXPECT_NE(table.find(target), std::string::npos) << table;
  }
}

}  // namespace
}  // namespace md::train
