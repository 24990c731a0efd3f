// The trainer's training-only probes and diagnostics (trainer.h): the
// patch and head-patch losses, their held-out evaluation, and the readout
// diagnostic. None of them is part of the served model.
#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "base/status_macros.h"
#include "model/io/tensor_io.h"
#include "model/net/layers.h"
#include "tools/scenes/random.h"
#include "tools/train/trainer.h"

namespace md::train {

// Training-only probes (saved in checkpoints, never in the model), drawn
// from `gen` after the model's own initialisation.
void Trainer::AddProbes(at::Generator& gen) {
  auto add = [&](const std::string& name, LinearWeights& probe, int64_t rows,
                 int64_t dim, at::Tensor bias) {
    probe.weight =
        at::randn({rows, dim}, gen) / std::sqrt(static_cast<double>(dim));
    probe.bias = std::move(bias);
    params_.emplace_back("train_only." + name + ".weight", probe.weight);
    params_.emplace_back("train_only." + name + ".bias", probe.bias);
  };
  const int64_t dim = opts_.config.text.dim;
  if (opts_.loss.position_weight > 0) {
    add("position_probe", position_probe_, 2, dim / opts_.config.text.n_heads,
        at::full({2}, 0.5));
  }
  if (opts_.loss.patch_kind_weight > 0) {
    const int64_t classes = 1 + scenes::kAllKinds.size();
    add("patch_kind_probe", patch_kind_probe_, classes, dim,
        at::zeros({classes}));
  }
  const at::Tensor typical_box = at::tensor({0.5f, 0.5f, 0.25f, 0.25f});
  if (opts_.loss.patch_box_weight > 0) {
    add("patch_box_probe", patch_box_probe_, 4, dim, typical_box.clone());
  }
  if (opts_.loss.patch_extent_weight > 0) {
    add("patch_extent_probe", patch_extent_probe_, 2, dim,
        at::full({2}, std::log(0.25)));
  }
  if (opts_.loss.patch_colour_weight > 0) {
    const int64_t classes = 1 + scenes::kAllColours.size();
    add("patch_colour_probe", patch_colour_probe_, classes, dim,
        at::zeros({classes}));
  }
  if (opts_.loss.head_patch_weight > 0) {
    const int64_t head_dim = dim / opts_.config.text.n_heads;
    const int64_t kinds = 1 + scenes::kAllKinds.size();
    const int64_t colours = 1 + scenes::kAllColours.size();
    add("head_kind_probe", head_kind_probe_, kinds, head_dim,
        at::zeros({kinds}));
    add("head_colour_probe", head_colour_probe_, colours, head_dim,
        at::zeros({colours}));
    add("head_box_probe", head_box_probe_, 4, head_dim, typical_box.clone());
  }
  if (opts_.loss.prefix_rank_weight > 0) {
    // Background and the four ranks a scene of up to four shapes has.
    const int64_t ranks = 1 + scenes::kMaxShapes;
    add("kind_rank_probe", kind_rank_probe_, ranks, dim, at::zeros({ranks}));
    add("pair_rank_probe", pair_rank_probe_, ranks, dim, at::zeros({ranks}));
    // Zero weights, as the row-extent probe's: a trained decoder feels
    // nothing until the probes have learnt what its tokens already say.
    at::NoGradGuard no_grad;
    kind_rank_probe_.weight.zero_();
    pair_rank_probe_.weight.zero_();
  }
  if (opts_.loss.row_box_weight > 0) {
    add("row_box_probe", row_box_probe_, 4, dim, typical_box.clone());
  }
  if (opts_.loss.row_extent_weight > 0) {
    // Zero weights: the decoder feels nothing until the probe has learnt
    // what the rows already say (a random probe's first gradients would
    // push noise into a trained decoder).
    add("row_extent_probe", row_extent_probe_, 2, dim,
        at::full({2}, std::log(0.25)));
    at::NoGradGuard no_grad;
    row_extent_probe_.weight.zero_();
  }
  if (opts_.loss.row_centre_weight > 0) {
    // Zero weights, as the row-extent probe's.
    add("row_centre_probe", row_centre_probe_, 2, dim, at::full({2}, 0.5));
    at::NoGradGuard no_grad;
    row_centre_probe_.weight.zero_();
  }
}

namespace {

// total + weight × loss, with the unweighted loss logged.
at::Tensor AddWeighted(const at::Tensor& total, double weight,
                       const at::Tensor& loss, double& logged) {
  logged = loss.item<double>();
  return total + weight * loss;
}

}  // namespace

at::Tensor Trainer::PatchLosses(const at::Tensor& image_PC,
                                const PatchTruth& truth, Losses& losses) const {
  const LossOptions& o = opts_.loss;
  at::Tensor total = at::zeros({}, image_PC.options());
  if (o.patch_kind_weight > 0) {
    total =
        AddWeighted(total, o.patch_kind_weight,
                    PatchClassLoss(image_PC, truth.kinds, patch_kind_probe_),
                    losses.patch_kind);
  }
  if (o.patch_colour_weight > 0) {
    total = AddWeighted(
        total, o.patch_colour_weight,
        PatchClassLoss(image_PC, truth.colours, patch_colour_probe_),
        losses.patch_colour);
  }
  if (o.patch_box_weight > 0) {
    total = AddWeighted(
        total, o.patch_box_weight,
        PatchBoxLoss(image_PC, truth.kinds, truth.boxes, patch_box_probe_),
        losses.patch_box);
  }
  if (o.patch_extent_weight > 0) {
    total = AddWeighted(total, o.patch_extent_weight,
                        PatchExtentLoss(image_PC, truth.kinds, truth.boxes,
                                        patch_extent_probe_),
                        losses.patch_extent);
  }
  return total;
}

at::Tensor Trainer::RowLosses(const at::Tensor& rows_BTC,
                              absl::Span<const Sequence> sequences,
                              Losses& losses) const {
  const LossOptions& o = opts_.loss;
  const RegionConfig& region = opts_.config.region;
  const int coordinate_bins = static_cast<int>(region.coord_out_dim);
  const int size_bins = static_cast<int>(region.size_out_dim / 2);
  at::Tensor total = at::zeros({}, rows_BTC.options());
  if (o.row_box_weight > 0) {
    total = AddWeighted(total, o.row_box_weight,
                        RowBoxLoss(rows_BTC, sequences, coordinate_bins,
                                   size_bins, row_box_probe_),
                        losses.row_box);
  }
  if (o.row_extent_weight > 0) {
    total = AddWeighted(
        total, o.row_extent_weight,
        RowExtentLoss(rows_BTC, sequences, size_bins, row_extent_probe_),
        losses.row_extent);
  }
  if (o.row_centre_weight > 0) {
    total = AddWeighted(
        total, o.row_centre_weight,
        RowCentreLoss(rows_BTC, sequences, coordinate_bins, row_centre_probe_),
        losses.row_centre);
  }
  return total;
}

namespace {

// A prefix tap's rows of the image tokens, one per grid cell of `truth`
// (the prefix's first row is bos's).
at::Tensor ImageTokenRows(const at::Tensor& prefix_PX,
                          const PatchTruth& truth) {
  return prefix_PX.narrow(0, 1, static_cast<int64_t>(truth.kinds.size()));
}

}  // namespace

at::Tensor Trainer::HeadPatchLoss(const FocusTaps& taps,
                                  const PatchTruth& truth,
                                  Losses& losses) const {
  const at::Tensor values_PD = ImageTokenRows(taps.values_PD, truth);
  const at::Tensor loss =
      PatchClassLoss(values_PD, truth.kinds, head_kind_probe_) +
      PatchClassLoss(values_PD, truth.colours, head_colour_probe_) +
      PatchBoxLoss(values_PD, truth.kinds, truth.boxes, head_box_probe_);
  losses.head_patch = loss.item<double>();
  return opts_.loss.head_patch_weight * loss;
}

at::Tensor Trainer::PrefixRankLoss(const FocusTaps& taps,
                                   const PatchTruth& truth,
                                   Losses& losses) const {
  const at::Tensor image_PC = ImageTokenRows(taps.last_input_PC, truth);
  const at::Tensor loss =
      PatchClassLoss(image_PC, truth.kind_ranks, kind_rank_probe_) +
      PatchClassLoss(image_PC, truth.pair_ranks, pair_rank_probe_);
  losses.prefix_rank = loss.item<double>();
  return opts_.loss.prefix_rank_weight * loss;
}

absl::StatusOr<PatchProbeEval> Trainer::HeldOutPatchProbes(uint64_t base_seed,
                                                           int count) {
  PatchProbeEval eval;
  int shape_cells = 0, kinds_right = 0, colours_right = 0;
  const VisionConfig& v = opts_.config.vision;
  for (int i = 0; i < count; ++i) {
    const scenes::Scene scene = scenes::GenerateScene(
        scenes::SceneSeed(base_seed, static_cast<uint64_t>(i)));
    ASSIGN_OR_RETURN(ImageCrops crops, SceneCrops(scene, v));
    const int grid = static_cast<int>(v.grid());
    const PatchTruth truth = ScenePatchTruth(scene, grid);
    RETURN_IF_ERROR(CatchTorchStatus("held-out patch probes", [&] {
      at::NoGradGuard no_grad;
      const at::Tensor image_PC = ImageEmbedding(crops, weights_, v);
      Losses losses;
      PatchLosses(image_PC, truth, losses);
      eval.kind_loss += losses.patch_kind / count;
      eval.colour_loss += losses.patch_colour / count;
      eval.box_loss += losses.patch_box / count;
      eval.extent_loss += losses.patch_extent / count;
      // Shape cells whose label the probe's argmax names.
      auto tally = [&](const LinearWeights& probe,
                       const std::vector<int>& labels, int& right) {
        const at::Tensor guess_P = Linear(image_PC, probe).argmax(1);
        for (size_t p = 0; p < labels.size(); ++p) {
          if (labels[p] == 0) continue;
          right +=
              guess_P[static_cast<int64_t>(p)].item<int64_t>() == labels[p];
        }
      };
      for (int label : truth.kinds) shape_cells += label > 0;
      if (opts_.loss.patch_kind_weight > 0) {
        tally(patch_kind_probe_, truth.kinds, kinds_right);
      }
      if (opts_.loss.patch_colour_weight > 0) {
        tally(patch_colour_probe_, truth.colours, colours_right);
      }
    }));
  }
  if (shape_cells > 0) {
    eval.shape_cell_accuracy = static_cast<double>(kinds_right) / shape_cells;
    eval.colour_cell_accuracy =
        static_cast<double>(colours_right) / shape_cells;
  }
  return eval;
}

namespace {

// Appends `more` to `kept` and keeps its last `keep` rows.
void KeepLast(at::Tensor& kept, const at::Tensor& more, int64_t keep) {
  kept = kept.defined() ? at::cat({kept, more}) : more;
  if (kept.size(0) > keep) kept = kept.narrow(0, kept.size(0) - keep, keep);
}

}  // namespace

double HeldOutR2(const at::Tensor& x_NF, const at::Tensor& y_N) {
  if (!x_NF.defined() || x_NF.size(0) < 64) return 0;
  const int64_t n = x_NF.size(0);
  return HeldOutR2(x_NF, y_N, at::arange(0, n, 2), at::arange(1, n, 2));
}

double HeldOutR2(const at::Tensor& x_NF, const at::Tensor& y_N,
                 const at::Tensor& fit, const at::Tensor& test) {
  if (!x_NF.defined() || fit.numel() < 32 || test.numel() < 32) return 0;
  at::NoGradGuard no_grad;
  const at::Tensor x = x_NF.to(at::kDouble), y = y_N.to(at::kDouble);
  const at::Tensor mean_F = x.index_select(0, fit).mean(0);
  // Standardised features: the residual stream's directions differ in
  // scale by orders of magnitude, and a ridge on raw ones is dominated by
  // the largest.
  const at::Tensor scale_F =
      x.index_select(0, fit).std(0).clamp_min(1e-6).reciprocal();
  const double y_mean = y.index_select(0, fit).mean().item<double>();
  auto centred = [&](const at::Tensor& idx) {
    return (x.index_select(0, idx) - mean_F) * scale_F;
  };
  const at::Tensor a_NF = centred(fit);
  const at::Tensor gram_FF = at::matmul(a_NF.t(), a_NF);
  const double ridge = 1e-3 * gram_FF.diagonal().mean().item<double>() + 1e-9;
  const at::Tensor w_F = at::linalg_solve(
      gram_FF + ridge * at::eye(gram_FF.size(0), gram_FF.options()),
      at::matmul(a_NF.t(), y.index_select(0, fit) - y_mean));
  const at::Tensor y_test = y.index_select(0, test);
  const at::Tensor guess = at::matmul(centred(test), w_F) + y_mean;
  const double residual = (guess - y_test).pow(2).mean().item<double>();
  const double variance = (y_test - y_test.mean()).pow(2).mean().item<double>();
  return variance > 0 ? 1 - residual / variance : 0;
}

void Trainer::RecordReadout(const at::Tensor& rows_BTC, const FocusTaps& taps,
                            absl::Span<const Sequence> sequences) {
  constexpr int64_t kKeep = 4096;  // rows: the last few hundred steps'
  const int64_t t = rows_BTC.size(1);
  std::vector<int64_t> rows;
  std::vector<float> values;
  const int bins = static_cast<int>(opts_.config.region.coord_out_dim);
  for (size_t i = 0; i < sequences.size(); ++i) {
    // Each object's x target, then its y: the x rows alone, since one
    // linear map cannot answer x on some rows and y on others.
    const std::vector<CoordinateTarget>& targets = sequences[i].coordinates;
    for (size_t k = 0; k < targets.size(); k += 2) {
      rows.push_back(static_cast<int64_t>(i) * t + targets[k].row);
      values.push_back(BinValue(targets[k].bin, bins));
    }
  }
  if (rows.empty()) return;
  at::NoGradGuard no_grad;
  const at::Tensor index = at::tensor(rows, at::kLong);
  KeepLast(readout_.rows_NC,
           rows_BTC.reshape({-1, rows_BTC.size(2)}).index_select(0, index),
           kKeep);
  KeepLast(readout_.values_N, at::tensor(values), kKeep);
  if (taps.probs_BTP.defined()) {
    const int64_t p = taps.probs_BTP.size(2);
    KeepLast(readout_.head_ND,
             at::matmul(taps.probs_BTP.reshape({-1, p}).index_select(0, index),
                        taps.values_PD),
             kKeep);
  }
}

std::pair<double, double> Trainer::ReadoutR2() const {
  return {HeldOutR2(readout_.rows_NC, readout_.values_N),
          HeldOutR2(readout_.head_ND, readout_.values_N)};
}

}  // namespace md::train
