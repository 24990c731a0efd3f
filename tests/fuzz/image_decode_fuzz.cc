// Fuzzes image decoding (model/image/image_decode.h) and, on what decodes, the
// overlap crops (model/image/image_crops.h).
//
// Instrumented: our BMP decoder, format detection, the header checks, the
// pixel conversion and the crop copying. libvips and the codec libraries
// under it are not instrumented: a bug inside them shows only as a crash.
//
// Crops use a small geometry of the real shape (crop = grid * patch, margins
// of overlap_margin patches): 42 px crops, 8 px margins, 26 px windows.
// Cropping at the real 378 px would spend nearly every run inside libvips'
// resize; this geometry sends small images through the same code, tiled up to
// max_crops. The real geometry's tiling (no resize) is computed as well.
#include <vips/vips.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "model/config/config.h"
#include "model/image/image_crops.h"
#include "model/image/image_decode.h"
#include "model/image/tiling.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

// Well below the server's 50 Mpx: the code paths are the same, and a few
// bytes of BMP or PNG that declare a large image cost a run time in
// proportion to its pixels.
constexpr int64_t kMaxPixels = 1'000'000;

md::VisionConfig SmallGeometry() {
  md::VisionConfig config;
  config.enc_patch_size = 2;
  config.crop_size = 42;
  config.overlap_margin = 4;
  config.max_crops = 12;
  return config;
}

void CheckTiling(const md::Tiling& tiling) {
  // No upper bound: for very wide or tall images the reference's
  // select_tiling itself gives more tiles than max_crops.
  FUZZ_CHECK(tiling.rows >= 1 && tiling.cols >= 1);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  // libvips logs a warning for much of what mutated inputs hold; the
  // statuses say what matters.
  setenv("VIPS_WARNING", "0", /*overwrite=*/0);
  const absl::Status started = md::EnsureVipsStarted();
  FUZZ_CHECK_MSG(started.ok(), started.ToString());
  // One worker thread: a run's time is then its own, and reports are simpler.
  vips_concurrency_set(1);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  md::DecodeOptions options;
  options.max_pixels = kMaxPixels;

  const absl::StatusOr<md::RgbImage> image = md::DecodeImage(bytes, options);
  if (!image.ok()) {
    // Bad data is the client's error; Internal is only for libvips failing to
    // start, which LLVMFuzzerInitialize ruled out.
    const absl::StatusCode code = image.status().code();
    FUZZ_CHECK_MSG(code == absl::StatusCode::kInvalidArgument ||
                       code == absl::StatusCode::kResourceExhausted,
                   image.status().ToString());
    return 0;
  }
  FUZZ_CHECK(image->width > 0 && image->height > 0);
  FUZZ_CHECK(static_cast<int64_t>(image->n_pixels()) <= kMaxPixels);
  FUZZ_CHECK(image->pixels_HWC.size() == image->n_pixels() * 3);

  // The header alone promises what decoding delivers.
  const absl::StatusOr<md::ImageInfo> info = md::ReadImageInfo(bytes, options);
  FUZZ_CHECK_MSG(info.ok(), info.status().ToString());
  FUZZ_CHECK(info->width == image->width && info->height == image->height);

  CheckTiling(md::ImageTiling(image->height, image->width, md::VisionConfig()));

  const md::VisionConfig small = SmallGeometry();
  const absl::StatusOr<md::OverlapCrops> crops =
      md::OverlapCropImage(*image, small);
  FUZZ_CHECK_MSG(crops.ok(), crops.status().ToString());
  CheckTiling(crops->tiling);
  FUZZ_CHECK(crops->tiling ==
             md::ImageTiling(image->height, image->width, small));
  FUZZ_CHECK(crops->crop_size == small.crop_size);
  FUZZ_CHECK(crops->crops_NSSC.size() ==
             static_cast<size_t>(crops->n_crops()) * crops->crop_bytes());
  return 0;
}
