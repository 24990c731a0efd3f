// Trains a tiny Moondream from scratch on synthetic scenes (issue 14), in
// fp32 with LibTorch autograd over the model's own code
// (tools/train/train_forward.h), and writes model directories the server
// and `moondream-bench scenes-eval` load.
//
// Data: step s uses scenes SceneSeed(train_base_seed, s·scenes_per_step + j)
// for j < scenes_per_step (TrainingScene: with wide_share, some redrawn from
// that seed's successors), generated on the fly on one thread; scenes-eval
// and the held-out checks use small base seeds (1, eval_base_seed), whose
// sets SceneSeed keeps apart from the training set (their index offsets
// differ by (train_base_seed − base)·φ mod 2^64, far beyond any count).
// Everything a step does is a function of the options and the step number,
// so a run is reproducible for a seed and resumes exactly from a
// checkpoint.
//
// The out directory holds checkpoint.pt (weights, AdamW state, step, RNG
// state, the config) and model/ (model.safetensors, config.json,
// tokenizer.json: no RANDOM-WEIGHTS marker).
#ifndef MOONDREAM_TOOLS_TRAIN_TRAINER_H_
#define MOONDREAM_TOOLS_TRAIN_TRAINER_H_

#include <torch/optim/adamw.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "model/config/config.h"
#include "model/io/weights.h"
#include "model/net/text.h"
#include "model/tokenizer/tokenizer.h"
#include "tools/scenes/scene.h"
#include "tools/train/init_weights.h"
#include "tools/train/train_forward.h"

namespace md::train {

struct TrainOptions {
  std::string out_dir;
  // Copied into the model directory; the config's templates index it.
  std::string tokenizer_path;
  MoondreamConfig config;
  bool resume = false;

  int steps = 1000;
  // Stop once this step is done (0: at `steps`), with a checkpoint to
  // resume from; the schedule is still the one `steps` shapes. A recipe
  // that changes a flag part way (e.g. --bin-sigma) stops here, then
  // resumes with the new flag.
  int stop_after = 0;
  int scenes_per_step = 2;
  // Questions per scene and step (0: all of SceneTasks'), drawn anew each
  // step.
  int sequences_per_scene = 0;
  // Training scene indices taken modulo this (0: every scene new): 1
  // trains on one fixed batch, for overfit checks.
  int scene_cycle = 0;
  // Training scenes keep at most this many shapes (the held-out checks
  // always use the full specification): a curriculum starts low.
  int max_shapes = scenes::kMaxShapes;
  // A share of the training scenes (0 to 1) drawn again until the longer
  // side is at least wide_min_aspect × the shorter (TrainingScene): more
  // wide and tall images while their region answers lag.
  double wide_share = 0;
  double wide_min_aspect = 1.5;
  // A cheap first stage of a curriculum: steps train only the vision
  // encoder and projection (and the probe) on the patch-kind loss, with no
  // text decoder, on scenes shrunk to fit one crop (ShrinkScene: 2 crops
  // each instead of up to 10). Needs loss.patch_kind_weight > 0. The run
  // then resumes without it, the tower already telling shapes apart.
  bool vision_only = false;
  // The vision-only stage's scenes are shrunk to this longer side at most
  // (0: the crop size, 2 crops each; kMaxCanvasSide: full size, as served).
  int vision_only_max_side = 0;
  // The vision tower's, projection's and patch probes' learning rate is the
  // schedule's × this: a later stage keeps what a vision-only stage taught
  // the tower. 0 freezes them: the images are then encoded without a graph
  // and the patch losses are off, which makes a step ~2× cheaper.
  double vision_lr_scale = 1.0;
  // A fresh run starts its vision tower, projection and patch-kind probe
  // from this checkpoint's (typically a vision_only stage's), or its tower
  // and projection from this model directory's (a fresh decoder, of any
  // shape, on a trained tower); everything else, the optimizer and the
  // schedule start anew. The tower's shapes must match.
  std::string init_vision_from;
  // A fresh run starts every model weight from this model directory's
  // model.safetensors (one WriteModelDirectory wrote, e.g. a shipped model):
  // a new stage on a model whose checkpoint is gone. Probes, the optimizer
  // and the schedule start anew; with center_region_head the mean the
  // directory's region heads have folded in is unfolded at the first step,
  // so the served function does not jump.
  std::string init_from;
  // With init_from: the directory's model may have fewer vision layers than
  // this run's config (its config.json otherwise equal). Its layers become
  // the first ones; each layer it lacks is appended with its attention
  // output and MLP output zeroed, a residual block that adds nothing, so
  // the grown tower starts computing exactly what the smaller one did.
  bool grow_vision = false;
  // With init_from: the directory's model may have fewer text layers than
  // this run's config. Its last layer stays the last (the focus losses and
  // the region head read it) and its other layers the first ones; the
  // layers it lacks are inserted before the last, each a block that adds
  // nothing (as grow_vision's), so the deeper decoder starts computing
  // exactly what the shallower one did.
  bool grow_text = false;
  // At a resume: parameters whose name (Hugging Face layout, e.g.
  // "model.text.blocks.3.mlp") starts with one of these keep their fresh
  // initial values instead of the checkpoint's; AdamW's state and the
  // region rows' running mean then start anew. Surgery on a run that learnt
  // something it cannot unlearn at a small learning rate.
  std::vector<std::string> reinit_prefixes;
  // Start the vision position embedding as SinCosPositions (below) rather
  // than fan-in noise. Off by default: it has not yet shown a gain.
  bool sincos_positions = false;
  // Start every vision attention layer with the mimetic initialisation
  // (MimeticAttention, below) instead of fan-in noise.
  bool mimetic_attention = false;
  // Precondition the region head during training: its first layers (the
  // coordinate and size decoders' fc1) see the hidden rows they read less
  // their running mean, folded into fc1's bias whenever the model is used
  // or written, so the served head is the same function. The residual stream
  // the head reads has no final norm and carries a large common component;
  // without this, the head learns the marginal of the bins and hardly anything
  // about the image.
  bool center_region_head = false;
  // Start the coordinate and size decoders' last layers (fc2, [bins, inner]
  // per head) as FourierBins: each bin's logit is then a Fourier series in
  // the bin's position, so neighbouring bins learn together, and a hidden
  // layer that holds cos/sin of a value's phase puts a peak at that value.
  // Without it every one of the 1,024 bins learns alone from the few
  // targets near it.
  bool fourier_bins = false;
  // Diagnostic, changes no weight: how well a linear map (ridge regression
  // over the last 4,096 rows that answer an x, fitted on half and scored on
  // the other half) reads the object's x from the rows the region head
  // reads, logged as `readout-R2` (0: the rows say nothing of
  // where the object is; 1: all). It tells a region head that cannot read
  // from rows that hold nothing to read.
  bool readout_probe = false;

  double learning_rate = 1e-3;
  double min_learning_rate_fraction = 0.1;  // cosine ends at lr × this
  int warmup_steps = 100;
  double weight_decay = 0.01;
  double clip_norm = 1.0;
  LossOptions loss;
  ExampleOptions examples;  // how training sequences are laid out

  uint64_t seed = 1;  // initial weights and question draws
  uint64_t train_base_seed = 1000000;
  uint64_t eval_base_seed = 7;
  int eval_every = 200;  // steps; 0: never
  int eval_scenes = 4;
  int eval_max_tokens = 64;
  int checkpoint_every = 100;  // steps; 0: only at the end
  int log_every = 10;
};

// The size issue 14 proposes: vision 64 × 4 layers (2 heads, ff 256), text
// 128 × 4 layers (2 heads of 64), proj inner 256, region 128 / inner 256;
// the crop (378 / 14 → 729 tokens) and the tokenizer section (bos, eos,
// templates) of `base`, the tiny test model's config.
MoondreamConfig SceneModelConfig(const MoondreamConfig& base);

struct StepStats {
  int step = 0;  // after the step
  double loss = 0;
  Losses parts;  // summed over scenes, then averaged (no `total`)
  int sequences = 0;
  double learning_rate = 0;
  double grad_norm = 0;
  double seconds = 0;
  // Where the step's time went: scene generation and crops, the vision
  // encoder + projection, the text decoder + heads, backward + update.
  double data_seconds = 0, vision_seconds = 0, text_seconds = 0,
         backward_seconds = 0;
};

// The parameters of the vision tower and projection, and the training-only
// probes that read their output: what vision_lr_scale scales and
// init_vision_from loads.
bool IsVisionParameter(const std::string& name);

// How well the patch probes read held-out scenes' image tokens (each part
// 0 when its loss is off).
struct PatchProbeEval {
  double kind_loss = 0;  // PatchKindLoss, mean over scenes
  // Cells covered by a shape whose kind the probe's argmax names.
  double shape_cell_accuracy = 0;
  double box_loss = 0;     // PatchBoxLoss, mean over scenes
  double extent_loss = 0;  // PatchExtentLoss, mean over scenes
  double colour_loss = 0;  // the patch-colour loss, mean over scenes
  // Cells covered by a shape whose colour the colour probe names.
  double colour_cell_accuracy = 0;
};

// R² of a ridge regression of y [N] on x [N, F] (features standardised),
// fitted on the even rows and scored on the odd ones; 0 under 64 rows.
// The readout diagnostic's measure.
double HeldOutR2(const at::Tensor& x_NF, const at::Tensor& y_N);
// The same with the rows to fit and to score given (index tensors), e.g.
// whole scenes on each side, so that rows of one object never fall on both;
// 0 under 32 rows on either side.
double HeldOutR2(const at::Tensor& x_NF, const at::Tensor& y_N,
                 const at::Tensor& fit, const at::Tensor& test);

class Trainer {
 public:
  // Fresh weights, or the checkpoint in opts.out_dir when opts.resume.
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(TrainOptions opts);

  absl::StatusOr<StepStats> Step();
  // Mean held-out loss on scenes SceneSeed(base_seed, 0 .. count−1), all
  // their questions.
  absl::StatusOr<double> HeldOutLoss(uint64_t base_seed, int count);
  // The patch probes that are on, on scenes SceneSeed(base_seed,
  // 0 .. count−1), full size, all their crops.
  absl::StatusOr<PatchProbeEval> HeldOutPatchProbes(uint64_t base_seed,
                                                    int count);

  absl::Status SaveCheckpoint() const;
  // A complete model directory (written beside, then renamed into place).
  absl::Status WriteModelDirectory(const std::string& dir) const;
  // The whole run: steps with progress lines, evaluations, checkpoints,
  // and the final model directory.
  absl::Status Run();

  int step() const { return step_; }
  // The model as served (center_region_head folded in).
  Weights weights() const { return ServedWeights(); }
  const MoondreamConfig& config() const { return opts_.config; }
  std::string checkpoint_path() const;
  std::string model_dir() const;
  // Whether the run writes model_dir(): not a vision-only stage from
  // scratch, whose decoder is still noise; one that started from a model
  // directory (init_from) writes its tower on the decoder it started from,
  // for feature-probe and the next stage's init_from.
  bool WritesModelDirectory() const {
    return !opts_.vision_only || !opts_.init_from.empty();
  }

 private:
  explicit Trainer(TrainOptions opts, Tokenizer tokenizer);
  absl::Status InitWeights();
  void AddProbes(at::Generator& gen);
  void MakeOptimizer();
  absl::Status LoadCheckpoint();
  // A checkpoint.pt, or a model directory (LoadVisionFromModel).
  absl::Status LoadVisionFrom(const std::string& source);
  absl::Status LoadVisionFromModel(const std::string& model_dir);
  absl::Status LoadModelFrom(const std::string& model_dir);
  // init_from's model's config: this run's, or with grow_vision or
  // grow_text the directory's, checked to differ in the layers that may
  // grow alone.
  absl::StatusOr<MoondreamConfig> SourceConfig(
      const std::string& model_dir) const;
  // The trainable parameter of this name; throws when there is none (for
  // loaders, which run inside CatchTorchStatus).
  at::Tensor& Parameter(const std::string& name);
  // Zeroes a block's attention and MLP output projections (grow_vision,
  // grow_text).
  void ZeroResidualOutputs(const std::string& block);
  double LearningRate(int step) const;
  std::vector<Sequence> ChooseSequences(const SceneExample& example,
                                        uint64_t scene_index) const;
  absl::Status Evaluate();
  // TrainOptions::vision_only's work on one scene: forward, backward, and
  // the loss added to `stats` and `sum`.
  absl::Status VisionOnlyScene(const scenes::Scene& scene, StepStats& stats,
                               Losses& sum);

  TrainOptions opts_;
  Tokenizer tokenizer_;
  Weights weights_;
  std::vector<std::pair<std::string, at::Tensor>> params_;
  RotaryTable rotary_;
  // LossOptions::position_weight's probe (training only; undefined when off).
  LinearWeights position_probe_;
  // LossOptions::patch_kind_weight's probe (training only).
  LinearWeights patch_kind_probe_;
  // LossOptions::patch_box_weight's probe (training only).
  LinearWeights patch_box_probe_;
  // LossOptions::patch_extent_weight's probe (training only).
  LinearWeights patch_extent_probe_;
  // LossOptions::patch_colour_weight's probe (training only).
  LinearWeights patch_colour_probe_;
  // LossOptions::head_patch_weight's probes (training only; not vision
  // parameters: they read the text decoder).
  LinearWeights head_kind_probe_, head_colour_probe_, head_box_probe_;
  // LossOptions::prefix_rank_weight's probes (training only).
  LinearWeights kind_rank_probe_, pair_rank_probe_;
  // LossOptions::row_box_weight's probe (training only).
  LinearWeights row_box_probe_;
  // LossOptions::row_extent_weight's probe (training only).
  LinearWeights row_extent_probe_;
  // LossOptions::row_centre_weight's probe (training only).
  LinearWeights row_centre_probe_;
  // Per optimizer group: its learning rate over the schedule's.
  std::vector<double> group_lr_scale_;
  // The weighted patch-kind, -colour and -box losses of one image's tokens
  // (zero when all are off); their values go into `losses`.
  at::Tensor PatchLosses(const at::Tensor& image_PC, const PatchTruth& truth,
                         Losses& losses) const;
  // The weighted row-box, row-extent and row-centre losses of one scene's
  // final rows (zero when all are off); their values go into `losses`.
  at::Tensor RowLosses(const at::Tensor& rows_BTC,
                       absl::Span<const Sequence> sequences,
                       Losses& losses) const;
  // The weighted prefix-rank loss on the decoder's taps.
  at::Tensor PrefixRankLoss(const FocusTaps& taps, const PatchTruth& truth,
                            Losses& losses) const;
  // The weighted head-patch loss on the decoder's taps.
  at::Tensor HeadPatchLoss(const FocusTaps& taps, const PatchTruth& truth,
                           Losses& losses) const;
  // readout_probe: the last 4,096 rows that answer an x (detached), what
  // the focus head gathered there (when the taps are on) and their target
  // values; R² of a ridge regression on each, fitted on half and scored on
  // the other half: {rows, head}.
  void RecordReadout(const at::Tensor& rows_BTC, const FocusTaps& taps,
                     absl::Span<const Sequence> sequences);
  std::pair<double, double> ReadoutR2() const;
  struct Readout {
    at::Tensor rows_NC, head_ND, values_N;
  } readout_;
  bool VisionFrozen() const { return opts_.vision_lr_scale == 0; }
  // center_region_head's running mean of the rows the region heads read
  // (undefined until the first step): the trainable fc1s act on
  // hidden − mean.
  at::Tensor region_rows_mean_C_;
  // Set by LoadModelFrom: the loaded fc1 biases already hold −W·mean, and the
  // first mean measured is added back to them (UpdateRowStats).
  bool unfold_region_mean_ = false;
  // Steps the --init-from model had behind it (its metadata "step"): the
  // written model's "step" is these plus step_.
  int64_t steps_before_ = 0;
  void UpdateRowStats(const at::Tensor& rows_BTC,
                      absl::Span<const Sequence> sequences);
  // weights_ with center_region_head's mean folded into the heads' biases:
  // the model as served (differentiable in the trainable weights).
  Weights ServedWeights() const;
  std::unique_ptr<torch::optim::AdamW> optimizer_;
  int step_ = 0;
};

}  // namespace md::train

#endif  // MOONDREAM_TOOLS_TRAIN_TRAINER_H_
