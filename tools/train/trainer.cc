#include "tools/train/trainer.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/utils/clip_grad.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <numbers>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "model/bundle.h"
#include "model/io/tensor_io.h"
#include "model/net/layers.h"
#include "tools/scenes/random.h"
#include "tools/train/skill_eval.h"

namespace md::train {
namespace {

namespace fs = std::filesystem;

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
      .count();
}

// Weight decay on the matrices of linear layers only, not on embeddings,
// norms, biases or the Fourier frequencies.
bool Decays(const std::string& name, const at::Tensor& t) {
  return t.dim() >= 2 && !absl::StrContains(name, "wte") &&
         !absl::StrContains(name, "pos_emb") &&
         !absl::StrContains(name, "features");
}

// Running sums of per-kind losses, weighted by their counts.
void AddParts(const Losses& scene, Losses& sum) {
  sum.token += scene.token * scene.n_token;
  sum.stop += scene.stop * scene.n_stop;
  sum.coordinate += scene.coordinate * scene.n_coordinate;
  sum.size += scene.size * scene.n_size;
  sum.focus += scene.focus * scene.n_focus;
  sum.focus_region += scene.focus_region * scene.n_focus_region;
  sum.n_focus_region += scene.n_focus_region;
  sum.answered += scene.answered * scene.n_answered;
  sum.n_answered += scene.n_answered;
  sum.position += scene.position;  // one per scene
  sum.patch_kind += scene.patch_kind;
  sum.patch_box += scene.patch_box;
  sum.patch_extent += scene.patch_extent;
  sum.patch_colour += scene.patch_colour;
  sum.head_patch += scene.head_patch;
  sum.prefix_rank += scene.prefix_rank;
  sum.row_box += scene.row_box;
  sum.row_extent += scene.row_extent;
  sum.row_centre += scene.row_centre;
  sum.row_norm += scene.row_norm;
  sum.row_rms_max = std::max(sum.row_rms_max, scene.row_rms_max);
  sum.n_token += scene.n_token;
  sum.n_stop += scene.n_stop;
  sum.n_coordinate += scene.n_coordinate;
  sum.n_size += scene.n_size;
  sum.n_focus += scene.n_focus;
  ++sum.n_scenes;
}
Losses MeanParts(Losses sum) {
  auto mean = [](double total, int n) { return n > 0 ? total / n : 0.0; };
  sum.token = mean(sum.token, sum.n_token);
  sum.stop = mean(sum.stop, sum.n_stop);
  sum.coordinate = mean(sum.coordinate, sum.n_coordinate);
  sum.size = mean(sum.size, sum.n_size);
  sum.focus = mean(sum.focus, sum.n_focus);
  sum.focus_region = mean(sum.focus_region, sum.n_focus_region);
  sum.answered = mean(sum.answered, sum.n_answered);
  sum.position = mean(sum.position, sum.n_scenes);
  sum.patch_kind = mean(sum.patch_kind, sum.n_scenes);
  sum.patch_box = mean(sum.patch_box, sum.n_scenes);
  sum.patch_extent = mean(sum.patch_extent, sum.n_scenes);
  sum.patch_colour = mean(sum.patch_colour, sum.n_scenes);
  sum.head_patch = mean(sum.head_patch, sum.n_scenes);
  sum.prefix_rank = mean(sum.prefix_rank, sum.n_scenes);
  sum.row_box = mean(sum.row_box, sum.n_scenes);
  sum.row_extent = mean(sum.row_extent, sum.n_scenes);
  sum.row_centre = mean(sum.row_centre, sum.n_scenes);
  sum.row_norm = mean(sum.row_norm, sum.n_scenes);
  return sum;
}

std::string Duration(double seconds) {
  const int s = static_cast<int>(seconds);
  if (s >= 3600) return absl::StrFormat("%dh%02dm", s / 3600, s % 3600 / 60);
  if (s >= 60) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%ds", s);
}

}  // namespace

bool IsVisionParameter(const std::string& name) {
  return absl::StartsWith(name, "model.vision.") ||
         absl::StartsWith(name, "train_only.patch_");
}

MoondreamConfig SceneModelConfig(const MoondreamConfig& base) {
  MoondreamConfig c = base;
  c.name = "scenes-tiny";
  c.text.dim = 128;
  c.text.n_layers = 4;
  c.text.n_heads = 2;
  c.vision.enc_dim = 64;
  c.vision.enc_n_layers = 4;
  c.vision.enc_ff_dim = 256;
  c.vision.enc_n_heads = 2;
  c.vision.proj_out_dim = 128;
  c.vision.proj_inner_dim = 256;
  c.region.dim = 128;
  c.region.inner_dim = 256;
  return c;
}

Trainer::Trainer(TrainOptions opts, Tokenizer tokenizer)
    : opts_(std::move(opts)), tokenizer_(std::move(tokenizer)) {}

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(TrainOptions opts) {
  RETURN_IF_ERROR(ValidateConfig(opts.config));
  if (opts.out_dir.empty()) return absl::InvalidArgumentError("no out dir");
  if (opts.steps < 0 || opts.scenes_per_step < 1 || opts.log_every < 1) {
    return absl::InvalidArgumentError(
        "steps must be >= 0, scenes per step and log interval >= 1");
  }
  if (opts.vision_only && opts.loss.patch_kind_weight <= 0 &&
      opts.loss.patch_box_weight <= 0 && opts.loss.patch_extent_weight <= 0 &&
      opts.loss.patch_colour_weight <= 0) {
    return absl::InvalidArgumentError(
        "vision-only training needs a patch-kind, patch-box, patch-extent or "
        "patch-colour loss weight > 0: they are that stage's only losses");
  }
  if (opts.vision_only && opts.vision_lr_scale == 0) {
    return absl::InvalidArgumentError(
        "vision-only training with the vision tower frozen trains nothing");
  }
  if (opts.vision_only_max_side < 0) {
    return absl::InvalidArgumentError("the vision-only side must be >= 0");
  }
  if (!(opts.vision_lr_scale >= 0)) {
    return absl::InvalidArgumentError("the vision lr scale must be >= 0");
  }
  if (opts.examples.several_repeats < 1 || opts.examples.several_repeats > 8) {
    return absl::InvalidArgumentError(
        "several repeats must be in [1, 8] (1: every question once)");
  }
  if (!(opts.examples.fed_jitter >= 0 && opts.examples.fed_jitter <= 0.5) ||
      !(opts.examples.fed_size_jitter >= 0 &&
        opts.examples.fed_size_jitter <= 2)) {
    return absl::InvalidArgumentError(
        "fed jitter must be in [0, 0.5] (image fractions) and fed size "
        "jitter in [0, 2] (log scale)");
  }
  if (opts.examples.focus_coverage &&
      (!opts.loss.focus_spread || opts.loss.focus_weight <= 0)) {
    return absl::InvalidArgumentError(
        "focus coverage shares are a spread the focus loss matches: it needs "
        "--focus-spread and a focus weight > 0");
  }
  if (opts.loss.answered_weight < 0 ||
      (opts.loss.answered_weight > 0 && opts.config.text.n_layers < 2)) {
    return absl::InvalidArgumentError(
        "the answered weight must be >= 0, and its head is in the layer "
        "before the last: it needs at least two text layers");
  }
  opts.examples.answered_focus = opts.loss.answered_weight > 0;
  ASSIGN_OR_RETURN(Tokenizer tokenizer,
                   Tokenizer::FromHuggingFaceJson(opts.tokenizer_path));
  if (tokenizer.vocab_size() > opts.config.text.vocab_size) {
    return absl::InvalidArgumentError(
        absl::StrCat(opts.tokenizer_path, " has ", tokenizer.vocab_size(),
                     " tokens, more than the model's vocabulary of ",
                     opts.config.text.vocab_size));
  }
  std::unique_ptr<Trainer> t(
      new Trainer(std::move(opts), std::move(tokenizer)));
  std::error_code ec;
  fs::create_directories(t->opts_.out_dir, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot create '", t->opts_.out_dir, "': ", ec.message()));
  }
  const bool has_checkpoint = fs::exists(t->checkpoint_path(), ec);
  if (has_checkpoint && !t->opts_.resume) {
    return absl::FailedPreconditionError(
        absl::StrCat(t->checkpoint_path(),
                     " exists: pass --resume to go on from it, or use "
                     "another --out"));
  }
  if (!has_checkpoint && t->opts_.resume) {
    return absl::NotFoundError(
        absl::StrCat("--resume: no ", t->checkpoint_path()));
  }
  RETURN_IF_ERROR(t->InitWeights());
  if (t->opts_.resume) {
    RETURN_IF_ERROR(t->LoadCheckpoint());
  } else if (!t->opts_.init_from.empty()) {
    RETURN_IF_ERROR(t->LoadModelFrom(t->opts_.init_from));
  } else if (!t->opts_.init_vision_from.empty()) {
    RETURN_IF_ERROR(t->LoadVisionFrom(t->opts_.init_vision_from));
  }
  return t;
}

absl::Status Trainer::InitWeights() {
  ASSIGN_OR_RETURN(weights_, RandomWeights(opts_.config, {at::kFloat, at::kCPU},
                                           opts_.seed));
  return CatchTorchStatus("setting up training", [&] {
    at::Generator gen = at::detail::createCPUGenerator(opts_.seed + 1);
    RegionWeights& r = weights_.region;
    r.coord_features =
        at::randn(r.coord_features.sizes(), gen) * kFourierInitStd;
    r.size_features = at::randn(r.size_features.sizes(), gen) * kFourierInitStd;
    if (opts_.sincos_positions) {
      const VisionConfig& v = opts_.config.vision;
      weights_.vision.pos_emb = SinCosPositions(
          v.crop_size / v.enc_patch_size, weights_.vision.pos_emb.size(-1));
    }
    if (opts_.mimetic_attention) {
      const VisionConfig& v = opts_.config.vision;
      for (VisionBlockWeights& block : weights_.vision.blocks) {
        MimeticWeights m = MimeticAttention(v.enc_dim, v.enc_n_heads, gen);
        block.attn.qkv.weight = m.qkv_weight;
        block.attn.proj.weight = m.proj_weight;
      }
    }
    if (opts_.fourier_bins) {
      for (LinearWeights* fc2 : {&r.coord_decoder.fc2, &r.size_decoder.fc2}) {
        const int64_t bins = opts_.config.region.coord_out_dim;
        const int64_t heads = fc2->weight.size(0) / bins;  // size: w and h
        fc2->weight =
            FourierBins(bins, fc2->weight.size(1)).repeat({heads, 1}) *
            kFourierBinsScale;
        fc2->bias = at::zeros_like(fc2->bias);
      }
    }
    params_ = NamedParameters(opts_.config, weights_);
    AddProbes(gen);
    MakeOptimizer();
    rotary_ = MakeRotaryTable(opts_.config.text, at::kCPU);
  });
}

void Trainer::MakeOptimizer() {
  // Groups: {rest, vision} × {decayed, not}; the vision groups' learning
  // rate is scaled by vision_lr_scale.
  std::vector<at::Tensor> members[2][2];
  for (auto& [name, tensor] : params_) {
    tensor.requires_grad_(true);
    members[IsVisionParameter(name)][Decays(name, tensor)].push_back(tensor);
  }
  torch::optim::AdamWOptions defaults(opts_.learning_rate);
  defaults.weight_decay(0);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  group_lr_scale_.clear();
  for (int vision : {0, 1}) {
    for (int decays : {0, 1}) {
      if (members[vision][decays].empty()) continue;
      auto options = std::make_unique<torch::optim::AdamWOptions>(defaults);
      options->weight_decay(decays ? opts_.weight_decay : 0);
      groups.emplace_back(members[vision][decays], std::move(options));
      group_lr_scale_.push_back(vision ? opts_.vision_lr_scale : 1.0);
    }
  }
  optimizer_ =
      std::make_unique<torch::optim::AdamW>(std::move(groups), defaults);
}

namespace {

// The rows of `sequences` (flat in [B·T]) that the region heads read.
std::vector<int64_t> HeadRows(absl::Span<const Sequence> sequences, int64_t t) {
  std::vector<int64_t> rows;
  for (size_t i = 0; i < sequences.size(); ++i) {
    const int64_t base = static_cast<int64_t>(i) * t;
    for (const CoordinateTarget& x : sequences[i].coordinates) {
      rows.push_back(base + x.row);
    }
    for (const SizeTarget& x : sequences[i].sizes) rows.push_back(base + x.row);
  }
  return rows;
}

}  // namespace

void Trainer::UpdateRowStats(const at::Tensor& rows_BTC,
                             absl::Span<const Sequence> sequences) {
  // Slow enough to be a fixed reparametrisation from step to step, fast
  // enough to follow the residual stream as it grows.
  constexpr double kMomentum = 0.05;
  at::NoGradGuard no_grad;
  const std::vector<int64_t> rows = HeadRows(sequences, rows_BTC.size(1));
  if (rows.empty()) return;
  const at::Tensor mean_C = rows_BTC.detach()
                                .reshape({-1, rows_BTC.size(2)})
                                .index_select(0, at::tensor(rows, at::kLong))
                                .mean(0);
  region_rows_mean_C_ =
      region_rows_mean_C_.defined()
          ? region_rows_mean_C_ + kMomentum * (mean_C - region_rows_mean_C_)
          : mean_C;
  if (unfold_region_mean_) {
    // ServedWeights subtracts W·mean from here on: the loaded biases, which
    // already had a mean folded in, get this one back.
    for (LinearWeights* fc1 : {&weights_.region.coord_decoder.fc1,
                               &weights_.region.size_decoder.fc1}) {
      fc1->bias.add_(at::mv(fc1->weight, region_rows_mean_C_));
    }
    unfold_region_mean_ = false;
  }
}

Weights Trainer::ServedWeights() const {
  Weights served = weights_;  // shares the tensors
  if (!opts_.center_region_head || !region_rows_mean_C_.defined()) {
    return served;
  }
  for (LinearWeights* fc1 :
       {&served.region.coord_decoder.fc1, &served.region.size_decoder.fc1}) {
    fc1->bias = fc1->bias - at::mv(fc1->weight, region_rows_mean_C_);
  }
  return served;
}

double Trainer::LearningRate(int step) const {
  const double peak = opts_.learning_rate;
  if (step < opts_.warmup_steps) {
    return peak * (step + 1) / opts_.warmup_steps;
  }
  const double span = std::max(1, opts_.steps - opts_.warmup_steps);
  const double progress = std::min(1.0, (step - opts_.warmup_steps) / span);
  const double floor = peak * opts_.min_learning_rate_fraction;
  return floor +
         (peak - floor) * 0.5 * (1 + std::cos(std::numbers::pi * progress));
}

std::vector<Sequence> Trainer::ChooseSequences(const SceneExample& example,
                                               uint64_t scene_index) const {
  std::vector<Sequence> all = example.sequences;
  const size_t want = static_cast<size_t>(opts_.sequences_per_scene);
  if (want == 0 || want >= all.size()) return all;
  // A partial Fisher–Yates shuffle on the scenes' portable generator.
  scenes::ScenePrng prng(scenes::SceneSeed(opts_.seed, scene_index));
  for (size_t i = 0; i < want; ++i) {
    const size_t j = static_cast<size_t>(prng.UniformInt(
        static_cast<int64_t>(i), static_cast<int64_t>(all.size()) - 1));
    std::swap(all[i], all[j]);
  }
  all.resize(want);
  return all;
}

absl::Status Trainer::VisionOnlyScene(const scenes::Scene& scene,
                                      StepStats& stats, Losses& sum) {
  const VisionConfig& v = opts_.config.vision;
  const int grid = static_cast<int>(v.grid());
  const scenes::Scene small = ShrinkScene(
      scene, opts_.vision_only_max_side > 0 ? opts_.vision_only_max_side
                                            : v.crop_size);
  ASSIGN_OR_RETURN(ImageCrops crops, SceneCrops(small, v));
  const PatchTruth truth = ScenePatchTruth(small, grid);
  return CatchTorchStatus("training the vision tower on a scene", [&] {
    Losses losses;
    const at::Tensor total =
        PatchLosses(ImageEmbedding(crops, weights_, v), truth, losses);
    (total / opts_.scenes_per_step).backward();
    stats.loss += total.item<double>() / opts_.scenes_per_step;
    AddParts(losses, sum);
  });
}

absl::StatusOr<StepStats> Trainer::Step() {
  const auto start = std::chrono::steady_clock::now();
  StepStats stats;
  stats.learning_rate = LearningRate(step_);
  Losses sum;
  RETURN_IF_ERROR(CatchTorchStatus("zeroing gradients", [&] {
    auto& groups = optimizer_->param_groups();
    for (size_t g = 0; g < groups.size(); ++g) {
      static_cast<torch::optim::AdamWOptions&>(groups[g].options())
          .lr(stats.learning_rate * group_lr_scale_[g]);
    }
    optimizer_->zero_grad();
  }));
  for (int j = 0; j < opts_.scenes_per_step; ++j) {
    uint64_t index = static_cast<uint64_t>(step_) * opts_.scenes_per_step + j;
    if (opts_.scene_cycle > 0)
      index %= static_cast<uint64_t>(opts_.scene_cycle);
    scenes::Scene scene = TrainingScene(
        opts_.train_base_seed, index, opts_.wide_share, opts_.wide_min_aspect);
    // A curriculum's easier scenes: the first shapes of the scene, which
    // still meet the specification (only the count's spread narrows).
    if (scene.shapes.size() > static_cast<size_t>(opts_.max_shapes)) {
      scene.shapes.resize(opts_.max_shapes);
    }
    auto mark = std::chrono::steady_clock::now();
    auto lap = [&mark](double& into) {
      into += SecondsSince(mark);
      mark = std::chrono::steady_clock::now();
    };
    if (opts_.vision_only) {
      RETURN_IF_ERROR(VisionOnlyScene(scene, stats, sum));
      lap(stats.backward_seconds);
      continue;
    }
    ASSIGN_OR_RETURN(
        SceneExample example,
        MakeSceneExample(scene, opts_.config, tokenizer_, opts_.examples));
    const std::vector<Sequence> sequences = ChooseSequences(example, index);
    lap(stats.data_seconds);
    RETURN_IF_ERROR(CatchTorchStatus("training on a scene", [&] {
      // SceneLosses' steps, timed apart.
      const MoondreamConfig& c = opts_.config;
      at::Tensor image_PC;
      {
        // A frozen tower needs no graph: the step then costs its forward
        // only.
        std::optional<at::NoGradGuard> frozen;
        if (VisionFrozen()) frozen.emplace();
        image_PC = ImageEmbedding(example.crops, weights_, c.vision);
      }
      lap(stats.vision_seconds);
      FocusTaps taps;
      at::Tensor rows_BTC =
          DecoderForward(PrefixEmbeddings(image_PC, weights_, c),
                         EmbedSequences(sequences, weights_), weights_.text,
                         c.text, rotary_, opts_.loss.Taps() ? &taps : nullptr);
      if (opts_.center_region_head) UpdateRowStats(rows_BTC, sequences);
      if (opts_.readout_probe) RecordReadout(rows_BTC, taps, sequences);
      Losses losses = SequenceLosses(rows_BTC, sequences, ServedWeights(), c,
                                     opts_.loss, &taps, &position_probe_);
      if (!VisionFrozen()) {
        losses.total =
            losses.total + PatchLosses(image_PC, example.patches, losses);
      }
      if (opts_.loss.head_patch_weight > 0) {
        losses.total =
            losses.total + HeadPatchLoss(taps, example.patches, losses);
      }
      if (opts_.loss.prefix_rank_weight > 0) {
        losses.total =
            losses.total + PrefixRankLoss(taps, example.patches, losses);
      }
      losses.total = losses.total + RowLosses(rows_BTC, sequences, losses);
      lap(stats.text_seconds);
      (losses.total / opts_.scenes_per_step).backward();
      stats.loss += losses.total.item<double>() / opts_.scenes_per_step;
      AddParts(losses, sum);
      lap(stats.backward_seconds);
    }));
    stats.sequences += static_cast<int>(sequences.size());
  }
  const auto update_start = std::chrono::steady_clock::now();
  RETURN_IF_ERROR(CatchTorchStatus("updating the weights", [&] {
    std::vector<at::Tensor> tensors;
    for (const auto& named : params_) tensors.push_back(named.second);
    stats.grad_norm =
        torch::nn::utils::clip_grad_norm_(tensors, opts_.clip_norm);
    optimizer_->step();
  }));
  stats.backward_seconds += SecondsSince(update_start);
  ++step_;
  stats.step = step_;
  stats.parts = MeanParts(sum);
  stats.seconds = SecondsSince(start);
  return stats;
}

absl::StatusOr<double> Trainer::HeldOutLoss(uint64_t base_seed, int count) {
  // Every question once, as asked: held-out losses stay comparable across
  // stages with and without repeats.
  ExampleOptions as_asked = opts_.examples;
  as_asked.several_repeats = 1;
  as_asked.fed_jitter = 0;
  as_asked.fed_size_jitter = 0;
  double total = 0;
  for (int i = 0; i < count; ++i) {
    const scenes::Scene scene = scenes::GenerateScene(
        scenes::SceneSeed(base_seed, static_cast<uint64_t>(i)));
    ASSIGN_OR_RETURN(
        SceneExample example,
        MakeSceneExample(scene, opts_.config, tokenizer_, as_asked));
    RETURN_IF_ERROR(CatchTorchStatus("held-out loss", [&] {
      at::NoGradGuard no_grad;
      total += SceneLosses(example, example.sequences, ServedWeights(),
                           opts_.config, rotary_, opts_.loss, &position_probe_)
                   .total.item<double>();
    }));
  }
  return count > 0 ? total / count : 0.0;
}

absl::Status Trainer::Evaluate() {
  const auto start = std::chrono::steady_clock::now();
  if (opts_.loss.patch_kind_weight > 0 || opts_.loss.patch_box_weight > 0 ||
      opts_.loss.patch_extent_weight > 0 ||
      opts_.loss.patch_colour_weight > 0) {
    ASSIGN_OR_RETURN(
        PatchProbeEval probes,
        HeldOutPatchProbes(opts_.eval_base_seed, opts_.eval_scenes));
    std::printf(
        "eval step %d: held-out patch-kind loss %.4f, %.1f%% of shape cells "
        "told right, patch-colour loss %.4f, %.1f%% right, patch-box loss "
        "%.4f, patch-extent loss %.4f, on %d full-size scenes\n",
        step_, probes.kind_loss, 100 * probes.shape_cell_accuracy,
        probes.colour_loss, 100 * probes.colour_cell_accuracy, probes.box_loss,
        probes.extent_loss, opts_.eval_scenes);
    std::fflush(stdout);
  }
  if (opts_.vision_only) {
    return WritesModelDirectory() ? WriteModelDirectory(model_dir())
                                  : absl::OkStatus();
  }
  ASSIGN_OR_RETURN(double held_out,
                   HeldOutLoss(opts_.eval_base_seed, opts_.eval_scenes));
  // Through the served path: the directory written, loaded as the server
  // loads it, asked through the skills.
  RETURN_IF_ERROR(WriteModelDirectory(model_dir()));
  ASSIGN_OR_RETURN(
      ModelBundle bundle,
      LoadModelBundle(model_dir(), "moondream2", {at::kFloat, at::kCPU}));
  ASSIGN_OR_RETURN(SkillEval eval,
                   EvaluateSkills(bundle, opts_.eval_base_seed,
                                  opts_.eval_scenes, opts_.eval_max_tokens));
  std::printf(
      "eval step %d: held-out loss %.4f, %d/%d questions right on %d "
      "scenes (seed %llu), %.1f s\n%s",
      step_, held_out, eval.all_right, eval.questions, opts_.eval_scenes,
      static_cast<unsigned long long>(opts_.eval_base_seed),
      SecondsSince(start),
      scenes::FormatReport(scenes::ReportLines(eval.tally)).c_str());
  std::fflush(stdout);
  return absl::OkStatus();
}

absl::Status Trainer::Run() {
  const auto start = std::chrono::steady_clock::now();
  const int first_step = step_;
  Losses window;
  double window_loss = 0, window_seconds = 0;
  double window_data = 0, window_vision = 0, window_text = 0,
         window_backward = 0;
  int window_steps = 0, window_sequences = 0;
  bool saved = false, evaluated = false;
  const int last_step = opts_.stop_after > 0
                            ? std::min(opts_.stop_after, opts_.steps)
                            : opts_.steps;
  while (step_ < last_step) {
    ASSIGN_OR_RETURN(StepStats s, Step());
    saved = evaluated = false;
    AddParts(s.parts, window);
    window_loss += s.loss;
    window_seconds += s.seconds;
    window_data += s.data_seconds;
    window_vision += s.vision_seconds;
    window_text += s.text_seconds;
    window_backward += s.backward_seconds;
    window_sequences += s.sequences;
    ++window_steps;
    if (step_ % opts_.log_every == 0 || step_ == last_step) {
      const Losses parts = MeanParts(window);
      const std::pair<double, double> readout =
          opts_.readout_probe ? ReadoutR2() : std::pair<double, double>{0, 0};
      const double per_step = SecondsSince(start) / (step_ - first_step);
      std::printf(
          "step %d/%d loss %.4f (text %.3f stop %.3f xy %.3f wh %.3f focus "
          "%.3f focus-region %.3f answered %.3f pos %.3f kind %.3f box %.3f "
          "extent %.3f "
          "colour %.3f head %.3f rank %.3f row %.3f row-extent %.3f "
          "row-centre %.3f "
          "x-R2 rows %.3f "
          "gathered %.3f "
          "rms-max %.0f norm %.3f) lr "
          "%.2e |g| %.2f %.1f seq/s %.2f s/step (data %.0f%% vision %.0f%% "
          "text %.0f%% backward %.0f%%) eta %s\n",
          step_, opts_.steps, window_loss / window_steps, parts.token,
          parts.stop, parts.coordinate, parts.size, parts.focus,
          parts.focus_region, parts.answered, parts.position, parts.patch_kind,
          parts.patch_box, parts.patch_extent, parts.patch_colour,
          parts.head_patch, parts.prefix_rank, parts.row_box, parts.row_extent,
          parts.row_centre, readout.first, readout.second, parts.row_rms_max,
          parts.row_norm, s.learning_rate, s.grad_norm,
          window_sequences / window_seconds, window_seconds / window_steps,
          100 * window_data / window_seconds,
          100 * window_vision / window_seconds,
          100 * window_text / window_seconds,
          100 * window_backward / window_seconds,
          Duration(per_step * (opts_.steps - step_)).c_str());
      std::fflush(stdout);
      window = Losses();
      window_loss = window_seconds = 0;
      window_data = window_vision = window_text = window_backward = 0;
      window_steps = window_sequences = 0;
    }
    if (opts_.checkpoint_every > 0 && step_ % opts_.checkpoint_every == 0) {
      RETURN_IF_ERROR(SaveCheckpoint());
      saved = true;
    }
    if (opts_.eval_every > 0 && step_ % opts_.eval_every == 0) {
      RETURN_IF_ERROR(Evaluate());
      evaluated = true;
    }
  }
  if (!saved) RETURN_IF_ERROR(SaveCheckpoint());
  if (opts_.eval_every > 0 && !evaluated) return Evaluate();
  if (!evaluated && WritesModelDirectory()) {
    return WriteModelDirectory(model_dir());
  }
  return absl::OkStatus();
}

}  // namespace md::train
