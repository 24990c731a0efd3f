// Moondream's overlap-crop preprocessing (docs/DESIGN.md §2.1 steps 2-5): the
// global crop plus overlapping local crops, as uint8 pixels. Normalisation to
// float (step 6) belongs to the vision encoder's input, not here.
//
// Resizing is libvips' vips_resize (Lanczos-3), because that is what the
// reference calls (pyvips Image.new_from_array(uint8 HWC).resize(scale,
// vscale=...)): with Debian 12's libvips 8.14 the crops match the reference
// bit for bit. OpenCV's INTER_LANCZOS4 would not do: it does not widen its
// kernel when shrinking (no anti-aliasing), so downscaled crops differ from
// the reference by far more than rounding.
#ifndef MOONDREAM_MODEL_IMAGE_IMAGE_CROPS_H_
#define MOONDREAM_MODEL_IMAGE_IMAGE_CROPS_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "model/config/config.h"
#include "model/image/image_decode.h"
#include "model/image/tiling.h"

namespace md {

// N = 1 + tiling.rows * tiling.cols crops, S = crop_size (378), C = 3.
struct OverlapCrops {
  Tiling tiling;
  int crop_size = 0;
  // [N, S, S, C] uint8: the global crop (whole image resized to S x S), then
  // the local crops row-major, zero padded where the resized image ends.
  std::vector<uint8_t> crops_NSSC;

  int n_crops() const { return 1 + tiling.n_tiles(); }
  size_t crop_bytes() const {
    return static_cast<size_t>(crop_size) * crop_size * 3;
  }
  const uint8_t* crop(int i) const {
    return crops_NSSC.data() + i * crop_bytes();
  }
};

// Resizes exactly as the reference: vips_resize(image, scale = out_width /
// width, vscale = out_height / height), default Lanczos-3 kernel. Fails with
// Internal if libvips rounds to another size than asked for.
absl::StatusOr<RgbImage> ResizeImage(const RgbImage& image, int out_width,
                                     int out_height);

// The reference's overlap_crop_image on an RGB image: tiling =
// ImageTiling(height, width, config); the whole image resized to
// (rows * window + 2 * margin) x (cols * window + 2 * margin); local crop
// (i, j) = resized[i * window : i * window + S, j * window : j * window + S].
absl::StatusOr<OverlapCrops> OverlapCropImage(const RgbImage& image,
                                              const VisionConfig& config);

}  // namespace md

#endif  // MOONDREAM_MODEL_IMAGE_IMAGE_CROPS_H_
