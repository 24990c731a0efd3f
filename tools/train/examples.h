// Training examples from synthetic scenes (issue 14): each scene's image
// crops, and each of its questions (tools/scenes/questions.h) as one
// teacher-forced sequence laid out exactly as the served skills read it
// (docs/DESIGN.md §2.5; model/skills/runs.cc):
//
//   query/caption  rows: prompt, answer tokens
//                  targets: the row before each answer token predicts it;
//                  the last answer row predicts eos.
//   detect         rows: prompt, then per object x, y (coordinate
//                  embeddings) and (w, h) (size embedding)
//                  targets: on the last prompt row and each size row, "go
//                  on" plus the next object's x bin, or eos after the last;
//                  on x rows the y bin; on y rows the (w, h) bins.
//   point          as detect without sizes: y rows decide "go on" + x, or
//                  eos.
//
// Objects come left to right (the captions' order). A value v in [0, 1] is
// bin round(v·n) (clamped to n−1) of the head's n bins, and the row fed after
// it is the bin's value bin/n: what the served skill feeds after an argmax.
// Answers are the tokens of the expected text as written (no leading space);
// scenes-eval compares answers with surrounding whitespace stripped.
#ifndef MOONDREAM_TOOLS_TRAIN_EXAMPLES_H_
#define MOONDREAM_TOOLS_TRAIN_EXAMPLES_H_

#include <array>
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "model/config/config.h"
#include "model/net/moondream.h"
#include "model/tokenizer/tokenizer.h"
#include "tools/scenes/questions.h"
#include "tools/scenes/scene.h"

namespace md::train {

enum class RowKind { kToken, kCoordinate, kSize };

// One input row after the image prefix.
struct InputRow {
  RowKind kind = RowKind::kToken;
  int token = 0;                        // kToken
  std::array<float, 2> value = {0, 0};  // kCoordinate: [0]; kSize: (w, h)
};

struct TokenTarget {
  int row = 0;
  int token = 0;
};
// Region skills only ask whether the greedy next token is eos; a row that
// goes on is trained toward kGoOnToken (train_forward.h).
struct StopTarget {
  int row = 0;
  bool eos = false;
};
struct CoordinateTarget {
  int row = 0;
  int bin = 0;
  // Training only (ExampleOptions::any_order): bins as right as `bin` (the
  // x of each matching shape not yet answered); the head's target is then
  // an even mixture of all of them.
  std::vector<int> also = {};
};
struct SizeTarget {
  int row = 0;
  int w_bin = 0, h_bin = 0;
};
// Training only (--focus-weight): the row's answer is about the shapes that
// cover these prefix positions (1 + the image token's index in the 27 × 27
// grid), so the last text layer's first head should attend to them.
struct Focus {
  std::vector<int> positions;
  // Each position's share of the spread the head should match (summing to
  // 1; --focus-spread); empty: an even spread.
  std::vector<float> shares;
};
struct FocusTarget {
  int row = 0;
  std::vector<int> positions;
  std::vector<float> shares;  // as Focus::shares
};

struct Sequence {
  scenes::TaskKind kind = scenes::TaskKind::kCount;
  std::vector<InputRow> rows;
  std::vector<TokenTarget> tokens;
  std::vector<StopTarget> stops;
  std::vector<CoordinateTarget> coordinates;
  std::vector<SizeTarget> sizes;
  std::vector<FocusTarget> focuses;  // not counted in n_targets
  // Training only (ExampleOptions::answered_focus): what the layer before
  // the focus head's first head should attend to on a region answer's
  // rows that start an object after the first, and on its stop row: the
  // shapes answered so far. Not counted in n_targets.
  std::vector<FocusTarget> answered;

  int n_targets() const {
    return static_cast<int>(tokens.size() + stops.size() + coordinates.size() +
                            2 * sizes.size());
  }
};

// The box of the shape covering a grid cell, in [0, 1] fractions of the
// image: centre and size, as detect answers it.
struct PatchBox {
  std::array<float, 4> cx_cy_w_h = {0, 0, 0, 0};
};

// What the training-only patch probes read, per grid cell (PatchKinds,
// PatchColours, PatchBoxes, PatchRanks).
struct PatchTruth {
  std::vector<int> kinds;
  std::vector<int> colours;
  std::vector<PatchBox> boxes;
  std::vector<int> kind_ranks;
  std::vector<int> pair_ranks;
};

struct SceneExample {
  scenes::Scene scene;
  ImageCrops crops;
  std::vector<Sequence> sequences;
  PatchTruth patches;  // training only
};

// For each cell of the grid × grid image tokens, row by row: whether
// `shape` covers the cell's centre.
std::vector<bool> CoveredCells(const scenes::Scene& scene,
                               const scenes::Shape& shape, int grid);
// For each cell of the grid × grid image tokens, row by row: 0 when its
// centre is background, else 1 + the ShapeKind of the shape covering it.
std::vector<int> PatchKinds(const scenes::Scene& scene, int grid);
// As PatchKinds, with 1 + the Colour of the shape covering the cell.
std::vector<int> PatchColours(const scenes::Scene& scene, int grid);
// For each cell, as PatchKinds: 1 + the rank, left to right, of the shape
// covering it among the scene's shapes of its kind (`with_colour`: of its
// kind and colour); 0 on background cells. The order detect and point
// answer in: the rank is which of a question's answers the shape is.
std::vector<int> PatchRanks(const scenes::Scene& scene, int grid,
                            bool with_colour);
// For each cell, as PatchKinds: the box of the shape covering its centre
// (zeros on background cells).
std::vector<PatchBox> PatchBoxes(const scenes::Scene& scene, int grid);
PatchTruth ScenePatchTruth(const scenes::Scene& scene, int grid);

// Training scene `index` of the set from `base_seed`: the specification's
// GenerateScene(SceneSeed(base_seed, index)), except that a share
// `wide_share` of the indices (chosen by a hash of the index) take the first
// of that seed's successors whose aspect is at least `min_aspect`. Training
// only (TrainOptions::wide_share): the boxes and points of wide and tall
// images lag, and the specification draws W and H uniformly, so only a fifth
// of its scenes have an aspect of 1.8 or more. Every scene still meets the
// specification; the same arguments give the same scene.
scenes::Scene TrainingScene(uint64_t base_seed, uint64_t index,
                            double wide_share, double min_aspect);

// The scene scaled down (pixel boxes rounded) so that its longer side is at
// most `max_side`; unchanged when it already fits. Training only
// (TrainOptions::vision_only): an image that fits one crop is encoded as 2
// crops instead of up to 10. A shrunk scene may fall outside the
// specification (a side under 256 px); PatchKinds and the crops only need
// its geometry.
scenes::Scene ShrinkScene(const scenes::Scene& scene, int max_side);

// A box or point in [0, 1] fractions of the image: centre (x, y) and size,
// and where its rows should attend (FocusTarget; may be empty).
struct RegionTruth {
  double x = 0, y = 0, w = 0, h = 0;
  Focus focus;
};

// Bin of v among n (round to nearest, clamped), and the value fed for it.
int ValueBin(double v, int n_bins);
float BinValue(int bin, int n_bins);

// The prefix positions of the image tokens whose grid cell's centre lies
// inside one of `shapes` (each shape's centre-of-mass cell at least).
std::vector<int> FocusPositions(const scenes::Scene& scene,
                                absl::Span<const int> shapes, int grid);

// Every image token whose grid cell `shape` overlaps, each with the share
// of the shape's area in its cell (sampled on a kCoverageSamples² lattice
// per cell; shares sum to 1). Training only (ExampleOptions::
// focus_coverage): an even spread over the cells whose centre the shape
// covers gathers their centres' mean, which moves in whole cells; these
// shares gather the shape's own centroid, which moves with the shape.
inline constexpr int kCoverageSamples = 8;
Focus CoverageFocus(const scenes::Scene& scene, const scenes::Shape& shape,
                    int grid);

// The sink (prefix position 0, bos) and each of `shapes` in equal shares,
// each shape's share spread evenly over its FocusPositions. Training only
// (ExampleOptions::focus_sink): the share of the mass left on the sink,
// 1 / (1 + n), tells how many shapes there are, and all of it there says
// there is none, which a row can read off what the head gathers.
Focus SinkAndShapes(const scenes::Scene& scene, absl::Span<const int> shapes,
                    int grid);

// Query or caption: `prompt` (template applied) then `answer` then eos.
// `focus` is empty or holds, for each answer token, what the row predicting
// it should attend to, and optionally one more entry for the eos row.
Sequence TextSequence(scenes::TaskKind kind, absl::Span<const int> prompt,
                      absl::Span<const int> answer, int eos_id,
                      absl::Span<const Focus> focus = {});
// Detect (with sizes) or point, objects in the order given. `stop_focus`
// (may be empty) is what the final row, the one that stops, attends to.
// With `any_order`, each x row accepts (CoordinateTarget::also) and attends
// to every object not yet answered, in equal shares (MergedFocus). With
// `answered`, the x row of each object after the first and the stop row
// get Sequence::answered targets: the objects before, in equal shares.
Sequence RegionSequence(scenes::TaskKind kind, absl::Span<const int> prompt,
                        absl::Span<const RegionTruth> objects, int eos_id,
                        int coordinate_bins, int size_bins,
                        const Focus& stop_focus = {}, bool any_order = false,
                        bool answered = false);

// The foci in equal shares, each spread as it is (evenly over its positions
// unless it gives shares); a position in several adds their shares.
Focus MergedFocus(absl::Span<const Focus> foci);

// The scene as the served skills see it: rendered, as RGB (what decoding
// its PNG gives), cut into the model's crops.
absl::StatusOr<ImageCrops> SceneCrops(const scenes::Scene& scene,
                                      const VisionConfig& config);

struct ExampleOptions {
  // Rows that decide how many shapes (a count, a caption's separator or
  // end, a detection's or point's stop) attend to SinkAndShapes: the sink
  // and the shapes not yet answered; a region's go-on rows already attend
  // to the next object.
  bool focus_sink = false;
  // With focus_sink, a detect's or point's last row (its stop) is left
  // without a focus target: it is the row after an object's last value, as
  // every later object's first row is, and its pull toward the sink takes
  // 13% of their attention (feature-probe's rows of second and later
  // objects; tools/train/README.md).
  bool free_region_stop = false;
  // A detect's or point's coordinate and size rows attend to their shape's
  // CoverageFocus instead of an even spread over its covered cells.
  bool focus_coverage = false;
  // A detect or point question that asks for two or more shapes is trained
  // this many times in its scene's example (>= 1): their rows must also
  // pick which of the matching shapes each answer is, and they answer far
  // worse than those that ask for one (scenes-eval's "by the shapes they
  // ask for"), while only about one region question in eight is one.
  int several_repeats = 1;
  // A detect or point question that asks for several shapes answers them in
  // an order drawn for it (from the scene's seed; each repeat its own), and
  // the row that starts an object is trained toward the x of every matching
  // shape not yet answered, attending to all of them (RegionSequence's
  // any_order); its y and size rows follow the shape whose x was fed. The
  // specification leaves the order of boxes and points free, and the
  // left-to-right order makes that row pick the leftmost of the shapes
  // that match, which the focus head does not learn (tools/train/
  // README.md): here it need only avoid the ones already answered.
  bool any_order = false;
  // Training only: the coordinates and sizes a detect's or point's rows are
  // fed (the answers so far) are drawn near the truth, as the served skills
  // feed the model's own argmax bins, which miss by a few hundredths; the
  // targets stay the truth. A coordinate moves by a normal error of
  // `fed_jitter` (image fractions), a size is scaled by exp of a normal
  // error of `fed_size_jitter`; each is then snapped to its bin. 0: exact,
  // as before.
  double fed_jitter = 0;
  double fed_size_jitter = 0;
  // Training only: a region answer's rows that start an object after the
  // first, and its stop row, get Sequence::answered targets (the shapes
  // answered so far), for a head of the layer before the focus head. The
  // focus head of later objects' rows puts its stray mass on the shapes
  // answered before (feature-probe); the fed coordinates name them only in
  // the region encoder's terms, while a head that gathers those shapes'
  // own image tokens puts, in the row the focus head's query reads, what
  // the keys to pass over look like.
  bool answered_focus = false;
};

// Every question of `scene` as a sequence (all of SceneTasks' tasks, in
// their order), and its crops.
absl::StatusOr<SceneExample> MakeSceneExample(
    const scenes::Scene& scene, const MoondreamConfig& config,
    const Tokenizer& tokenizer, const ExampleOptions& options = {});

}  // namespace md::train

#endif  // MOONDREAM_TOOLS_TRAIN_EXAMPLES_H_
