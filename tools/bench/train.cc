#include "tools/bench/train.h"

#include <cstdio>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/paths.h"
#include "base/status_macros.h"
#include "model/config/config.h"
#include "model/net/moondream.h"
#include "tools/bench/flags.h"
#include "tools/train/trainer.h"

namespace md::bench {
namespace {

// The tiny test model's config gives the tokenizer section (bos, eos,
// templates for its cut 2,048-token GPT-2 vocabulary); its tokenizer is the
// one copied in.
constexpr char kBaseModel[] = "models/tiny-random";

struct Flags {
  std::string out_dir;
  std::string base_dir = kBaseModel;
  std::string config_path;
  bool resume = false;
  int steps = 1000;
  int stop_after = 0;
  int scenes_per_step = 2;
  int sequences_per_scene = 0;
  int scene_cycle = 0;
  int max_shapes = scenes::kMaxShapes;
  double wide_share = 0;
  double wide_aspect = 1.5;
  bool sincos_positions = false;
  bool mimetic_attention = false;
  bool vision_only = false;
  double vision_lr_scale = 1.0;
  int vision_only_side = 0;
  double patch_box_weight = 0;
  double patch_extent_weight = 0;
  double patch_colour_weight = 0;
  double head_patch_weight = 0;
  double prefix_rank_weight = 0;
  double row_box_weight = 0;
  double row_extent_weight = 0;
  double row_centre_weight = 0;
  bool balance_stops = false;
  double stop_weight = 1;
  bool focus_spread = false;
  bool focus_sink = false;
  bool free_region_stop = false;
  double answered_weight = 0;
  bool focus_coverage = false;
  int several_repeats = 1;
  bool any_order = false;
  double fed_jitter = 0;
  double fed_size_jitter = 0;
  double row_norm_weight = 0;
  bool centre_gradient = false;
  double row_norm_limit = 24;
  std::string init_vision_from;
  std::string init_from;
  bool grow_vision = false;
  bool grow_text = false;
  std::string reinit;
  bool center_region_head = false;
  bool fourier_bins = false;
  bool readout_probe = false;
  double lr = 1e-3;
  double min_lr_fraction = 0.1;
  int warmup = 100;
  double weight_decay = 0.01;
  double clip = 1.0;
  double bin_sigma = 1.0;
  double focus_weight = 0;
  double position_weight = 0;
  double patch_kind_weight = 0;
  int seed = 1;
  int train_base_seed = 1000000;
  int eval_seed = 7;
  int eval_every = 200;
  int eval_scenes = 4;
  int checkpoint_every = 100;
  int log_every = 10;
  int threads = static_cast<int>(std::thread::hardware_concurrency());
};

absl::StatusOr<Flags> ParseFlags(const std::vector<std::string>& args,
                                 bool* help) {
  Flags f;
  FlagParser p(
      "train",
      "Trains a tiny Moondream (vision 64 x 4, text 128 x 4) from scratch on\n"
      "synthetic shape scenes (issue 14), fp32 on the CPU, and writes\n"
      "OUT/model (serve it with --model=OUT/model; score it with\n"
      "`moondream-bench scenes-eval --model=OUT/model`). OUT/checkpoint.pt\n"
      "is written every --checkpoint-every steps; --resume goes on from it.");
  p.AddString("out", &f.out_dir, "output directory (required)");
  p.AddBool("resume", &f.resume, "go on from OUT/checkpoint.pt");
  p.AddString("base", &f.base_dir,
              "model directory whose tokenizer.json and config templates "
              "the trained model uses");
  p.AddString("config", &f.config_path,
              "config.json with the full model shape (default: issue 14's "
              "size over --base's config)");
  p.AddInt("steps", &f.steps, "total optimizer steps");
  p.AddInt("stop-after", &f.stop_after,
           "stop after this step, with a checkpoint (0: at --steps); resume "
           "later, e.g. with another --bin-sigma");
  p.AddInt("scenes-per-step", &f.scenes_per_step, "scenes in each step");
  p.AddInt("sequences-per-scene", &f.sequences_per_scene,
           "questions per scene and step (0: all)");
  p.AddInt("scene-cycle", &f.scene_cycle,
           "train on scenes 0..N-1 over and over (0: always new; 1: overfit "
           "one scene, a debugging aid)");
  p.AddInt("max-shapes", &f.max_shapes,
           "training scenes keep at most this many shapes (1-4; a curriculum "
           "starts low, then resumes higher)");
  p.AddDouble("wide-scenes", &f.wide_share,
              "share of training scenes (0-1) drawn again until their aspect "
              "(longer side / shorter) is at least --wide-aspect");
  p.AddDouble("wide-aspect", &f.wide_aspect,
              "the aspect --wide-scenes draws to (1 to 2.5)");
  p.AddBool("center-region-head", &f.center_region_head,
            "precondition the region head: its first layers see the rows "
            "less their running mean (folded into the bias when written)");
  p.AddBool("fourier-bins", &f.fourier_bins,
            "start the coordinate/size decoders' last layers as a Fourier "
            "basis over the bins (fresh runs)");
  p.AddBool("readout-probe", &f.readout_probe,
            "diagnostic: log how well a linear map (ridge regression, no "
            "effect on the model) reads the coordinate targets from the "
            "rows the region head reads (R2)");
  p.AddBool("sincos-positions", &f.sincos_positions,
            "start the vision position embedding as 2-D sine-cosine "
            "features (a fresh run only)");
  p.AddBool("mimetic-attention", &f.mimetic_attention,
            "start the vision attention layers with the mimetic "
            "initialisation (query-key ~ identity, value-output ~ minus "
            "identity; a fresh run only)");
  p.AddBool("vision-only", &f.vision_only,
            "train only the vision tower and projection on the patch "
            "losses, on scenes shrunk to one crop (a first stage; needs "
            "--patch-kind-, --patch-colour-, --patch-box- or "
            "--patch-extent-weight)");
  p.AddInt("vision-only-side", &f.vision_only_side,
           "--vision-only scenes are shrunk to this longer side (0: one "
           "crop, 2 crops each; 768: full size)");
  p.AddDouble("vision-lr-scale", &f.vision_lr_scale,
              "the vision tower's learning rate over the schedule's (0 "
              "freezes it: no graph through it, patch losses off)");
  p.AddDouble("patch-box-weight", &f.patch_box_weight,
              "training-only loss: a linear probe reads the box of the "
              "shape covering each image token's cell (0: off)");
  p.AddDouble("patch-extent-weight", &f.patch_extent_weight,
              "training-only loss: a linear probe reads log width and "
              "height of the shape covering each image token's cell (0: "
              "off)");
  p.AddDouble("patch-colour-weight", &f.patch_colour_weight,
              "training-only loss: a linear probe tells the colour of the "
              "shape covering each image token's cell (0: off)");
  p.AddDouble("head-patch-weight", &f.head_patch_weight,
              "training-only loss: linear probes read each cell's kind, "
              "colour and box from the last text layer's first head's "
              "values (0: off)");
  p.AddDouble("prefix-rank-weight", &f.prefix_rank_weight,
              "training-only loss: linear probes read from each image "
              "token's input to the last text layer the left-to-right rank "
              "of its shape among those of its kind, and of its kind and "
              "colour (0: off)");
  p.AddDouble("row-box-weight", &f.row_box_weight,
              "training-only loss: a linear probe reads from each row the "
              "region head reads the value it answers (0: off)");
  p.AddDouble("row-extent-weight", &f.row_extent_weight,
              "training-only loss: a linear probe (starting at zero) reads "
              "the log width and height from each size row (0: off)");
  p.AddDouble("row-centre-weight", &f.row_centre_weight,
              "training-only loss: a linear probe (starting at zero) reads "
              "the x or y from each coordinate row (0: off)");
  p.AddBool("balance-stops", &f.balance_stops,
            "weight the region rows that stop (eos) and those that go on "
            "alike");
  p.AddDouble("stop-weight", &f.stop_weight,
              "each region stop row's loss x this (1: as any other row)");
  p.AddString("reinit", &f.reinit,
              "with --resume: comma-separated parameter name prefixes (e.g. "
              "model.text.blocks.3.mlp) that start from fresh values; the "
              "optimizer state starts anew");
  p.AddString("init-vision-from", &f.init_vision_from,
              "a fresh run starts its vision tower, projection and "
              "patch probes from this checkpoint.pt (e.g. a "
              "--vision-only run's), or its tower and projection from this "
              "model directory (e.g. a shipped one)");
  p.AddString("init-from", &f.init_from,
              "a fresh run starts every model weight from this model "
              "directory (e.g. a shipped one); probes, the optimizer and the "
              "schedule start anew");
  p.AddBool("grow-vision", &f.grow_vision,
            "with --init-from: the directory's model may have fewer vision "
            "layers than --config; the layers it lacks are appended as "
            "blocks that start adding nothing");
  p.AddBool("grow-text", &f.grow_text,
            "with --init-from: the directory's model may have fewer text "
            "layers than --config; the layers it lacks are inserted before "
            "its last one as blocks that start adding nothing");
  p.AddDouble("lr", &f.lr, "peak learning rate (AdamW)");
  p.AddDouble("min-lr-fraction", &f.min_lr_fraction,
              "the cosine schedule ends at lr x this");
  p.AddInt("warmup", &f.warmup, "linear warmup steps");
  p.AddDouble("weight-decay", &f.weight_decay, "AdamW weight decay");
  p.AddDouble("clip", &f.clip, "gradient norm clip");
  p.AddDouble("bin-sigma", &f.bin_sigma,
              "coordinate/size targets: Gaussian of this many bins (0: one)");
  p.AddDouble("position-weight", &f.position_weight,
              "training-only loss: a linear probe reads each image token's "
              "position from that head's values (0: off)");
  p.AddDouble("patch-kind-weight", &f.patch_kind_weight,
              "training-only loss: a linear probe tells each image token's "
              "shape kind (or background) from its embedding (0: off)");
  p.AddDouble("focus-weight", &f.focus_weight,
              "training-only loss: the last layer's first head attends to "
              "the shapes each answer is about (0: off)");
  p.AddBool("focus-spread", &f.focus_spread,
            "the focus loss asks for the mass spread evenly over the "
            "shapes' cells (KL), not just there");
  p.AddBool("centre-gradient", &f.centre_gradient,
            "the region decoders' losses reach their rows less the rows' "
            "mean gradient (with --center-region-head: keeps the rows' "
            "common part from drifting)");
  p.AddDouble("row-norm-weight", &f.row_norm_weight,
              "training-only loss: max(0, log(rms / limit)) of each target "
              "row's final hidden state (0: off)");
  p.AddDouble("row-norm-limit", &f.row_norm_limit,
              "the rms below which --row-norm-weight leaves a row alone");
  p.AddBool("focus-sink", &f.focus_sink,
            "rows that decide how many (a count, a caption's separators "
            "and end, a detection's stop) attend to bos and the shapes not "
            "yet answered, in equal shares");
  p.AddBool("free-region-stop", &f.free_region_stop,
            "(with --focus-sink) a detect's or point's stop row gets no "
            "focus target; the other rows that decide how many keep theirs");
  p.AddDouble("answered-weight", &f.answered_weight,
              "training-only loss: the first head of the layer before the "
              "last attends, on a detect's or point's rows that start a "
              "later object and on its stop row, to the shapes answered so "
              "far (0: off)");
  p.AddBool("focus-coverage", &f.focus_coverage,
            "(with --focus-spread) a detect's or point's coordinate and size "
            "rows attend to every cell their shape overlaps, in shares of "
            "its area there (its centroid), not evenly to the cells whose "
            "centre it covers");
  p.AddInt("several-repeats", &f.several_repeats,
           "train each detect or point question that asks for two or more "
           "shapes this many times per scene (1-8)");
  p.AddBool("any-order", &f.any_order,
            "a detect or point question that asks for several shapes "
            "answers them in a drawn order, and each object's first row "
            "accepts (and attends to) every shape not yet answered");
  p.AddDouble("fed-jitter", &f.fed_jitter,
              "a detect's or point's rows are fed coordinates off the truth "
              "by a normal error of this many image fractions (as the "
              "model's own answers are; targets stay true; 0: exact)");
  p.AddDouble("fed-size-jitter", &f.fed_size_jitter,
              "... and sizes scaled by exp of a normal error of this");
  p.AddInt("seed", &f.seed, "initial weights and question draws");
  p.AddInt("train-seed", &f.train_base_seed,
           "base seed of the training scenes (keep it far from eval seeds)");
  p.AddInt("eval-seed", &f.eval_seed, "base seed of the held-out scenes");
  p.AddInt("eval-every", &f.eval_every, "steps between evaluations (0: none)");
  p.AddInt("eval-scenes", &f.eval_scenes, "held-out scenes per evaluation");
  p.AddInt("checkpoint-every", &f.checkpoint_every,
           "steps between checkpoints (0: only at the end)");
  p.AddInt("log-every", &f.log_every, "steps between progress lines");
  p.AddInt("threads", &f.threads, "intra-op compute threads");
  RETURN_IF_ERROR(p.Parse(args));
  *help = p.help_requested();
  if (*help) {
    std::printf("%s", p.Usage().c_str());
    return f;
  }
  if (f.out_dir.empty()) return absl::InvalidArgumentError("--out is required");
  if (f.threads < 1 || f.seed < 0 || f.train_base_seed < 0 || f.eval_seed < 0 ||
      f.eval_scenes < 0 || f.warmup < 0 || f.stop_after < 0 ||
      f.max_shapes < scenes::kMinShapes || f.max_shapes > scenes::kMaxShapes) {
    return absl::InvalidArgumentError(
        "--threads must be >= 1; seeds, --eval-scenes, --warmup and "
        "--stop-after >= 0; --max-shapes in [1, 4]");
  }
  if (!(f.wide_share >= 0 && f.wide_share <= 1) || !(f.wide_aspect >= 1) ||
      f.wide_aspect > 2.5) {
    return absl::InvalidArgumentError(
        "--wide-scenes must be in [0, 1] and --wide-aspect in [1, 2.5] (the "
        "specification's sides, 256 to 768 px, allow at most 3)");
  }
  if (!f.reinit.empty() && !f.resume) {
    return absl::InvalidArgumentError("--reinit needs --resume");
  }
  if (f.row_norm_weight < 0 || !(f.row_norm_limit > 0)) {
    return absl::InvalidArgumentError(
        "--row-norm-weight must be >= 0 and --row-norm-limit > 0");
  }
  f.out_dir = ExpandUser(f.out_dir);
  f.base_dir = ResolveModelFlag(f.base_dir, kBaseModel);
  f.config_path = ExpandUser(f.config_path);
  f.init_vision_from = ExpandUser(f.init_vision_from);
  f.init_from = ExpandUser(f.init_from);
  if (!f.init_from.empty() && !f.init_vision_from.empty()) {
    return absl::InvalidArgumentError(
        "--init-from and --init-vision-from exclude each other");
  }
  if ((f.grow_vision || f.grow_text) && f.init_from.empty()) {
    return absl::InvalidArgumentError(
        "--grow-vision and --grow-text need --init-from");
  }
  return f;
}

absl::StatusOr<train::TrainOptions> ToOptions(const Flags& f) {
  train::TrainOptions o;
  o.out_dir = f.out_dir;
  o.tokenizer_path = f.base_dir + "/tokenizer.json";
  ASSIGN_OR_RETURN(MoondreamConfig defaults, PresetConfig("moondream2"));
  if (!f.config_path.empty()) {
    ASSIGN_OR_RETURN(o.config, LoadConfigFile(f.config_path, defaults));
  } else {
    ASSIGN_OR_RETURN(MoondreamConfig base,
                     LoadConfigFile(f.base_dir + "/config.json", defaults));
    o.config = train::SceneModelConfig(base);
  }
  o.resume = f.resume;
  o.steps = f.steps;
  o.stop_after = f.stop_after;
  o.scenes_per_step = f.scenes_per_step;
  o.sequences_per_scene = f.sequences_per_scene;
  o.scene_cycle = f.scene_cycle;
  o.max_shapes = f.max_shapes;
  o.wide_share = f.wide_share;
  o.wide_min_aspect = f.wide_aspect;
  o.sincos_positions = f.sincos_positions;
  o.mimetic_attention = f.mimetic_attention;
  o.vision_only = f.vision_only;
  o.vision_lr_scale = f.vision_lr_scale;
  o.vision_only_max_side = f.vision_only_side;
  o.loss.patch_box_weight = f.patch_box_weight;
  o.loss.patch_extent_weight = f.patch_extent_weight;
  o.loss.patch_colour_weight = f.patch_colour_weight;
  o.loss.head_patch_weight = f.head_patch_weight;
  o.loss.prefix_rank_weight = f.prefix_rank_weight;
  o.loss.row_box_weight = f.row_box_weight;
  o.loss.row_extent_weight = f.row_extent_weight;
  o.loss.row_centre_weight = f.row_centre_weight;
  o.loss.balance_stops = f.balance_stops;
  o.loss.stop_weight = f.stop_weight;
  o.loss.focus_spread = f.focus_spread;
  o.examples.focus_sink = f.focus_sink;
  o.examples.focus_coverage = f.focus_coverage;
  o.examples.several_repeats = f.several_repeats;
  o.examples.any_order = f.any_order;
  o.examples.free_region_stop = f.free_region_stop;
  o.loss.answered_weight = f.answered_weight;
  o.examples.fed_jitter = f.fed_jitter;
  o.examples.fed_size_jitter = f.fed_size_jitter;
  o.loss.row_norm_weight = f.row_norm_weight;
  o.loss.centre_gradient = f.centre_gradient;
  o.loss.row_norm_limit = f.row_norm_limit;
  o.init_vision_from = f.init_vision_from;
  o.init_from = f.init_from;
  o.grow_vision = f.grow_vision;
  o.grow_text = f.grow_text;
  for (absl::string_view prefix :
       absl::StrSplit(f.reinit, ',', absl::SkipEmpty())) {
    o.reinit_prefixes.emplace_back(prefix);
  }
  o.center_region_head = f.center_region_head;
  o.fourier_bins = f.fourier_bins;
  o.readout_probe = f.readout_probe;
  o.learning_rate = f.lr;
  o.min_learning_rate_fraction = f.min_lr_fraction;
  o.warmup_steps = f.warmup;
  o.weight_decay = f.weight_decay;
  o.clip_norm = f.clip;
  o.loss.bin_sigma = f.bin_sigma;
  o.loss.focus_weight = f.focus_weight;
  o.loss.position_weight = f.position_weight;
  o.loss.patch_kind_weight = f.patch_kind_weight;
  o.seed = static_cast<uint64_t>(f.seed);
  o.train_base_seed = static_cast<uint64_t>(f.train_base_seed);
  o.eval_base_seed = static_cast<uint64_t>(f.eval_seed);
  o.eval_every = f.eval_every;
  o.eval_scenes = f.eval_scenes;
  o.checkpoint_every = f.checkpoint_every;
  o.log_every = f.log_every;
  return o;
}

}  // namespace

absl::Status RunTrain(const std::vector<std::string>& args) {
  bool help = false;
  ASSIGN_OR_RETURN(Flags flags, ParseFlags(args, &help));
  if (help) return absl::OkStatus();
  ASSIGN_OR_RETURN(train::TrainOptions opts, ToOptions(flags));
  SetComputeThreads(flags.threads);
  ASSIGN_OR_RETURN(std::unique_ptr<train::Trainer> trainer,
                   train::Trainer::Create(opts));
  const MoondreamConfig& c = trainer->config();
  std::printf(
      "train: text %d x %d, vision %d x %d, vocab %d, %.1f MB fp32; step "
      "%d/%d, %d scenes/step, %d threads, out %s\n",
      c.text.dim, c.text.n_layers, c.vision.enc_dim, c.vision.enc_n_layers,
      c.text.vocab_size, WeightBytes(c, trainer->weights()) / 1e6,
      trainer->step(), opts.steps, opts.scenes_per_step, flags.threads,
      opts.out_dir.c_str());
  std::fflush(stdout);
  return trainer->Run();
}

}  // namespace md::bench
