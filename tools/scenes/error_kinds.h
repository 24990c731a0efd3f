// What kind of wrong a detect or point answer is: the diagnostic that says
// whether a low detect F1 is boxes on the right shape that are not precise
// enough (IoU < 0.5), boxes about another shape, boxes on nothing, or
// shapes no box went near. Each lever differs: precision asks the rows for
// the centres, another shape asks which shape the decoder attends to.
// Additive over answers, like the tallies in metrics.h.
#ifndef MOONDREAM_TOOLS_SCENES_ERROR_KINDS_H_
#define MOONDREAM_TOOLS_SCENES_ERROR_KINDS_H_

#include <nlohmann/json.hpp>
#include <string>

#include "absl/types/span.h"
#include "model/skills/skill_types.h"
#include "tools/scenes/scene.h"

namespace md::scenes {

// Every detect box not paired at kMatchIou (a false positive) is one of the
// first four, by the shape of the whole scene its box overlaps most; every
// target shape left unpaired (a false negative) is one of the last two.
struct DetectErrorKinds {
  int imprecise = 0;             // most on a target no box was paired with
  int duplicate = 0;             // most on a target another box was paired with
  int other_shape = 0;           // most on a shape that is not a target
  int on_nothing = 0;            // overlaps no shape
  int missed_near = 0;           // target unpaired, some box overlaps it
  int missed_far = 0;            // target unpaired, no box overlaps it
  double imprecise_iou_sum = 0;  // over the imprecise boxes, with their shape

  double MeanImpreciseIou() const;  // 0 when there are none
  DetectErrorKinds& operator+=(const DetectErrorKinds& other);
};

// Every point outside all target shapes is one of these.
struct PointErrorKinds {
  int in_target_box = 0;  // in a target's box, outside the shape drawn
  int other_shape = 0;    // inside a shape that is not a target
  int background = 0;     // neither

  PointErrorKinds& operator+=(const PointErrorKinds& other);
};

struct AnswerErrorKinds {
  DetectErrorKinds detect;
  PointErrorKinds point;

  AnswerErrorKinds& operator+=(const AnswerErrorKinds& other);
};

// `answered` boxes (fractions of the image, as detect answers) for the
// shapes `scene.shapes[targets]`, paired as ScoreDetections pairs them.
DetectErrorKinds ClassifyDetectErrors(const Scene& scene,
                                      absl::Span<const int> targets,
                                      absl::Span<const Box> answered);

// `answered` points (fractions of the image, as point answers).
PointErrorKinds ClassifyPointErrors(const Scene& scene,
                                    absl::Span<const int> targets,
                                    absl::Span<const Point> answered);

// "wrong boxes: 274 on their shape at IoU < 0.5 (mean 0.36), 9 duplicates,
// 34 on another shape, 24 on nothing; shapes missed: 292 with a box on
// them, 51 without; points outside: 34 in the shape's box, 23 on another
// shape, 150 on the background".
std::string FormatErrorKinds(const AnswerErrorKinds& kinds);
nlohmann::ordered_json ErrorKindsJson(const AnswerErrorKinds& kinds);

}  // namespace md::scenes

#endif  // MOONDREAM_TOOLS_SCENES_ERROR_KINDS_H_
