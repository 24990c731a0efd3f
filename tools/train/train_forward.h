// The trainer's forward pass (issue 14): the model's own building blocks
// (model/net: EncodeDistinctCrops, ReconstructFromCrops, PoolReconstructed,
// ProjectImage, ApplyRotary, LayerNorm, Linear, Mlp, LmHead and the region
// head) run with autograd, without the slot KV cache (the inference path
// writes K/V in place and runs under NoGradGuard).
//
// One scene's sequences share its image prefix. The prefix rows (BOS + 729
// image tokens) see only each other, so their hidden states do not depend
// on what follows: they are computed once per scene, and every sequence's
// rows after the prefix attend to the shared prefix keys plus their own
// earlier rows (the causal part of docs/DESIGN.md §2.4's mask). Sequences
// are padded at the end; causal attention keeps padding out of real rows.
//
// Letters: P prefix positions (730), B sequences, T rows after the prefix
// (padded), C text dim, H heads, D head dim, V vocabulary, E vision dim.
#ifndef MOONDREAM_TOOLS_TRAIN_TRAIN_FORWARD_H_
#define MOONDREAM_TOOLS_TRAIN_TRAIN_FORWARD_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "model/config/config.h"
#include "model/io/weights.h"
#include "model/net/moondream.h"
#include "model/net/text.h"
#include "tools/train/examples.h"

namespace md::train {

// Image embedding [729, C] of one image, as Model::EmbedImages computes it.
at::Tensor ImageEmbedding(const ImageCrops& image, const Weights& w,
                          const VisionConfig& config);

// [wte[bos]; image] → [P, C], as Model::PrefixEmbeddings.
at::Tensor PrefixEmbeddings(const at::Tensor& image_PC, const Weights& w,
                            const MoondreamConfig& config);

// The rows of each sequence embedded as the served skills embed them
// (tokens by wte, coordinates and sizes by the region encoders), padded
// with token 0 to the longest: [B, T, C].
at::Tensor EmbedSequences(absl::Span<const Sequence> sequences,
                          const Weights& w);

// What the focus losses read from the last text layer's first head
// (training only): each row's attention to the prefix, and the prefix's
// values.
struct FocusTaps {
  at::Tensor probs_BTP;  // [B, T, P]
  at::Tensor values_PD;  // [P, D]
  // The prefix's input to the last layer, layer-normed as its keys and
  // values read it: [P, C].
  at::Tensor last_input_PC;
  // The layer before the last's first head: each row's attention to the
  // prefix [B, T, P] (undefined with one layer), what the answered loss
  // reads.
  at::Tensor answered_probs_BTP;
};

// All text blocks over the prefix and the sequences' rows after it: the
// rows' last residual stream [B, T, C] (before post LN, where the region
// head reads it). The prefix's own last-layer outputs feed nothing and are
// not computed. `taps`, when given, receives the FocusTaps.
at::Tensor DecoderForward(const at::Tensor& prefix_PC,
                          const at::Tensor& rows_BTC, const TextWeights& w,
                          const TextConfig& config, const RotaryTable& rotary,
                          FocusTaps* taps = nullptr);

struct LossOptions {
  // Coordinate and size targets are Gaussians of this many bins around the
  // true bin (0: the bin alone), scored by KL divergence; the served skills
  // take the argmax, which a symmetric target leaves at the true bin.
  double bin_sigma = 0;
  // Training only, 0: off; added to the mean of the other targets. The
  // focus loss: the −log of the attention mass that the last layer's first
  // head puts on the shapes a row's answer is about (FocusTarget). It
  // guides the model to look where the answer is.
  double focus_weight = 0;
  // The focus loss asks for the mass spread evenly over those shapes' cells
  // (KL from the uniform spread to the head's distribution: −log of the mass
  // plus how unevenly it falls), so that what the head gathers is the mean
  // over the cells, whose position is the shape's centre, and not the one
  // edge that matches best.
  bool focus_spread = false;
  // The position loss: how badly a linear probe reads each image token's
  // grid position from that head's values (1 − R²: the mean squared error
  // over the coordinates' variance), so that what the head gathers carries
  // where it is. The probe is not part of the model, whose architecture
  // does not change.
  double position_weight = 0;

  // The patch-kind loss: a linear probe (kept out of the model) tells from
  // each image token's embedding whether its cell is background or which
  // kind of shape covers it (PatchKinds; cross-entropy, background and
  // shape cells weighted equally), so the vision tower learns to tell a
  // circle from a square where it sees one.
  double patch_kind_weight = 0;

  // The patch-box loss: a linear probe (kept out of the model) reads from
  // each image token of a shape cell that shape's box (PatchBoxes: centre
  // and size), so that what the text decoder gathers from a shape's tokens
  // says where it is and how big. Mean squared error × 12 (a guess of 0.5
  // for values uniform in [0, 1] scores 1).
  double patch_box_weight = 0;

  // The patch-extent loss: as the patch-box loss, with only the size, as
  // log(w) and log(h) in image fractions (the scale the region head's size
  // bins use), scaled so that guessing the typical size scores about 1. The
  // box loss's error is mostly the centres' (their spread is ~10× the
  // sizes'), so it barely asks the tower how far a shape extends.
  double patch_extent_weight = 0;

  // The patch-colour loss: as the patch-kind loss, with the colour of the
  // shape covering the cell (PatchColours), so that a first stage that
  // trains the tower alone keeps what colour answers need.
  double patch_colour_weight = 0;

  // The head-patch loss: the three patch losses, each with its own probe
  // [classes or 4, D], over the last layer's first head's values of the
  // image tokens (FocusTaps): what that head gathers from a shape's tokens
  // (the focus loss points it there) then says what the shape is, its
  // colour and where it is, in a form the heads after it read linearly.
  double head_patch_weight = 0;

  // The prefix-rank loss: two linear probes (kept out of the model) read
  // from each image token's input to the last layer (FocusTaps::
  // last_input_PC) the rank, left to right, of the shape covering it among
  // the shapes of its kind, and among those of its kind and colour
  // (PatchRanks); cross-entropy as the patch-kind loss's. A detect or point
  // question that asks for several shapes answers them left to right, so
  // each answer's row must attend to one of several matching shapes; the
  // focus head can only pick it out by a feature of its keys, which the
  // earlier layers (where image tokens attend to each other) can compute.
  double prefix_rank_weight = 0;

  // The row-box loss: a linear probe (kept out of the model) reads from
  // each row the region head reads the value that row answers (x or y of
  // a coordinate row, w and h of a size row), each row layer-normed first;
  // mean squared error × 12. Its gradient reaches the decoder directly,
  // where the coordinate loss's must pass the bins' softmax and the head's
  // MLP: the rows are taught to carry the answer linearly.
  double row_box_weight = 0;

  // The row-extent loss: a linear probe (kept out of the model, its weight
  // starting at zero) reads from each size row, layer-normed, the log width
  // and log height it answers; squared error scaled as the patch-extent
  // loss's. The row-box loss's size part is tiny beside its coordinates'
  // (sizes spread far less than centres), so it barely asks the rows for
  // the extent, which the focus head gathers but the size rows lose.
  double row_extent_weight = 0;

  // The row-centre loss: as the row-extent loss, for the centres: a linear
  // probe (kept out of the model, its weight starting at zero) reads from
  // each coordinate row, layer-normed, the x or y it answers; squared error
  // over the centres' typical variance (the mean guess scores ~1). The
  // row-box loss asks the same at ~1/20 of this scale, and its probe starts
  // random, which a trained decoder cannot take.
  double row_centre_weight = 0;

  // Stop rows weighted so that those that stop (eos) and those that go on
  // count alike: every kind is asked of each scene and absent ones expect
  // no object, so eos is the majority, and a model unsure whether a shape is
  // there answers eos first and finds nothing.
  bool balance_stops = false;
  // Each stop row's loss × this (1: as any other row). The stop rows decide
  // "another object?", which a model that cannot yet count matching shapes
  // answers with one fixed distribution; a lower weight keeps that from
  // taking over rows that share their features (a caption's comma rows).
  double stop_weight = 1;
  // The region decoders' losses reach their rows less their mean over the
  // batch (HeadInput, train_forward.cc); values unchanged. For use with the
  // trainer's --center-region-head.
  bool centre_gradient = false;
  // The row-norm loss: each target row's final hidden state (what the LM
  // head's norm and the region head read) is penalised by
  // max(0, log(rms / row_norm_limit)), × this weight. Some rows (those after
  // a comma or a digit, every region row) grew a common part of rms ~4,000
  // against ~10 elsewhere: the LM head's LayerNorm then sees one vector on
  // all of them and answers one fixed distribution, which held the stop
  // rows at chance and the comma rows on eos. The penalty is scale-free (a
  // log), 0 below the limit, so ordinary rows are left alone.
  double row_norm_weight = 0;
  double row_norm_limit = 24;

  // The answered loss: the focus loss's spread, for the layer before the
  // last's first head on the rows with Sequence::answered targets (the
  // shapes a region answer has given so far), so that the row the focus
  // head's query reads holds what those shapes' keys look like.
  double answered_weight = 0;

  bool Taps() const {
    return focus_weight > 0 || position_weight > 0 || head_patch_weight > 0 ||
           prefix_rank_weight > 0 || answered_weight > 0;
  }
};

// The token a region row that goes on (another object follows) is
// trained toward. The skills stop when the greedy token is eos and go on
// for any other, so "not eos" must win the argmax, not just the mass: all
// other tokens together can outweigh eos while eos alone is still the most
// likely token. Token 0 is the one the reference substitutes for a forced
// detect's first token.
inline constexpr int kGoOnToken = 0;

// Cross-entropy of each stop row's logits [N, V] against eos (where `eos`
// is set) or kGoOnToken.
at::Tensor StopNll(const at::Tensor& logits_NV, absl::Span<const uint8_t> eos,
                   int eos_id);

// Loss of each row's set of acceptable bins under logits [N, X]: the KL
// divergence from an even mixture over the set of a normalised Gaussian
// around each bin (sigma > 0) or of the bins themselves; 0 when the head
// matches that target. One bin, no sigma: its negative log-likelihood.
at::Tensor BinSetLoss(const at::Tensor& logits_NX,
                      const std::vector<std::vector<int64_t>>& sets,
                      double sigma);

// Mean per target of each kind (detached, for logs) and the differentiable
// mean over all targets.
struct Losses {
  at::Tensor total;
  double token = 0, stop = 0, coordinate = 0, size = 0, focus = 0, position = 0,
         patch_kind = 0, patch_box = 0, patch_extent = 0, patch_colour = 0,
         head_patch = 0, prefix_rank = 0, row_box = 0, row_extent = 0,
         row_centre = 0;
  // Target rows' final hidden state: the row-norm penalty's mean and the
  // largest rms (per scene; logged whether or not the penalty is on).
  double row_norm = 0, row_rms_max = 0;
  int n_token = 0, n_stop = 0, n_coordinate = 0, n_size = 0, n_focus = 0;
  // The focus loss over the rows of detect and point answers alone (for
  // logs).
  double focus_region = 0;
  int n_focus_region = 0;
  // The answered loss, per target row.
  double answered = 0;
  int n_answered = 0;
  int n_scenes = 0;  // summed Losses: how many scenes the per-scene parts sum

  int n_targets() const { return n_token + n_stop + n_coordinate + n_size; }
};

// The rows [N, C] a region decoder reads. With `centre_gradient` their
// values are unchanged but the gradient's mean over the rows is removed, so
// that the decoders' losses cannot move the rows' common part: the trainer's
// --center-region-head folds a detached running mean of it into the
// decoders' bias, which the model could chase for ever (the common part grew
// to rms ~4,000 and blinded the LM head on those rows).
at::Tensor HeadInput(const at::Tensor& rows_NC, const LossOptions& options);

// The heads' losses on the hidden rows [B, T, C] of `sequences`, and the
// weighted focus and position losses on `taps` (the position probe
// `probe`: [2, D] → the patch's (x, y) in [0, 1]).
Losses SequenceLosses(const at::Tensor& rows_BTC,
                      absl::Span<const Sequence> sequences, const Weights& w,
                      const MoondreamConfig& config, const LossOptions& options,
                      const FocusTaps* taps = nullptr,
                      const LinearWeights* probe = nullptr);

// The patch-kind and patch-colour losses: the probe [1 + classes, C] over
// the image tokens [729, C], each labelled 0 (background) or 1 + its
// shape's class (PatchKinds, PatchColours).
at::Tensor PatchClassLoss(const at::Tensor& image_PC,
                          absl::Span<const int> patch_labels,
                          const LinearWeights& probe);

// PatchBoxLoss: the probe [4, C] over the image tokens [729, C] of the
// cells a shape covers (patch_kinds > 0). The head-patch loss applies
// both to the head's values [729, D].
at::Tensor PatchBoxLoss(const at::Tensor& image_PC,
                        absl::Span<const int> patch_kinds,
                        absl::Span<const PatchBox> patch_boxes,
                        const LinearWeights& probe);

// PatchExtentLoss: the probe [2, C] reads log(w), log(h) of the covering
// shape's box from the image tokens [729, C] of its cells (see
// LossOptions::patch_extent_weight).
at::Tensor PatchExtentLoss(const at::Tensor& image_PC,
                           absl::Span<const int> patch_kinds,
                           absl::Span<const PatchBox> patch_boxes,
                           const LinearWeights& probe);

// The row-box loss over the rows [B, T, C] of `sequences`; the probe [4, C]
// answers (x, y, w, h) and each row is scored on its own part (0 when the
// sequences have no region rows).
at::Tensor RowBoxLoss(const at::Tensor& rows_BTC,
                      absl::Span<const Sequence> sequences, int coordinate_bins,
                      int size_bins, const LinearWeights& probe);

// The row-extent loss over the size rows of `sequences` (rows [B, T, C]);
// the probe [2, C] answers (log w, log h) (LossOptions::row_extent_weight;
// 0 when the sequences have no size rows).
at::Tensor RowExtentLoss(const at::Tensor& rows_BTC,
                         absl::Span<const Sequence> sequences, int size_bins,
                         const LinearWeights& probe);

// The row-centre loss over the coordinate rows of `sequences` (rows
// [B, T, C]); the probe [2, C] answers (x, y), each row scored on its own
// (LossOptions::row_centre_weight; 0 when there are no coordinate rows).
at::Tensor RowCentreLoss(const at::Tensor& rows_BTC,
                         absl::Span<const Sequence> sequences,
                         int coordinate_bins, const LinearWeights& probe);

// nll_N scaled so that its mean is the mean over the eos rows and the mean
// over the others, averaged (unchanged when one kind is missing).
at::Tensor BalanceStops(const at::Tensor& nll_N, absl::Span<const uint8_t> eos);

// One scene end to end: image, prefix, all its sequences, losses.
Losses SceneLosses(const SceneExample& example,
                   absl::Span<const Sequence> sequences, const Weights& w,
                   const MoondreamConfig& config, const RotaryTable& rotary,
                   const LossOptions& options,
                   const LinearWeights* probe = nullptr);

}  // namespace md::train

#endif  // MOONDREAM_TOOLS_TRAIN_TRAIN_FORWARD_H_
