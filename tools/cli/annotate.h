// Draws skill results onto an image and writes it as PNG (moondream-cli
// --annotate).
#ifndef MOONDREAM_TOOLS_CLI_ANNOTATE_H_
#define MOONDREAM_TOOLS_CLI_ANNOTATE_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "model/image/image_decode.h"
#include "model/skills/runs.h"

namespace md::cli {

struct Annotations {
  std::vector<Box> boxes;
  std::vector<Point> points;
  std::optional<Point> eye;
  std::optional<Point> gaze;
};

// Coordinates are normalised to [0, 1] as the skills return them.
absl::Status WriteAnnotatedPng(const RgbImage& image, const Annotations& notes,
                               const std::string& path);

}  // namespace md::cli

#endif  // MOONDREAM_TOOLS_CLI_ANNOTATE_H_
