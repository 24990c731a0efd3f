// The served skills decode what training taught (issue 14): a model
// overfit on one scene, written as a model directory and loaded as the
// server loads it, answers that scene's questions through the skills.
// Minutes on a busy 2-core machine, so apart from train_test.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <vector>

#include "model/bundle.h"
#include "tests/tools/train_test_support.h"
#include "tools/scenes/random.h"
#include "tools/scenes/scene.h"
#include "tools/train/skill_eval.h"
#include "tools/train/trainer.h"

namespace md::train {
namespace {

TEST(TrainerTest, ServedSkillsAnswerAnOverfitScene) {
  TrainOptions o = SmallRun("served");
  // A small canvas (two crops: fast) with several shapes.
  for (o.train_base_seed = 1000000;; ++o.train_base_seed) {
    const scenes::Scene s =
        scenes::GenerateScene(scenes::SceneSeed(o.train_base_seed, 0));
    if (std::max(s.width, s.height) <= 378 && s.shapes.size() >= 2) break;
  }
  o.scene_cycle = 1;
  o.sequences_per_scene = 0;
  o.steps = 80;
  o.warmup_steps = 4;
  absl::StatusOr<std::unique_ptr<Trainer>> t = Trainer::Create(o);
  ASSERT_TRUE(t.ok()) << t.status();
  const std::vector<double> losses = Losses(**t, o.steps);
  std::printf("served: losses %.4f .. %.4f\n", losses.front(), losses.back());
  ASSERT_TRUE((*t)->WriteModelDirectory((*t)->model_dir()).ok());
  absl::StatusOr<ModelBundle> bundle =
      LoadModelBundle((*t)->model_dir(), "moondream2", {});
  ASSERT_TRUE(bundle.ok()) << bundle.status();
  absl::StatusOr<SkillEval> eval =
      EvaluateSkills(*bundle, o.train_base_seed, 1, 64);
  ASSERT_TRUE(eval.ok()) << eval.status();
  std::printf("served: %d/%d right\n%s", eval->all_right, eval->questions,
              scenes::FormatReport(scenes::ReportLines(eval->tally)).c_str());
  EXPECT_GE(eval->all_right, eval->questions - 1);
}

}  // namespace
}  // namespace md::train
