// What a scene is asked and the exact answers expected (issue 14): the
// trainer's targets and scenes-eval's questions are the same list.
//
//   query "How many shapes are there?"          → "3"
//   query "What color is the circle?"           → "red"     (one circle only)
//   query "What shape is red?"                  → "circle"  (one red only)
//   caption short and normal                    → "a red circle, a blue square
//                                                  and a green triangle"
//                                                  (left to right)
//   detect / point "circle", "square",
//     "triangle" (every kind, present or not),
//     "red circle" (each colour + kind present) → every matching shape
#ifndef MOONDREAM_TOOLS_SCENES_QUESTIONS_H_
#define MOONDREAM_TOOLS_SCENES_QUESTIONS_H_

#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "tools/scenes/scene.h"

namespace md::scenes {

// The kind of question, which is what scenes-eval reports on: the three
// query questions are scored apart.
enum class TaskKind {
  kCount,
  kColour,
  kShape,
  kCaptionShort,
  kCaptionNormal,
  kDetect,
  kPoint,
};
absl::string_view TaskKindName(TaskKind kind);

struct SceneTask {
  TaskKind kind = TaskKind::kCount;
  // The skill's text input: the question (query), the object (detect,
  // point); empty for captions, whose length is in `kind`.
  std::string input;
  // The exact text expected (query, caption); empty for detect and point.
  std::string answer;
  // The indices in scene.shapes of the shapes the answer is about. Detect
  // and point: those that match (empty when none does: then nothing is the
  // right answer); colour and shape questions: the one shape asked about;
  // count and captions: every shape.
  std::vector<int> targets;
};

// Every question for `scene`, in a fixed order: count, colours, shapes,
// the two captions, detections, points.
std::vector<SceneTask> SceneTasks(const Scene& scene);

// "a red circle", "a red circle and a blue square", "a red circle, a blue
// square and a green triangle": the shapes left to right.
std::string CaptionOf(const Scene& scene);

}  // namespace md::scenes

#endif  // MOONDREAM_TOOLS_SCENES_QUESTIONS_H_
