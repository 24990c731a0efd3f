// How an image is cut into overlapping crops (docs/DESIGN.md §2.1 step 3).
#ifndef MOONDREAM_MODEL_IMAGE_TILING_H_
#define MOONDREAM_MODEL_IMAGE_TILING_H_

#include "model/config/config.h"

namespace md {

struct Tiling {
  int rows = 1;
  int cols = 1;

  int n_tiles() const { return rows * cols; }
  bool operator==(const Tiling&) const = default;
};

// The reference's select_tiling: enough crop_size tiles to cover
// height x width, close to the image's aspect ratio, at most max_crops.
Tiling SelectTiling(int height, int width, int crop_size, int max_crops);

// The tiling overlap-crop preprocessing picks for an image: SelectTiling on
// the image less both margins, with the usable window of a crop.
Tiling ImageTiling(int height, int width, const VisionConfig& config);

// Margin of one crop side in pixels (patch · overlap_margin = 56) and the
// usable window of a crop ((grid − 2·margin) · patch = 266).
int CropMarginPixels(const VisionConfig& config);
int CropWindowPixels(const VisionConfig& config);

}  // namespace md

#endif  // MOONDREAM_MODEL_IMAGE_TILING_H_
