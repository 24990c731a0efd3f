#include "tools/scenes/error_kinds.h"

#include <vector>

#include "absl/strings/str_format.h"
#include "tools/scenes/metrics.h"

namespace md::scenes {
namespace {

// The index in `targets` of scene shape `shape`, or -1 when it is not one.
int TargetIndex(absl::Span<const int> targets, int shape) {
  for (size_t t = 0; t < targets.size(); ++t) {
    if (targets[t] == shape) return static_cast<int>(t);
  }
  return -1;
}

// The index of the scene's shape `box` overlaps most (by IoU), or -1 when
// it overlaps none.
int MostOverlapped(const Scene& scene, const Box& box, double* iou) {
  int best = -1;
  *iou = 0;
  for (size_t s = 0; s < scene.shapes.size(); ++s) {
    const double overlap = Iou(box, NormalizedBox(scene, scene.shapes[s]));
    if (overlap > *iou) {
      *iou = overlap;
      best = static_cast<int>(s);
    }
  }
  return best;
}

bool InBox(const Box& b, double x, double y) {
  return x >= b.x_min && x <= b.x_max && y >= b.y_min && y <= b.y_max;
}

}  // namespace

double DetectErrorKinds::MeanImpreciseIou() const {
  return imprecise == 0 ? 0.0 : imprecise_iou_sum / imprecise;
}

DetectErrorKinds& DetectErrorKinds::operator+=(const DetectErrorKinds& other) {
  imprecise += other.imprecise;
  duplicate += other.duplicate;
  other_shape += other.other_shape;
  on_nothing += other.on_nothing;
  missed_near += other.missed_near;
  missed_far += other.missed_far;
  imprecise_iou_sum += other.imprecise_iou_sum;
  return *this;
}

PointErrorKinds& PointErrorKinds::operator+=(const PointErrorKinds& other) {
  in_target_box += other.in_target_box;
  other_shape += other.other_shape;
  background += other.background;
  return *this;
}

AnswerErrorKinds& AnswerErrorKinds::operator+=(const AnswerErrorKinds& other) {
  detect += other.detect;
  point += other.point;
  return *this;
}

DetectErrorKinds ClassifyDetectErrors(const Scene& scene,
                                      absl::Span<const int> targets,
                                      absl::Span<const Box> answered) {
  const std::vector<Box> target_boxes = TargetBoxes(scene, targets);
  std::vector<bool> box_paired(answered.size()), target_paired(targets.size());
  for (const BoxMatch& m : MatchBoxes(answered, target_boxes, kMatchIou)) {
    box_paired[m.answer] = target_paired[m.target] = true;
  }
  DetectErrorKinds kinds;
  for (size_t a = 0; a < answered.size(); ++a) {
    if (box_paired[a]) continue;
    double iou = 0;
    const int shape = MostOverlapped(scene, answered[a], &iou);
    if (shape < 0) {
      ++kinds.on_nothing;
      continue;
    }
    const int target = TargetIndex(targets, shape);
    if (target < 0) {
      ++kinds.other_shape;
    } else if (target_paired[target]) {
      ++kinds.duplicate;
    } else {
      ++kinds.imprecise;
      kinds.imprecise_iou_sum += iou;
    }
  }
  for (size_t t = 0; t < targets.size(); ++t) {
    if (target_paired[t]) continue;
    bool near = false;
    for (const Box& b : answered) near = near || Iou(b, target_boxes[t]) > 0;
    ++(near ? kinds.missed_near : kinds.missed_far);
  }
  return kinds;
}

PointErrorKinds ClassifyPointErrors(const Scene& scene,
                                    absl::Span<const int> targets,
                                    absl::Span<const Point> answered) {
  PointErrorKinds kinds;
  for (const Point& p : answered) {
    const double x = p.x * scene.width, y = p.y * scene.height;
    bool in_target = false, in_target_box = false, in_other = false;
    for (size_t s = 0; s < scene.shapes.size(); ++s) {
      const Shape& shape = scene.shapes[s];
      const bool inside = ShapeContains(shape, x, y);
      if (TargetIndex(targets, static_cast<int>(s)) >= 0) {
        in_target = in_target || inside;
        in_target_box =
            in_target_box || InBox(NormalizedBox(scene, shape), p.x, p.y);
      } else {
        in_other = in_other || inside;
      }
    }
    if (in_target) continue;
    if (in_target_box) {
      ++kinds.in_target_box;
    } else if (in_other) {
      ++kinds.other_shape;
    } else {
      ++kinds.background;
    }
  }
  return kinds;
}

std::string FormatErrorKinds(const AnswerErrorKinds& kinds) {
  const DetectErrorKinds& d = kinds.detect;
  const PointErrorKinds& p = kinds.point;
  return absl::StrFormat(
      "wrong boxes: %d on their shape at IoU < %.1f (mean %.2f), %d "
      "duplicates, %d on another shape, %d on nothing; shapes missed: %d "
      "with a box on them, %d without; points outside: %d in the shape's "
      "box, %d on another shape, %d on the background",
      d.imprecise, kMatchIou, d.MeanImpreciseIou(), d.duplicate, d.other_shape,
      d.on_nothing, d.missed_near, d.missed_far, p.in_target_box, p.other_shape,
      p.background);
}

nlohmann::ordered_json ErrorKindsJson(const AnswerErrorKinds& kinds) {
  const DetectErrorKinds& d = kinds.detect;
  const PointErrorKinds& p = kinds.point;
  return {{"detect",
           {{"imprecise", d.imprecise},
            {"imprecise_mean_iou", d.MeanImpreciseIou()},
            {"duplicate", d.duplicate},
            {"other_shape", d.other_shape},
            {"on_nothing", d.on_nothing},
            {"missed_near", d.missed_near},
            {"missed_far", d.missed_far}}},
          {"point",
           {{"in_target_box", p.in_target_box},
            {"other_shape", p.other_shape},
            {"background", p.background}}}};
}

}  // namespace md::scenes
