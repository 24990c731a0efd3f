// What the trainer's tests share: a model shape small enough to train in
// seconds (the crop and the 730-position prefix stay the real ones) and a
// short run's options.
#ifndef MOONDREAM_TESTS_TOOLS_TRAIN_TEST_SUPPORT_H_
#define MOONDREAM_TESTS_TOOLS_TRAIN_TEST_SUPPORT_H_

#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "model/config/config.h"
#include "tools/train/trainer.h"

namespace md::train {

inline const std::string kTinyDir =
    std::string(MD_SOURCE_DIR) + "/models/tiny-random";

// Small enough for a test to train in seconds; the crop and the 730-position
// prefix are the real ones.
inline MoondreamConfig TestConfig() {
  absl::StatusOr<MoondreamConfig> base =
      LoadConfigFile(kTinyDir + "/config.json", Moondream2Config());
  EXPECT_TRUE(base.ok()) << base.status();
  MoondreamConfig c = *base;
  c.text.dim = 64;
  c.text.n_layers = 2;
  c.text.n_heads = 1;
  c.vision.enc_dim = 32;
  c.vision.enc_n_layers = 2;
  c.vision.enc_ff_dim = 64;
  c.vision.enc_n_heads = 1;
  c.vision.proj_out_dim = 64;
  c.vision.proj_inner_dim = 64;
  c.region.dim = 64;
  c.region.inner_dim = 64;
  return c;
}

inline TrainOptions SmallRun(const std::string& name) {
  TrainOptions o;
  o.out_dir = ::testing::TempDir() + "/train_test_" + name;
  std::filesystem::remove_all(o.out_dir);
  o.tokenizer_path = kTinyDir + "/tokenizer.json";
  o.config = TestConfig();
  o.scenes_per_step = 1;
  o.sequences_per_scene = 6;
  o.warmup_steps = 2;
  o.learning_rate = 3e-3;
  o.steps = 100;
  o.eval_every = 0;
  return o;
}

inline std::vector<double> Losses(Trainer& trainer, int steps) {
  std::vector<double> losses;
  for (int i = 0; i < steps; ++i) {
    absl::StatusOr<StepStats> s = trainer.Step();
    EXPECT_TRUE(s.ok()) << s.status();
    losses.push_back(s.ok() ? s->loss : 0);
  }
  return losses;
}

}  // namespace md::train

#endif  // MOONDREAM_TESTS_TOOLS_TRAIN_TEST_SUPPORT_H_
