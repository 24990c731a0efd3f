// Decoding untrusted image bytes into plain 8-bit RGB
// (docs/DESIGN.md §2.1 step 1).
//
// The reference opens images with PIL and calls .convert("RGB"); this module
// reproduces what that yields for the formats a client may send:
//   - grey is replicated to three channels, palettes are expanded;
//   - alpha is DROPPED, not composited onto a background;
//   - 16-bit samples keep their high byte (PIL's "RGB;16B" unpacking);
//   - CMYK uses PIL's naive cmyk2rgb, not an ICC transform;
//   - no EXIF auto-rotation: pixels come out in stored order.
// One deliberate difference: PIL clamps 16-bit GREY to 0..255 (nearly every
// pixel white); we take the high byte there too, as for 16-bit RGB.
//
// Formats: JPEG, PNG, WebP, GIF (first frame), TIFF (first page), HEIF/AVIF
// through libvips' loaders, and BMP through a small decoder of our own
// (libvips reads BMP only through ImageMagick, which we keep out of the
// request path). Everything else -- SVG, PDF, ImageMagick formats, libvips'
// own file formats -- is refused: libvips' untrusted loaders are blocked for
// the whole process and the detected loader must be on an allowlist.
//
// Decompression bombs are refused from the header alone, before any pixel is
// decoded, with InvalidArgument marked by IsTooManyPixels (callers map it to
// "too large", never by reading the message): the request is wrong and
// retrying it cannot help, so it is not ResourceExhausted. Undecodable,
// truncated, corrupt or unsupported data is InvalidArgument as well; a failure
// of the library itself (libvips does not start) is Internal.
#ifndef MOONDREAM_MODEL_IMAGE_IMAGE_DECODE_H_
#define MOONDREAM_MODEL_IMAGE_IMAGE_DECODE_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace md {

// True for the error of an image over DecodeOptions::max_pixels.
bool IsTooManyPixels(const absl::Status& status);

// An 8-bit RGB image. H = height, W = width, C = 3 channels:
// pixels_HWC[(y * width + x) * 3 + c], rows top to bottom.
struct RgbImage {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> pixels_HWC;

  size_t n_pixels() const { return static_cast<size_t>(width) * height; }
};

enum class ImageFormat { kJpeg, kPng, kWebp, kGif, kTiff, kHeif, kBmp };

// "JPEG", "PNG", "WebP", "GIF", "TIFF", "HEIF", "BMP".
std::string_view ImageFormatName(ImageFormat format);

struct ImageInfo {
  ImageFormat format = ImageFormat::kPng;
  int width = 0;
  int height = 0;
};

struct DecodeOptions {
  // Largest width * height accepted, checked on the header's dimensions
  // before any pixel is decoded. 50 megapixels decode to 150 MB of RGB.
  int64_t max_pixels = 50'000'000;
};

// Identifies the format and reads the dimensions from the header only. Fails
// for unsupported formats, zero-size images and images over the pixel limit,
// exactly as DecodeImage would before decoding.
absl::StatusOr<ImageInfo> ReadImageInfo(std::string_view bytes,
                                        const DecodeOptions& options = {});

// Decodes `bytes` (untrusted) to RGB. Truncated or corrupt data is an error,
// never a partly grey image. Thread-safe.
absl::StatusOr<RgbImage> DecodeImage(std::string_view bytes,
                                     const DecodeOptions& options = {});

// Starts libvips once per process (thread-safe; every function of
// model/image_*.h calls it). Also blocks libvips' untrusted loaders and
// turns its operation cache off. Returns the same status on every call.
absl::Status EnsureVipsStarted();

// Takes and clears libvips' error text (one line, without trailing newline).
// For model/image_*.cc.
std::string TakeVipsError();

}  // namespace md

#endif  // MOONDREAM_MODEL_IMAGE_IMAGE_DECODE_H_
