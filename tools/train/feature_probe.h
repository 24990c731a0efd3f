// What a model's vision tower tells the decoder about each shape's box: a
// diagnostic for issue 14's region skills, which answer boxes that ignore
// the image's aspect. Closed-form linear probes (ridge regressions,
// HeldOutR2) read each shape's box from the image features of held-out
// scenes, fitted on the even scenes and scored on the odd ones, so no
// shape is on both sides. Nothing is trained and no weight changes: minutes
// where a training run takes hours to answer "is it in the features?".
//
// The readouts, each scored per target (the box's centre x and y, width,
// height, and log(width / height), in the image's fractions, as detect
// answers them):
// - cell mask (truth): which grid cells the shape covers (its first and
//   last column and row, cell count, extents), read from the scene itself:
//   what a perfect tower could say at the 27×27 grid's resolution.
// - prefix, per cell: each covered cell's image token (what the decoder's
//   prefix holds) on its own.
// - prefix, shape mean: the mean of the shape's tokens, what a decoder head
//   that attends evenly over the shape gathers.
// - global crop / local crops, shape mean: the same from the two halves the
//   projection concatenates (the global crop's features and the local
//   crops' reconstructed and pooled), before it.
// - focus head, per cell / shape mean: the values of the last text layer's
//   first head at the shape's image tokens (after the decoder's earlier
//   layers), what the head the trainer's focus loss points at a shape
//   gathers: whether the decoder keeps what the tower gives it.
// - detect size row / size row, head gathered (with a tokenizer): each
//   shape's detect question teacher-forced as the trainer lays it out, the
//   residual stream of the row the region head reads the shape's size
//   from, and what the focus head gathered on that row: whether the size
//   reaches the row that answers it.
// - x row, head gathered (with a tokenizer): what the focus head gathered
//   on each detect x row, the first place the decoder must hold the x.
// - x row, gathered on shape (with a tokenizer): the same attention kept
//   only on the shape's cells and scaled to sum to 1: what the head would
//   gather without the mass it puts elsewhere (other shapes, bos), so set
//   beside the row above it parts the loss to leaking from the loss to how
//   unevenly it weighs the shape's own cells.
// - detect x row / detect y row (with a tokenizer): the residual streams of
//   the rows the region head reads the shape's x and y from, on the same
//   sequences. Set beside the region head's answers, they say whether the
//   head or its rows lose the centre (the y row is fed the shape's x, so it
//   reads cx back).
// - region head's answers (with a tokenizer): on the same teacher-forced
//   rows, what the coordinate and size heads answer (argmax, as the skills
//   decode), scored against the truth directly (R² with nothing fitted):
//   what the head makes of what its rows hold.
#ifndef MOONDREAM_TOOLS_TRAIN_FEATURE_PROBE_H_
#define MOONDREAM_TOOLS_TRAIN_FEATURE_PROBE_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace md {
class Model;
class Tokenizer;
}  // namespace md

namespace md::train {

inline constexpr int kProbeTargets = 5;
// Column names, in the order of FeatureReadout::r2.
inline constexpr std::array<const char*, kProbeTargets> kProbeTargetNames = {
    "cx", "cy", "w", "h", "log_aspect"};

struct FeatureReadout {
  std::string name;
  std::array<double, kProbeTargets> r2 = {};
  int rows = 0;  // probe rows, both halves
};

struct FeatureProbeReport {
  int scenes = 0;
  int shapes = 0;  // shapes that cover at least one cell's centre
  int shapes_without_cells = 0;
  int shape_cells = 0;
  std::vector<FeatureReadout> readouts;
  // With a tokenizer: where the focus head's attention goes on each
  // teacher-forced detect x row, as the mean share of its mass over
  // `focus_rows` rows: on the cells of the shape the row answers
  // (FocusPositions, what the trainer's focus loss asks for), on the other
  // shapes' cells, on the rest of the image, on bos (the sink) and on the
  // text rows (the prompt and the answer so far). What lands off the shape
  // mixes other places into what the head gathers.
  struct FocusMass {
    double shape = 0;
    // The other shapes the same question asks for (a second circle), and
    // those it does not.
    double other_answers = 0, other_shapes = 0;
    double image_rest = 0, bos = 0, text = 0;
    // Of other_answers, the shapes of the objects answered before this row
    // (left of it): zero on a first object's row.
    double answered = 0;
  };
  FocusMass x_row_focus;
  int focus_rows = 0;
  // The same over the x rows of the second and later objects of an answer
  // alone: the rows that must pass over the shapes already answered.
  FocusMass later_x_row_focus;
  int later_focus_rows = 0;
  // On those rows, the mean mass that the first head of the layer before
  // the focus head puts on the shapes answered before the row (what the
  // trainer's --answered-weight asks of it).
  double later_x_row_before_last_on_answered = 0;
};

// Encodes scenes SceneSeed(base_seed, 0 .. count−1) at full size, as
// served, with `model` (fp32 or bf16; features are read as fp32) and fits
// every readout above (the size rows' only with a `tokenizer`).
absl::StatusOr<FeatureProbeReport> ProbeImageFeatures(
    const Model& model, const Tokenizer* tokenizer, uint64_t base_seed,
    int count);

// A table: one row per readout, R² per target.
std::string FormatFeatureProbe(const FeatureProbeReport& report);

}  // namespace md::train

#endif  // MOONDREAM_TOOLS_TRAIN_FEATURE_PROBE_H_
