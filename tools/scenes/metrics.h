// scenes-eval's scoring, without the model: answers in, tallies and the
// report out, so tests can score hand-made predictions.
//
// - query and caption answers: exact match after trimming surrounding
//   whitespace (GPT-2 style answers start with a space);
// - detect: boxes matched greedily to the matching shapes' boxes, highest
//   IoU first, a match needing IoU >= 0.5; precision, recall and F1 over all
//   detect questions together (micro-averaged);
// - point: a point is inside when it falls in a matching shape as drawn
//   (the disc or the triangle, not only its box); recall is the fraction
//   of matching shapes with at least one point inside.
#ifndef MOONDREAM_TOOLS_SCENES_METRICS_H_
#define MOONDREAM_TOOLS_SCENES_METRICS_H_

#include <array>
#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "model/skills/skill_types.h"
#include "tools/scenes/box_geometry.h"
#include "tools/scenes/error_kinds.h"
#include "tools/scenes/questions.h"
#include "tools/scenes/scene.h"

namespace md::scenes {

inline constexpr double kMatchIou = 0.5;

struct TextTally {
  int asked = 0;
  int correct = 0;

  TextTally& operator+=(const TextTally& other);
};

struct DetectTally {
  int true_positives = 0;
  int false_positives = 0;
  int false_negatives = 0;

  // 0/0 counts as 0 (nothing found of nothing asked proves nothing).
  double precision() const;
  double recall() const;
  double f1() const;
  DetectTally& operator+=(const DetectTally& other);
};

struct PointTally {
  int points = 0;   // points answered
  int inside = 0;   // of them, inside a matching shape
  int targets = 0;  // matching shapes
  int reached = 0;  // of them, with a point inside

  PointTally& operator+=(const PointTally& other);
};

// A point answer's points by their place in it (first, second, third and
// later): a question about several shapes answers them left to right, and
// this tells picking the first from passing over it to the next.
struct PointPlaceTally {
  static constexpr int kPlaces = 3;
  std::array<int, kPlaces> points{};  // answered at each place
  std::array<int, kPlaces> inside{};  // of them, inside a matching shape
  int missing = 0;                    // matching shapes beyond the points

  PointPlaceTally& operator+=(const PointPlaceTally& other);
};

// Exact match of `answer` against `expected`, surrounding whitespace aside.
bool AnswerMatches(absl::string_view answer, absl::string_view expected);

// Intersection over union of two boxes (any consistent units).
double Iou(const Box& a, const Box& b);

// An answered box paired with a target box.
struct BoxMatch {
  double iou = 0;
  size_t answer = 0, target = 0;
};

// Pairs answered boxes with target boxes greedily, highest IoU first, each
// side used at most once; a pair needs IoU >= min_iou and > 0 (boxes
// without area pair with nothing). In the order they were paired.
std::vector<BoxMatch> MatchBoxes(absl::Span<const Box> answers,
                                 absl::Span<const Box> targets, double min_iou);

// The boxes of `scene.shapes[targets]` as NormalizedBox gives them.
std::vector<Box> TargetBoxes(const Scene& scene, absl::Span<const int> targets);

// `predicted` boxes (fractions of the image, as detect answers) against the
// boxes of `scene.shapes[targets]`, paired by MatchBoxes at kMatchIou.
DetectTally ScoreDetections(const Scene& scene, absl::Span<const int> targets,
                            absl::Span<const Box> predicted);

// `predicted` points (fractions of the image, as point answers) against the
// shapes `scene.shapes[targets]`.
PointTally ScorePoints(const Scene& scene, absl::Span<const int> targets,
                       absl::Span<const Point> predicted);

// `predicted` points by their place in the answer, against the shapes
// `scene.shapes[targets]` (inside as ScorePoints counts it).
PointPlaceTally ScorePointPlaces(const Scene& scene,
                                 absl::Span<const int> targets,
                                 absl::Span<const Point> predicted);

// Everything one evaluation run scored.
struct EvalTally {
  TextTally count, colour, shape, caption_short, caption_normal;
  DetectTally detect;
  PointTally point;
  BoxGeometryTally box_geometry;  // of the detect answers' boxes
  AnswerErrorKinds errors;        // of the detect and point answers

  // The text tally a query or caption task counts in (nullptr for detect
  // and point).
  TextTally* TextFor(TaskKind kind);
  EvalTally& operator+=(const EvalTally& other);
};

// A shape's box as fractions of the image's width and height, as a detect
// answer gives boxes.
Box NormalizedBox(const Scene& scene, const Shape& shape);

// One line of the report: a metric, its target and whether it is met. A
// metric with nothing to measure (e.g. no colour question was asked) is
// not measured and does not pass.
struct MetricLine {
  std::string name;
  double value = 0;
  bool percent = false;  // value in %, else a fraction in [0, 1]
  bool measured = false;
  bool has_target = false;
  double target = 0;  // value >= target passes
  bool pass = false;
  std::string detail;  // the counts behind the value
};

// The report's lines with issue 14's targets: count, color and shape
// questions >= 90%, captions >= 70%, detect F1 >= 0.8, point inside >= 85%
// and recall >= 0.8 (detect precision and recall are shown, not targets).
std::vector<MetricLine> ReportLines(const EvalTally& tally);

// Every line with a target passes.
bool AllTargetsMet(absl::Span<const MetricLine> lines);
// OK when each named metric (a line's name, e.g. "color" or "detect F1")
// has a target and meets it; else which do not, or which name is unknown.
absl::Status NamedTargetsMet(absl::Span<const MetricLine> lines,
                             absl::Span<const std::string> names);

// The lines as an aligned text table, one metric per row.
std::string FormatReport(absl::Span<const MetricLine> lines);
// The measured lines with a target on one line, values only:
// "count 92.0%, ..., detect F1 0.507, ...".
std::string FormatValuesLine(absl::Span<const MetricLine> lines);

// {"metrics": {name: {value, unit, measured, target, pass, detail}},
//  "all_pass": bool} plus the raw tallies under "tallies" and the detect
// boxes' BoxGeometryJson under "box_geometry" and the ErrorKindsJson under
// "error_kinds".
nlohmann::ordered_json ReportJson(const EvalTally& tally,
                                  absl::Span<const MetricLine> lines);

}  // namespace md::scenes

#endif  // MOONDREAM_TOOLS_SCENES_METRICS_H_
