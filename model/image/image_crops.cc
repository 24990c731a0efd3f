#include "model/image/image_crops.h"

#include <vips/vips.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <new>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace md {
namespace {

struct GObjectUnref {
  void operator()(void* object) const {
    if (object != nullptr) g_object_unref(object);
  }
};
using VipsImagePtr = std::unique_ptr<VipsImage, GObjectUnref>;

absl::Status CheckImage(const RgbImage& image) {
  if (image.width <= 0 || image.height <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "image has zero size (", image.width, "x", image.height, ")"));
  }
  if (image.pixels_HWC.size() != image.n_pixels() * 3) {
    return absl::InvalidArgumentError(absl::StrCat(
        "image of ", image.width, "x", image.height, " has ",
        image.pixels_HWC.size(), " bytes, not ", image.n_pixels() * 3));
  }
  return absl::OkStatus();
}

// Copies rows [y0, y0 + rows) x columns [x0, x0 + cols) of `src` into the
// top-left of an S x S crop; the rest of the crop stays zero.
void CopyWindow(const RgbImage& src, int y0, int x0, int size, uint8_t* crop) {
  const int rows = std::clamp(src.height - y0, 0, size);
  const int cols = std::clamp(src.width - x0, 0, size);
  for (int y = 0; y < rows; ++y) {
    const uint8_t* from =
        &src.pixels_HWC[(static_cast<size_t>(y0 + y) * src.width + x0) * 3];
    std::memcpy(crop + static_cast<size_t>(y) * size * 3, from,
                static_cast<size_t>(cols) * 3);
  }
}

}  // namespace

absl::StatusOr<RgbImage> ResizeImage(const RgbImage& image, int out_width,
                                     int out_height) {
  RETURN_IF_ERROR(CheckImage(image));
  if (out_width <= 0 || out_height <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "resize target has zero size (", out_width, "x", out_height, ")"));
  }
  RETURN_IF_ERROR(EnsureVipsStarted());

  // Wraps our pixels without copying; `image` outlives every use of `in`.
  VipsImagePtr in(vips_image_new_from_memory(
      image.pixels_HWC.data(), image.pixels_HWC.size(), image.width,
      image.height, 3, VIPS_FORMAT_UCHAR));
  if (in == nullptr) {
    return absl::InternalError(
        absl::StrCat("vips_image_new_from_memory: ", TakeVipsError()));
  }
  // The reference computes both scales as Python floats (doubles).
  const double scale = static_cast<double>(out_width) / image.width;
  const double vscale = static_cast<double>(out_height) / image.height;
  VipsImage* resized = nullptr;
  if (vips_resize(in.get(), &resized, scale, "vscale", vscale, nullptr) != 0) {
    return absl::InternalError(
        absl::StrCat("vips_resize ", image.width, "x", image.height, " -> ",
                     out_width, "x", out_height, ": ", TakeVipsError()));
  }
  VipsImagePtr out(resized);
  if (out->Xsize != out_width || out->Ysize != out_height || out->Bands != 3 ||
      out->BandFmt != VIPS_FORMAT_UCHAR) {
    return absl::InternalError(absl::StrCat(
        "vips_resize ", image.width, "x", image.height, " -> ", out_width, "x",
        out_height, " gave ", out->Xsize, "x", out->Ysize, "x", out->Bands));
  }

  size_t n_bytes = 0;
  void* pixels = vips_image_write_to_memory(out.get(), &n_bytes);
  if (pixels == nullptr) {
    return absl::InternalError(
        absl::StrCat("vips_resize evaluation: ", TakeVipsError()));
  }
  std::unique_ptr<void, decltype(&g_free)> owned(pixels, &g_free);
  RgbImage result;
  result.width = out_width;
  result.height = out_height;
  if (n_bytes != result.n_pixels() * 3) {
    return absl::InternalError(absl::StrCat(
        "vips_resize wrote ", n_bytes, " bytes, not ", result.n_pixels() * 3));
  }
  const uint8_t* begin = static_cast<const uint8_t*>(pixels);
  try {
    result.pixels_HWC.assign(begin, begin + n_bytes);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError("out of memory for a resized image");
  }
  return result;
}

absl::StatusOr<OverlapCrops> OverlapCropImage(const RgbImage& image,
                                              const VisionConfig& config) {
  RETURN_IF_ERROR(CheckImage(image));
  const int size = config.crop_size;
  const int margin = CropMarginPixels(config);
  const int window = CropWindowPixels(config);
  if (size <= 0 || window <= 0 || margin < 0) {
    return absl::InvalidArgumentError(absl::StrCat("bad crop geometry: crop ",
                                                   size, ", window ", window,
                                                   ", margin ", margin));
  }

  OverlapCrops crops;
  crops.tiling = ImageTiling(image.height, image.width, config);
  crops.crop_size = size;
  try {
    crops.crops_NSSC.assign(crops.n_crops() * crops.crop_bytes(), 0);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError("out of memory for image crops");
  }

  // Global crop: the whole image squashed to S x S.
  ASSIGN_OR_RETURN(const RgbImage global, ResizeImage(image, size, size));
  std::memcpy(crops.crops_NSSC.data(), global.pixels_HWC.data(),
              crops.crop_bytes());

  // Local crops: overlapping S x S windows, `window` apart, over the image
  // resized so that the tiles plus both margins cover it exactly.
  const Tiling& t = crops.tiling;
  ASSIGN_OR_RETURN(const RgbImage resized,
                   ResizeImage(image, t.cols * window + 2 * margin,
                               t.rows * window + 2 * margin));
  for (int i = 0; i < t.rows; ++i) {
    for (int j = 0; j < t.cols; ++j) {
      const int i_crop = 1 + i * t.cols + j;
      CopyWindow(resized, i * window, j * window, size,
                 crops.crops_NSSC.data() + i_crop * crops.crop_bytes());
    }
  }
  return crops;
}

}  // namespace md
