#include "tools/scenes/questions.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace md::scenes {
namespace {

std::vector<int> Matching(const Scene& scene, ShapeKind kind) {
  std::vector<int> found;
  for (size_t i = 0; i < scene.shapes.size(); ++i) {
    if (scene.shapes[i].kind == kind) found.push_back(static_cast<int>(i));
  }
  return found;
}

std::vector<int> Matching(const Scene& scene, Colour colour) {
  std::vector<int> found;
  for (size_t i = 0; i < scene.shapes.size(); ++i) {
    if (scene.shapes[i].colour == colour) found.push_back(static_cast<int>(i));
  }
  return found;
}

std::vector<int> Matching(const Scene& scene, Colour colour, ShapeKind kind) {
  std::vector<int> found;
  for (size_t i = 0; i < scene.shapes.size(); ++i) {
    const Shape& s = scene.shapes[i];
    if (s.colour == colour && s.kind == kind) {
      found.push_back(static_cast<int>(i));
    }
  }
  return found;
}

std::string Described(const Shape& shape) {
  return absl::StrCat("a ", ColourName(shape.colour), " ",
                      KindName(shape.kind));
}

// A question whose answer names a single shape's property is only asked when
// the shape it is about is unique; otherwise there is no one answer.
void AddColourQuestions(const Scene& scene, std::vector<SceneTask>& tasks) {
  for (ShapeKind kind : kAllKinds) {
    const std::vector<int> found = Matching(scene, kind);
    if (found.size() != 1) continue;
    tasks.push_back({TaskKind::kColour,
                     absl::StrCat("What color is the ", KindName(kind), "?"),
                     std::string(ColourName(scene.shapes[found[0]].colour)),
                     found});
  }
}

void AddShapeQuestions(const Scene& scene, std::vector<SceneTask>& tasks) {
  for (Colour colour : kAllColours) {
    const std::vector<int> found = Matching(scene, colour);
    if (found.size() != 1) continue;
    tasks.push_back({TaskKind::kShape,
                     absl::StrCat("What shape is ", ColourName(colour), "?"),
                     std::string(KindName(scene.shapes[found[0]].kind)),
                     found});
  }
}

// Every kind (absent ones expect no answer, which catches a model that
// finds what is not there) and each colour + kind present.
std::vector<std::pair<std::string, std::vector<int>>> RegionObjects(
    const Scene& scene) {
  std::vector<std::pair<std::string, std::vector<int>>> objects;
  for (ShapeKind kind : kAllKinds) {
    objects.emplace_back(std::string(KindName(kind)), Matching(scene, kind));
  }
  for (ShapeKind kind : kAllKinds) {
    for (Colour colour : kAllColours) {
      std::vector<int> found = Matching(scene, colour, kind);
      if (found.empty()) continue;
      objects.emplace_back(
          absl::StrCat(ColourName(colour), " ", KindName(kind)),
          std::move(found));
    }
  }
  return objects;
}

}  // namespace

absl::string_view TaskKindName(TaskKind kind) {
  switch (kind) {
    case TaskKind::kCount:
      return "count";
    case TaskKind::kColour:
      return "color";
    case TaskKind::kShape:
      return "shape";
    case TaskKind::kCaptionShort:
      return "caption short";
    case TaskKind::kCaptionNormal:
      return "caption normal";
    case TaskKind::kDetect:
      return "detect";
    case TaskKind::kPoint:
      return "point";
  }
  return "?";
}

std::string CaptionOf(const Scene& scene) {
  const std::vector<int> order = LeftToRight(scene);
  std::string caption;
  for (size_t i = 0; i < order.size(); ++i) {
    if (i > 0) caption += i + 1 == order.size() ? " and " : ", ";
    caption += Described(scene.shapes[order[i]]);
  }
  return caption;
}

std::vector<SceneTask> SceneTasks(const Scene& scene) {
  std::vector<SceneTask> tasks;
  std::vector<int> all(scene.shapes.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int>(i);
  tasks.push_back({TaskKind::kCount, "How many shapes are there?",
                   absl::StrCat(scene.shapes.size()), all});
  AddColourQuestions(scene, tasks);
  AddShapeQuestions(scene, tasks);
  const std::string caption = CaptionOf(scene);
  tasks.push_back({TaskKind::kCaptionShort, "", caption, all});
  tasks.push_back({TaskKind::kCaptionNormal, "", caption, all});
  const auto objects = RegionObjects(scene);
  for (const auto& [object, targets] : objects) {
    tasks.push_back({TaskKind::kDetect, object, "", targets});
  }
  for (const auto& [object, targets] : objects) {
    tasks.push_back({TaskKind::kPoint, object, "", targets});
  }
  return tasks;
}

}  // namespace md::scenes
