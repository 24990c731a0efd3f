#include "model/image/image_decode.h"

#include <vips/vips.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "base/status_macros.h"

namespace md {

namespace {
constexpr char kTooManyPixelsPayload[] = "moondream/too-many-pixels";
}  // namespace

bool IsTooManyPixels(const absl::Status& status) {
  return status.GetPayload(kTooManyPixelsPayload).has_value();
}
namespace {

// Debian's Abseil has its own string_view, which StrCat needs.
absl::string_view Sv(std::string_view s) { return {s.data(), s.size()}; }

constexpr absl::string_view kAccepted =
    "JPEG, PNG, WebP, GIF, TIFF, HEIF/AVIF or BMP";

struct GObjectUnref {
  void operator()(void* object) const {
    if (object != nullptr) g_object_unref(object);
  }
};
using VipsImagePtr = std::unique_ptr<VipsImage, GObjectUnref>;
using VipsRegionPtr = std::unique_ptr<VipsRegion, GObjectUnref>;

// The only libvips loaders a request may reach. All are libvips' "trusted"
// loaders, built on the format's reference library.
struct AllowedLoader {
  const char* nickname;
  ImageFormat format;
};
constexpr AllowedLoader kAllowedLoaders[] = {
    {"jpegload_buffer", ImageFormat::kJpeg},
    {"pngload_buffer", ImageFormat::kPng},
    {"webpload_buffer", ImageFormat::kWebp},
    {"gifload_buffer", ImageFormat::kGif},
    {"tiffload_buffer", ImageFormat::kTiff},
    {"heifload_buffer", ImageFormat::kHeif},
};

// "<what>: <libvips' error text>", with a generic reason where libvips only
// logged a warning.
std::string WithVipsDetail(absl::string_view what) {
  const std::string detail = TakeVipsError();
  return absl::StrCat(what, ": ",
                      detail.empty() ? "invalid or truncated data" : detail);
}

absl::Status CheckDimensions(ImageFormat format, int64_t width, int64_t height,
                             const DecodeOptions& options) {
  if (width <= 0 || height <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(Sv(ImageFormatName(format)),
                                                   " image has zero size (",
                                                   width, "x", height, ")"));
  }
  // Each side is below 2^32 here, so the product cannot overflow; a side must
  // also fit an int, whatever the limit.
  if (width * height > options.max_pixels || width > INT32_MAX ||
      height > INT32_MAX) {
    absl::Status too_many = absl::InvalidArgumentError(absl::StrCat(
        Sv(ImageFormatName(format)), " image has too many pixels: ", width, "x",
        height, " = ", width * height, " > limit ", options.max_pixels));
    too_many.SetPayload(kTooManyPixelsPayload, absl::Cord());
    return too_many;
  }
  return absl::OkStatus();
}

// Allocates without throwing across the module boundary.
absl::StatusOr<RgbImage> AllocateRgb(int width, int height) {
  RgbImage image;
  image.width = width;
  image.height = height;
  try {
    image.pixels_HWC.resize(image.n_pixels() * 3);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("out of memory for a ", width, "x", height, " RGB image"));
  }
  return image;
}

// ---------------------------------------------------------------------------
// BMP. libvips has no BMP loader of its own (only through ImageMagick, whose
// attack surface we do not want on untrusted input), so BMP is parsed here:
// BITMAPCOREHEADER (OS/2 1.x), BITMAPINFOHEADER and its V2..V5 and OS/2 2.x
// extensions; 1/4/8-bit palettes, 16/24/32-bit direct colour, BI_BITFIELDS,
// RLE8 and RLE4. Channel values of n-bit fields scale as PIL's
// "BGR;15"/"BGR;16" unpackers do (v * 255 / max, truncated); alpha is
// dropped. Embedded JPEG/PNG and OS/2 Huffman/RLE24 are refused.

constexpr uint32_t kBiRgb = 0, kBiRle8 = 1, kBiRle4 = 2, kBiBitfields = 3,
                   kBiJpeg = 4, kBiPng = 5, kBiAlphaBitfields = 6;

uint16_t U16(std::string_view b, size_t at) {
  return static_cast<uint16_t>(static_cast<uint8_t>(b[at]) |
                               static_cast<uint8_t>(b[at + 1]) << 8);
}
uint32_t U32(std::string_view b, size_t at) {
  return static_cast<uint32_t>(U16(b, at)) |
         static_cast<uint32_t>(U16(b, at + 2)) << 16;
}

// One colour channel of a BI_BITFIELDS pixel.
struct BitField {
  int shift = 0;
  uint32_t max = 0;  // mask >> shift; 0 for an absent channel

  static BitField FromMask(uint32_t mask) {
    BitField field;
    if (mask == 0) return field;
    while (((mask >> field.shift) & 1u) == 0) ++field.shift;
    field.max = mask >> field.shift;
    return field;
  }
  uint8_t Extract(uint32_t pixel) const {
    if (max == 0) return 0;
    const uint64_t v = (pixel >> shift) & max;
    return static_cast<uint8_t>(v * 255 / max);
  }
};

struct BmpHeader {
  int width = 0;
  int height = 0;
  bool top_down = false;
  int bits = 0;
  uint32_t compression = kBiRgb;
  std::array<BitField, 3> fields;               // R, G, B for 16/32-bit pixels
  std::vector<std::array<uint8_t, 3>> palette;  // RGB
  size_t pixel_offset = 0;
};

absl::Status BmpError(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("invalid BMP: ", what));
}

absl::StatusOr<BmpHeader> ParseBmpHeader(std::string_view b,
                                         const DecodeOptions& options) {
  if (b.size() < 18) return BmpError("truncated file header");
  BmpHeader header;
  header.pixel_offset = U32(b, 10);
  const uint32_t dib_size = U32(b, 14);
  const bool os2_core = dib_size == 12;
  if (!os2_core && dib_size != 40 && dib_size != 52 && dib_size != 56 &&
      dib_size != 64 && dib_size != 108 && dib_size != 124) {
    return BmpError(absl::StrCat("unsupported header size ", dib_size));
  }
  if (b.size() < 14 + static_cast<size_t>(dib_size)) {
    return BmpError("truncated info header");
  }
  int64_t width, height;
  if (os2_core) {
    width = U16(b, 18);
    height = U16(b, 20);
    header.bits = U16(b, 24);
  } else {
    width = static_cast<int32_t>(U32(b, 18));
    height = static_cast<int32_t>(U32(b, 22));
    header.bits = U16(b, 28);
    header.compression = U32(b, 30);
  }
  if (height < 0) {
    header.top_down = true;
    height = -height;
  }
  if (width < 0) return BmpError("negative width");
  RETURN_IF_ERROR(CheckDimensions(ImageFormat::kBmp, width, height, options));
  header.width = static_cast<int>(width);
  header.height = static_cast<int>(height);

  const int bits = header.bits;
  if (bits != 1 && bits != 4 && bits != 8 && bits != 16 && bits != 24 &&
      bits != 32) {
    return BmpError(absl::StrCat("unsupported bit depth ", bits));
  }
  const uint32_t c = header.compression;
  if (c == kBiJpeg || c == kBiPng) {
    return BmpError("embedded JPEG/PNG data is not supported");
  }
  const bool bitfields = c == kBiBitfields || c == kBiAlphaBitfields;
  const bool ok_compression =
      c == kBiRgb || (c == kBiRle8 && bits == 8) ||
      (c == kBiRle4 && bits == 4) ||
      (bitfields && dib_size != 64 && (bits == 16 || bits == 32));
  if (!ok_compression) {
    return BmpError(
        absl::StrCat("unsupported compression ", c, " at ", bits, " bits"));
  }
  if ((c == kBiRle8 || c == kBiRle4) && header.top_down) {
    return BmpError("RLE data must be bottom-up");
  }

  size_t table_offset = 14 + dib_size;  // masks or palette follow the header
  std::array<uint32_t, 3> masks = {0x7c00, 0x3e0, 0x1f};
  if (bits == 32) masks = {0xff0000, 0xff00, 0xff};
  if (bitfields) {
    size_t at = 54;  // inside V2+ headers, else just after the 40-byte one
    if (dib_size == 40) {
      const size_t n_masks = c == kBiAlphaBitfields ? 4 : 3;
      if (b.size() < table_offset + 4 * n_masks) {
        return BmpError("truncated bit masks");
      }
      table_offset += 4 * n_masks;
    }
    masks = {U32(b, at), U32(b, at + 4), U32(b, at + 8)};
  }
  for (int i = 0; i < 3; ++i) header.fields[i] = BitField::FromMask(masks[i]);

  if (bits <= 8) {
    const uint32_t clr_used = os2_core ? 0 : U32(b, 46);
    const uint32_t n_colors = clr_used == 0 ? 1u << bits : clr_used;
    if (n_colors > 256) {
      return BmpError(absl::StrCat("palette of ", n_colors, " colours"));
    }
    const size_t entry = os2_core ? 3 : 4;
    if (b.size() < table_offset + n_colors * entry) {
      return BmpError("truncated palette");
    }
    header.palette.resize(n_colors);
    for (uint32_t i = 0; i < n_colors; ++i) {
      const size_t at = table_offset + i * entry;  // B, G, R[, reserved]
      header.palette[i] = {static_cast<uint8_t>(b[at + 2]),
                           static_cast<uint8_t>(b[at + 1]),
                           static_cast<uint8_t>(b[at])};
    }
  }
  if (header.pixel_offset >= b.size()) return BmpError("no pixel data");
  return header;
}

void PutPaletteColor(const BmpHeader& header, uint32_t index, uint8_t* rgb) {
  // Indices past the palette read as black.
  if (index < header.palette.size()) {
    std::memcpy(rgb, header.palette[index].data(), 3);
  } else {
    rgb[0] = rgb[1] = rgb[2] = 0;
  }
}

absl::Status DecodeBmpUncompressed(std::string_view b, const BmpHeader& header,
                                   RgbImage& image) {
  const size_t width = header.width;
  const size_t stride = (width * header.bits + 31) / 32 * 4;
  if ((b.size() - header.pixel_offset) / stride <
      static_cast<size_t>(header.height)) {
    return BmpError("truncated pixel data");
  }
  for (int r = 0; r < header.height; ++r) {
    const size_t row_at = header.pixel_offset + r * stride;
    const int y = header.top_down ? r : header.height - 1 - r;
    uint8_t* out = &image.pixels_HWC[static_cast<size_t>(y) * width * 3];
    for (size_t x = 0; x < width; ++x, out += 3) {
      switch (header.bits) {
        case 1:
        case 4:
        case 8: {
          const size_t bit = x * header.bits;
          const uint8_t byte = static_cast<uint8_t>(b[row_at + bit / 8]);
          const int shift = 8 - header.bits - static_cast<int>(bit % 8);
          PutPaletteColor(header, (byte >> shift) & ((1u << header.bits) - 1),
                          out);
          break;
        }
        case 24:
          out[0] = static_cast<uint8_t>(b[row_at + 3 * x + 2]);
          out[1] = static_cast<uint8_t>(b[row_at + 3 * x + 1]);
          out[2] = static_cast<uint8_t>(b[row_at + 3 * x]);
          break;
        default: {  // 16 or 32 bits through the bit fields
          const uint32_t pixel = header.bits == 16 ? U16(b, row_at + 2 * x)
                                                   : U32(b, row_at + 4 * x);
          for (int i = 0; i < 3; ++i) out[i] = header.fields[i].Extract(pixel);
        }
      }
    }
  }
  return absl::OkStatus();
}

// RLE8/RLE4 into palette indices; pixels a delta skips keep index 0.
absl::Status DecodeBmpRle(std::string_view b, const BmpHeader& header,
                          RgbImage& image) {
  const bool rle4 = header.compression == kBiRle4;
  const size_t width = header.width, height = header.height;
  std::vector<uint8_t> indices(width * height, 0);  // rows bottom-up
  size_t x = 0, y = 0, at = header.pixel_offset;
  auto put = [&](uint8_t index) {
    if (x < width && y < height) indices[y * width + x] = index;
    ++x;
  };
  while (true) {
    if (b.size() - at < 2) {
      if (y >= height) break;  // every row ended; only the marker is missing
      return BmpError("truncated RLE data");
    }
    const uint8_t n = static_cast<uint8_t>(b[at]);
    const uint8_t v = static_cast<uint8_t>(b[at + 1]);
    at += 2;
    if (n > 0) {  // encoded run: n pixels of v (RLE4: alternating nibbles)
      for (int k = 0; k < n && x < width; ++k) {
        put(rle4 ? ((k % 2 == 0) ? v >> 4 : v & 15) : v);
      }
    } else if (v == 0) {  // end of line
      x = 0;
      ++y;
    } else if (v == 1) {  // end of bitmap
      break;
    } else if (v == 2) {  // delta
      if (b.size() - at < 2) return BmpError("truncated RLE delta");
      x += static_cast<uint8_t>(b[at]);
      y += static_cast<uint8_t>(b[at + 1]);
      at += 2;
    } else {  // absolute run of v pixels, padded to a 16-bit boundary
      const size_t n_bytes = rle4 ? (v + 1) / 2 : v;
      if (b.size() - at < n_bytes) return BmpError("truncated RLE run");
      for (int k = 0; k < v; ++k) {
        const uint8_t byte = static_cast<uint8_t>(b[at + (rle4 ? k / 2 : k)]);
        put(rle4 ? ((k % 2 == 0) ? byte >> 4 : byte & 15) : byte);
      }
      at += std::min(n_bytes + n_bytes % 2, b.size() - at);
    }
    if (y > height) y = height;  // keeps x/y arithmetic bounded
    if (x > width) x = width;
  }
  for (size_t r = 0; r < height; ++r) {
    uint8_t* out = &image.pixels_HWC[(height - 1 - r) * width * 3];
    for (size_t i = 0; i < width; ++i, out += 3) {
      PutPaletteColor(header, indices[r * width + i], out);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<RgbImage> DecodeBmp(std::string_view bytes,
                                   const DecodeOptions& options) {
  ASSIGN_OR_RETURN(const BmpHeader header, ParseBmpHeader(bytes, options));
  ASSIGN_OR_RETURN(RgbImage image, AllocateRgb(header.width, header.height));
  if (header.compression == kBiRle8 || header.compression == kBiRle4) {
    RETURN_IF_ERROR(DecodeBmpRle(bytes, header, image));
  } else {
    RETURN_IF_ERROR(DecodeBmpUncompressed(bytes, header, image));
  }
  return image;
}

bool IsBmp(std::string_view bytes) {
  return bytes.size() >= 2 && bytes[0] == 'B' && bytes[1] == 'M';
}

// ---------------------------------------------------------------------------
// libvips formats.

absl::StatusOr<ImageFormat> DetectVipsFormat(std::string_view bytes) {
  // libvips names the loader's class ("VipsForeignLoadPngBuffer"); compare
  // its nickname ("pngload_buffer"), which is stable across versions.
  const char* loader =
      vips_foreign_find_load_buffer(bytes.data(), bytes.size());
  if (loader == nullptr) {
    TakeVipsError();
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported image format: not ", kAccepted));
  }
  const char* nickname = vips_nickname_find(g_type_from_name(loader));
  for (const AllowedLoader& allowed : kAllowedLoaders) {
    if (nickname != nullptr && std::strcmp(nickname, allowed.nickname) == 0) {
      return allowed.format;
    }
  }
  // "svgload_buffer" -> "svg".
  std::string name = nickname != nullptr ? nickname : loader;
  if (const size_t at = name.find("load"); at != std::string::npos && at > 0) {
    name.resize(at);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unsupported image format \"", name, "\"; accepted: ", kAccepted));
}

// Reads the header only: libvips loaders decode pixels on demand.
absl::StatusOr<VipsImagePtr> OpenVipsHeader(std::string_view bytes,
                                            ImageFormat format) {
  VipsImage* image = vips_image_new_from_buffer(
      bytes.data(), bytes.size(), "", "access", VIPS_ACCESS_SEQUENTIAL,
      "fail_on", VIPS_FAIL_ON_ERROR, nullptr);
  if (image == nullptr) {
    return absl::InvalidArgumentError(WithVipsDetail(
        absl::StrCat("cannot read ", Sv(ImageFormatName(format)), " header")));
  }
  return VipsImagePtr(image);
}

// How the bands of a decoded image map to RGB.
enum class BandLayout { kGrey, kRgb, kCmyk };

// Brings a loaded image to 8- or 16-bit samples in grey, RGB or CMYK bands
// (extra bands, i.e. alpha, are ignored later).
absl::StatusOr<VipsImagePtr> Normalize(VipsImagePtr image, BandLayout& layout) {
  VipsImage* out = nullptr;
  // Takes `out` after the libvips call that `rc` came from has set it.
  auto step = [&](int rc, absl::string_view what) -> absl::Status {
    if (rc != 0) {
      return absl::InvalidArgumentError(
          WithVipsDetail(absl::StrCat("cannot convert image (", what, ")")));
    }
    image.reset(out);
    return absl::OkStatus();
  };
  if (image->Coding != VIPS_CODING_NONE) {  // LABQ or RAD packing
    RETURN_IF_ERROR(step(vips_image_decode(image.get(), &out), "unpack"));
  }
  switch (vips_image_get_interpretation(image.get())) {
    case VIPS_INTERPRETATION_CMYK:
      layout = image->Bands >= 4 ? BandLayout::kCmyk : BandLayout::kGrey;
      break;
    case VIPS_INTERPRETATION_LAB:
    case VIPS_INTERPRETATION_LABQ:
    case VIPS_INTERPRETATION_LABS:
    case VIPS_INTERPRETATION_LCH:
    case VIPS_INTERPRETATION_CMC:
    case VIPS_INTERPRETATION_XYZ:
    case VIPS_INTERPRETATION_YXY:
    case VIPS_INTERPRETATION_HSV:
    case VIPS_INTERPRETATION_scRGB:
      RETURN_IF_ERROR(step(vips_colourspace(image.get(), &out,
                                            VIPS_INTERPRETATION_sRGB, nullptr),
                           "to sRGB"));
      layout = BandLayout::kRgb;
      break;
    default:
      layout = image->Bands >= 3 ? BandLayout::kRgb : BandLayout::kGrey;
  }
  const VipsBandFormat format = vips_image_get_format(image.get());
  if (format != VIPS_FORMAT_UCHAR && format != VIPS_FORMAT_USHORT) {
    // Signed, 32-bit and float samples clip to 0..255, as PIL's "I" and "F"
    // modes do on .convert("RGB").
    RETURN_IF_ERROR(
        step(vips_cast(image.get(), &out, VIPS_FORMAT_UCHAR, nullptr), "cast"));
  }
  return image;
}

// PIL's cmyk2rgb: nk = 255 - k; out = nk - round(c * nk / 255).
uint8_t CmykChannel(int c, int k) {
  const int nk = 255 - k;
  const int t = c * nk + 128;
  return static_cast<uint8_t>(std::clamp(nk - (((t >> 8) + t) >> 8), 0, 255));
}

void ConvertRow(const VipsPel* row, int width, int bands, bool wide,
                BandLayout layout, uint8_t* out) {
  auto sample = [&](int i) -> int {
    if (!wide) return row[i];
    uint16_t v;
    std::memcpy(&v, row + 2 * i, 2);
    return v >> 8;  // the high byte, as PIL unpacks 16-bit RGB
  };
  for (int x = 0; x < width; ++x, out += 3) {
    const int p = x * bands;
    switch (layout) {
      case BandLayout::kGrey:
        out[0] = out[1] = out[2] = static_cast<uint8_t>(sample(p));
        break;
      case BandLayout::kRgb:
        for (int c = 0; c < 3; ++c)
          out[c] = static_cast<uint8_t>(sample(p + c));
        break;
      case BandLayout::kCmyk:
        for (int c = 0; c < 3; ++c) {
          out[c] = CmykChannel(sample(p + c), sample(p + 3));
        }
        break;
    }
  }
}

absl::StatusOr<RgbImage> DecodeWithVips(std::string_view bytes,
                                        const DecodeOptions& options) {
  ASSIGN_OR_RETURN(const ImageFormat format, DetectVipsFormat(bytes));
  ASSIGN_OR_RETURN(VipsImagePtr header, OpenVipsHeader(bytes, format));
  RETURN_IF_ERROR(
      CheckDimensions(format, header->Xsize, header->Ysize, options));
  BandLayout layout;
  ASSIGN_OR_RETURN(VipsImagePtr image, Normalize(std::move(header), layout));
  ASSIGN_OR_RETURN(RgbImage rgb, AllocateRgb(image->Xsize, image->Ysize));

  // Pull the pixels through a region strip by strip, top to bottom (the
  // loader runs sequentially), converting straight into the output.
  VipsRegionPtr region(vips_region_new(image.get()));
  const int width = rgb.width, bands = image->Bands;
  const bool wide = vips_image_get_format(image.get()) == VIPS_FORMAT_USHORT;
  constexpr int kStripRows = 64;
  for (int top = 0; top < rgb.height; top += kStripRows) {
    const VipsRect strip = {0, top, width,
                            std::min(kStripRows, rgb.height - top)};
    if (vips_region_prepare(region.get(), &strip) != 0) {
      return absl::InvalidArgumentError(WithVipsDetail(absl::StrCat(
          "cannot decode ", Sv(ImageFormatName(format)), " pixels")));
    }
    for (int y = top; y < top + strip.height; ++y) {
      ConvertRow(VIPS_REGION_ADDR(region.get(), 0, y), width, bands, wide,
                 layout, &rgb.pixels_HWC[static_cast<size_t>(y) * width * 3]);
    }
  }
  return rgb;
}

}  // namespace

std::string_view ImageFormatName(ImageFormat format) {
  switch (format) {
    case ImageFormat::kJpeg:
      return "JPEG";
    case ImageFormat::kPng:
      return "PNG";
    case ImageFormat::kWebp:
      return "WebP";
    case ImageFormat::kGif:
      return "GIF";
    case ImageFormat::kTiff:
      return "TIFF";
    case ImageFormat::kHeif:
      return "HEIF";
    case ImageFormat::kBmp:
      return "BMP";
  }
  return "unknown";
}

absl::Status EnsureVipsStarted() {
  // A function-local static is initialised once, thread-safely.
  static const absl::Status* const status = [] {
    if (VIPS_INIT("moondream-serve") != 0) {
      return new absl::Status(absl::InternalError(
          absl::StrCat("libvips failed to start: ", TakeVipsError())));
    }
    // Defence in depth behind the allowlist: no SVG, PDF, ImageMagick, ...
    vips_block_untrusted_set(TRUE);
    // Each request's images are used once; caching them only holds memory.
    vips_cache_set_max(0);
    return new absl::Status();
  }();
  return *status;
}

std::string TakeVipsError() {
  // libvips keeps one error buffer per process: under concurrent failures a
  // message may carry another thread's text too. Statuses never depend on it.
  char* text = vips_error_buffer_copy();
  std::string message = text != nullptr ? text : "";
  g_free(text);
  // libvips ends each message with a newline; keep one line.
  while (!message.empty() && message.back() == '\n') message.pop_back();
  std::replace(message.begin(), message.end(), '\n', ';');
  return message;
}

absl::StatusOr<ImageInfo> ReadImageInfo(std::string_view bytes,
                                        const DecodeOptions& options) {
  if (bytes.empty()) return absl::InvalidArgumentError("empty image data");
  if (IsBmp(bytes)) {
    ASSIGN_OR_RETURN(const BmpHeader header, ParseBmpHeader(bytes, options));
    return ImageInfo{ImageFormat::kBmp, header.width, header.height};
  }
  RETURN_IF_ERROR(EnsureVipsStarted());
  ASSIGN_OR_RETURN(const ImageFormat format, DetectVipsFormat(bytes));
  ASSIGN_OR_RETURN(const VipsImagePtr image, OpenVipsHeader(bytes, format));
  RETURN_IF_ERROR(CheckDimensions(format, image->Xsize, image->Ysize, options));
  return ImageInfo{format, image->Xsize, image->Ysize};
}

absl::StatusOr<RgbImage> DecodeImage(std::string_view bytes,
                                     const DecodeOptions& options) {
  if (bytes.empty()) return absl::InvalidArgumentError("empty image data");
  if (IsBmp(bytes)) return DecodeBmp(bytes, options);
  RETURN_IF_ERROR(EnsureVipsStarted());
  return DecodeWithVips(bytes, options);
}

}  // namespace md
