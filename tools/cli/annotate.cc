#include "tools/cli/annotate.h"

#include <vips/vips.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace md::cli {
namespace {

// Owns a VipsImage reference.
struct ImageRef {
  VipsImage* image = nullptr;
  ~ImageRef() {
    if (image) g_object_unref(image);
  }
};

double Ink(int channel, bool gaze) {
  static constexpr double kBoxInk[3] = {255, 40, 40};
  static constexpr double kGazeInk[3] = {40, 220, 255};
  return gaze ? kGazeInk[channel] : kBoxInk[channel];
}

absl::Status VipsFailure(const char* what) {
  std::string detail = vips_error_buffer();
  vips_error_clear();
  return absl::InternalError(absl::StrCat("annotate: ", what, ": ", detail));
}

}  // namespace

absl::Status WriteAnnotatedPng(const RgbImage& image, const Annotations& notes,
                               const std::string& path) {
  if (VIPS_INIT("moondream-cli") != 0) return VipsFailure("starting libvips");
  ImageRef src, canvas;
  src.image = vips_image_new_from_memory(image.pixels_HWC.data(),
                                         image.pixels_HWC.size(), image.width,
                                         image.height, 3, VIPS_FORMAT_UCHAR);
  if (!src.image) return VipsFailure("wrapping pixels");
  // Draw operations work in place on a private copy.
  if (vips_copy(src.image, &canvas.image, nullptr) != 0 ||
      vips_image_wio_input(canvas.image) != 0) {
    return VipsFailure("copying pixels");
  }
  const int w = image.width, h = image.height;
  const int thickness = std::max(2, std::min(w, h) / 200);
  auto px = [&](double v, int size) {
    return static_cast<int>(std::lround(v * size));
  };
  auto rect = [&](int left, int top, int width, int height, bool gaze) {
    double ink[3] = {Ink(0, gaze), Ink(1, gaze), Ink(2, gaze)};
    return vips_draw_rect(canvas.image, ink, 3, left, top, width, height,
                          "fill", TRUE, nullptr);
  };
  auto dot = [&](Point p, bool gaze) {
    double ink[3] = {Ink(0, gaze), Ink(1, gaze), Ink(2, gaze)};
    return vips_draw_circle(canvas.image, ink, 3, px(p.x, w), px(p.y, h),
                            3 * thickness, "fill", TRUE, nullptr);
  };

  for (const Box& b : notes.boxes) {
    const int x0 = px(b.x_min, w), y0 = px(b.y_min, h);
    const int x1 = px(b.x_max, w), y1 = px(b.y_max, h);
    const int bw = std::max(1, x1 - x0), bh = std::max(1, y1 - y0);
    if (rect(x0, y0, bw, thickness, false) ||
        rect(x0, y1 - thickness, bw, thickness, false) ||
        rect(x0, y0, thickness, bh, false) ||
        rect(x1 - thickness, y0, thickness, bh, false)) {
      return VipsFailure("drawing a box");
    }
  }
  for (const Point& p : notes.points) {
    if (dot(p, false)) return VipsFailure("drawing a point");
  }
  if (notes.eye && notes.gaze) {
    double ink[3] = {Ink(0, true), Ink(1, true), Ink(2, true)};
    for (int t = -thickness / 2; t <= thickness / 2; ++t) {
      if (vips_draw_line(canvas.image, ink, 3, px(notes.eye->x, w) + t,
                         px(notes.eye->y, h), px(notes.gaze->x, w) + t,
                         px(notes.gaze->y, h), nullptr)) {
        return VipsFailure("drawing the gaze line");
      }
    }
  }
  if (notes.eye && dot(*notes.eye, true)) return VipsFailure("drawing the eye");
  if (notes.gaze && dot(*notes.gaze, true))
    return VipsFailure("drawing the gaze");
  if (vips_pngsave(canvas.image, path.c_str(), nullptr) != 0) {
    return VipsFailure(absl::StrCat("writing ", path).c_str());
  }
  return absl::OkStatus();
}

}  // namespace md::cli
