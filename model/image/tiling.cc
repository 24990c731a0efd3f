#include "model/image/tiling.h"

#include <algorithm>
#include <cmath>

namespace md {

Tiling SelectTiling(int height, int width, int crop_size, int max_crops) {
  if (height <= crop_size || width <= crop_size) return {1, 1};

  const int min_h = (height + crop_size - 1) / crop_size;
  const int min_w = (width + crop_size - 1) / crop_size;

  if (min_h * min_w > max_crops) {
    const double ratio =
        std::sqrt(static_cast<double>(max_crops) / (min_h * min_w));
    return {std::max(1, static_cast<int>(std::floor(min_h * ratio))),
            std::max(1, static_cast<int>(std::floor(min_w * ratio)))};
  }

  // Tiles in the image's aspect ratio, raised to the minimum cover.
  int h_tiles = static_cast<int>(
      std::floor(std::sqrt(static_cast<double>(max_crops) * height / width)));
  int w_tiles = static_cast<int>(
      std::floor(std::sqrt(static_cast<double>(max_crops) * width / height)));
  h_tiles = std::max(h_tiles, min_h);
  w_tiles = std::max(w_tiles, min_w);

  if (h_tiles * w_tiles > max_crops) {
    if (w_tiles > h_tiles) {
      w_tiles = max_crops / h_tiles;
    } else {
      h_tiles = max_crops / w_tiles;
    }
  }
  return {std::max(1, h_tiles), std::max(1, w_tiles)};
}

int CropMarginPixels(const VisionConfig& config) {
  return config.enc_patch_size * config.overlap_margin;
}

int CropWindowPixels(const VisionConfig& config) {
  return (config.grid() - 2 * config.overlap_margin) * config.enc_patch_size;
}

Tiling ImageTiling(int height, int width, const VisionConfig& config) {
  const int margins = 2 * CropMarginPixels(config);
  return SelectTiling(height - margins, width - margins,
                      CropWindowPixels(config), config.max_crops);
}

}  // namespace md
