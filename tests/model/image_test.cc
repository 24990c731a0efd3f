// Image decoding and overlap crops: bit-exact against the reference's golden
// crops, PIL's .convert("RGB") semantics, our BMP decoder, and robustness on
// untrusted bytes (truncations, corruptions, bombs, refused formats).
#include <sys/resource.h>
#include <vips/vips.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/config/config.h"
#include "model/image/image_crops.h"
#include "model/image/image_decode.h"
#include "model/image/tiling.h"
#include "model/io/safetensors.h"

namespace md {
namespace {

using Json = nlohmann::json;
using ::testing::HasSubstr;

// --- Golden data. ---

std::string GoldenDir() {
  if (const char* dir = std::getenv("MD_GOLDEN_DIR"); dir != nullptr && *dir) {
    return dir;
  }
  return std::string(MD_SOURCE_DIR) + "/tests/data/golden";
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

const Json& Cases() {
  static const Json* cases =
      new Json(Json::parse(ReadFile(GoldenDir() + "/cases.json")));
  return *cases;
}

const SafetensorsFile* CaseTensors() {
  static const SafetensorsFile* file = [] {
    auto opened = SafetensorsFile::Open(GoldenDir() + "/cases.safetensors");
    EXPECT_TRUE(opened.ok()) << opened.status();
    return opened.ok() ? opened->release() : nullptr;
  }();
  return file;
}

// The crop geometry of the golden set's config.json (md_image does not link
// the full config parser).
VisionConfig GoldenVision() {
  const Json config = Json::parse(ReadFile(GoldenDir() + "/config.json"));
  const Json& v = config.at("vision");
  VisionConfig vision;
  vision.enc_patch_size = v.value("enc_patch_size", vision.enc_patch_size);
  vision.crop_size = v.value("crop_size", vision.crop_size);
  vision.max_crops = v.value("max_crops", vision.max_crops);
  vision.overlap_margin = v.value("overlap_margin", vision.overlap_margin);
  return vision;
}

const Json* GoldenImageWithMode(const std::string& mode) {
  for (const Json& entry : Cases().at("images")) {
    if (entry.at("mode") == mode) return &entry;
  }
  return nullptr;
}

// --- libvips helpers for building test inputs. ---

struct GObjectUnref {
  void operator()(void* object) const {
    if (object != nullptr) g_object_unref(object);
  }
};
using VipsImagePtr = std::unique_ptr<VipsImage, GObjectUnref>;

// Pointers, not values: `rc` is the save call that fills them, and argument
// evaluation order is unspecified.
std::string TakeBuffer(int rc, void* const* buf, const size_t* len,
                       const char* what) {
  EXPECT_EQ(rc, 0) << what << ": " << TakeVipsError();
  std::string bytes;
  if (rc == 0) bytes.assign(static_cast<const char*>(*buf), *len);
  g_free(*buf);
  return bytes;
}

VipsImagePtr ToVips(const void* data, int width, int height, int bands,
                    VipsBandFormat format, VipsInterpretation interpretation) {
  const size_t sample = format == VIPS_FORMAT_USHORT ? 2 : 1;
  VipsImage* image = vips_image_new_from_memory_copy(
      data, static_cast<size_t>(width) * height * bands * sample, width, height,
      bands, format);
  EXPECT_NE(image, nullptr) << TakeVipsError();
  image->Type = interpretation;
  return VipsImagePtr(image);
}

VipsImagePtr ToVips(const RgbImage& image) {
  return ToVips(image.pixels_HWC.data(), image.width, image.height, 3,
                VIPS_FORMAT_UCHAR, VIPS_INTERPRETATION_sRGB);
}

enum class Saver {
  kPng,
  kPngPalette,
  kJpeg,
  kWebp,
  kWebpLossy,
  kGif,
  kTiff,
  kAvif
};

std::string Save(VipsImage* image, Saver saver) {
  void* buf = nullptr;
  size_t len = 0;
  switch (saver) {
    case Saver::kPng:
      return TakeBuffer(vips_pngsave_buffer(image, &buf, &len, nullptr), &buf,
                        &len, "pngsave");
    case Saver::kPngPalette:
      return TakeBuffer(
          vips_pngsave_buffer(image, &buf, &len, "palette", TRUE, nullptr),
          &buf, &len, "pngsave palette");
    case Saver::kJpeg:
      return TakeBuffer(
          vips_jpegsave_buffer(image, &buf, &len, "Q", 95, nullptr), &buf, &len,
          "jpegsave");
    case Saver::kWebp:
      return TakeBuffer(
          vips_webpsave_buffer(image, &buf, &len, "lossless", TRUE, nullptr),
          &buf, &len, "webpsave");
    case Saver::kWebpLossy:
      return TakeBuffer(
          vips_webpsave_buffer(image, &buf, &len, "Q", 90, nullptr), &buf, &len,
          "webpsave lossy");
    case Saver::kGif:
      return TakeBuffer(vips_gifsave_buffer(image, &buf, &len, nullptr), &buf,
                        &len, "gifsave");
    case Saver::kTiff:
      return TakeBuffer(vips_tiffsave_buffer(image, &buf, &len, nullptr), &buf,
                        &len, "tiffsave");
    case Saver::kAvif:
      return TakeBuffer(
          vips_heifsave_buffer(image, &buf, &len, "compression",
                               VIPS_FOREIGN_HEIF_COMPRESSION_AV1, nullptr),
          &buf, &len, "heifsave av1");
  }
  return {};
}

// The pixels libvips itself loads from `bytes`: [H, W, bands] uint8.
std::vector<uint8_t> VipsPixels(const std::string& bytes, int* bands) {
  VipsImagePtr image(
      vips_image_new_from_buffer(bytes.data(), bytes.size(), "", nullptr));
  EXPECT_NE(image, nullptr) << TakeVipsError();
  if (image == nullptr) return {};
  *bands = image->Bands;
  size_t n = 0;
  void* data = vips_image_write_to_memory(image.get(), &n);
  std::vector<uint8_t> pixels(static_cast<uint8_t*>(data),
                              static_cast<uint8_t*>(data) + n);
  g_free(data);
  return pixels;
}

// A deterministic test picture with smooth and sharp parts.
RgbImage TestPicture(int width, int height) {
  RgbImage image;
  image.width = width;
  image.height = height;
  image.pixels_HWC.resize(image.n_pixels() * 3);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      uint8_t* p = &image.pixels_HWC[(static_cast<size_t>(y) * width + x) * 3];
      p[0] = static_cast<uint8_t>(x * 255 / std::max(1, width - 1));
      p[1] = static_cast<uint8_t>(y * 255 / std::max(1, height - 1));
      p[2] = ((x / 8 + y / 8) % 2) ? 220 : 30;
    }
  }
  return image;
}

double MeanAbsDiff(const std::vector<uint8_t>& a,
                   const std::vector<uint8_t>& b) {
  EXPECT_EQ(a.size(), b.size());
  if (a.size() != b.size() || a.empty()) return 1e9;
  double sum = 0;
  for (size_t i = 0; i < a.size(); ++i) sum += std::abs(a[i] - b[i]);
  return sum / a.size();
}

// --- Byte-level builders. ---

void PutLe(std::string& s, uint64_t v, int n_bytes) {
  for (int i = 0; i < n_bytes; ++i)
    s.push_back(static_cast<char>(v >> (8 * i)));
}
void PutBe(std::string& s, uint64_t v, int n_bytes) {
  for (int i = n_bytes - 1; i >= 0; --i) {
    s.push_back(static_cast<char>(v >> (8 * i)));
  }
}

uint32_t Crc32(std::string_view data) {
  uint32_t crc = 0xffffffffu;
  for (unsigned char c : data) {
    crc ^= c;
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xedb88320u & -(crc & 1));
  }
  return ~crc;
}

std::string PngChunk(std::string_view type, std::string_view data) {
  std::string chunk;
  PutBe(chunk, data.size(), 4);
  std::string body = std::string(type) + std::string(data);
  chunk += body;
  PutBe(chunk, Crc32(body), 4);
  return chunk;
}

// A PNG whose IHDR claims width x height RGB; the IDAT holds almost nothing.
std::string PngWithDimensions(uint32_t width, uint32_t height) {
  std::string ihdr;
  PutBe(ihdr, width, 4);
  PutBe(ihdr, height, 4);
  ihdr += std::string("\x08\x02\x00\x00\x00", 5);
  return std::string("\x89PNG\r\n\x1a\n", 8) + PngChunk("IHDR", ihdr) +
         PngChunk("IDAT", std::string("\x78\x9c\x03\x00\x00\x00\x00\x01", 8)) +
         PngChunk("IEND", "");
}

// A BMP with a 40-byte BITMAPINFOHEADER; `tables` (masks, palette) follow it.
std::string BmpFile(int32_t width, int32_t height, int bits,
                    uint32_t compression, const std::string& tables,
                    const std::string& pixels, uint32_t n_colors = 0) {
  std::string info;
  PutLe(info, 40, 4);
  PutLe(info, static_cast<uint32_t>(width), 4);
  PutLe(info, static_cast<uint32_t>(height), 4);
  PutLe(info, 1, 2);
  PutLe(info, bits, 2);
  PutLe(info, compression, 4);
  PutLe(info, pixels.size(), 4);
  PutLe(info, 2835, 4);
  PutLe(info, 2835, 4);
  PutLe(info, n_colors, 4);
  PutLe(info, 0, 4);
  const uint32_t offset = 14 + info.size() + tables.size();
  std::string file = "BM";
  PutLe(file, offset + pixels.size(), 4);
  PutLe(file, 0, 4);
  PutLe(file, offset, 4);
  return file + info + tables + pixels;
}

size_t BmpStride(int width, int bits) { return (width * bits + 31) / 32 * 4; }

// Rows bottom-up unless top_down, each padded to 4 bytes.
std::string BmpRows(
    int width, int height, int bits, bool top_down,
    const std::function<void(int x, int y, std::string&)>& put) {
  std::string data;
  for (int r = 0; r < height; ++r) {
    const int y = top_down ? r : height - 1 - r;
    std::string row;
    if (bits < 8) {
      row.assign(BmpStride(width, bits), '\0');
      for (int x = 0; x < width; ++x) {
        std::string index;
        put(x, y, index);
        const int bit = x * bits;
        row[bit / 8] = static_cast<char>(
            static_cast<uint8_t>(row[bit / 8]) |
            (static_cast<uint8_t>(index[0]) << (8 - bits - bit % 8)));
      }
    } else {
      for (int x = 0; x < width; ++x) put(x, y, row);
      row.resize(BmpStride(width, bits), '\0');
    }
    data += row;
  }
  return data;
}

// 16 colours; index (x / 3 + y) % n picks them.
constexpr uint8_t kPalette[16][3] = {
    {0, 0, 0},     {255, 255, 255}, {200, 10, 10},  {10, 200, 10},
    {10, 10, 200}, {250, 250, 0},   {0, 250, 250},  {250, 0, 250},
    {128, 64, 32}, {32, 64, 128},   {64, 128, 32},  {99, 99, 99},
    {1, 2, 3},     {254, 253, 252}, {170, 85, 170}, {17, 34, 51}};

int PaletteIndex(int x, int y, int n_colors) { return (x / 3 + y) % n_colors; }

std::string BmpPaletteTable(int n_colors) {
  std::string table;
  for (int i = 0; i < n_colors; ++i) {
    table.push_back(static_cast<char>(kPalette[i][2]));
    table.push_back(static_cast<char>(kPalette[i][1]));
    table.push_back(static_cast<char>(kPalette[i][0]));
    table.push_back('\0');
  }
  return table;
}

RgbImage PaletteImage(int width, int height, int n_colors) {
  RgbImage image;
  image.width = width;
  image.height = height;
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      const uint8_t* c = kPalette[PaletteIndex(x, y, n_colors)];
      image.pixels_HWC.insert(image.pixels_HWC.end(), c, c + 3);
    }
  }
  return image;
}

std::string BmpPalette(int width, int height, int bits, bool top_down = false) {
  const int n_colors = std::min(16, 1 << bits);
  return BmpFile(
      width, top_down ? -height : height, bits, 0, BmpPaletteTable(n_colors),
      BmpRows(width, height, bits, top_down,
              [&](int x, int y, std::string& out) {
                out.push_back(static_cast<char>(PaletteIndex(x, y, n_colors)));
              }),
      n_colors == (1 << bits) ? 0 : n_colors);
}

// RLE8/RLE4: encoded runs of equal indices per row, an absolute run on row 0.
std::string BmpRle(int width, int height, bool rle4) {
  std::string data;
  for (int y = height - 1; y >= 0; --y) {
    int x = 0;
    if (y == 0 && width >= 4) {  // absolute run of 4 pixels
      data += std::string("\0\x04", 2);
      if (rle4) {
        for (int k = 0; k < 4; k += 2) {
          data.push_back(static_cast<char>(PaletteIndex(k, y, 16) << 4 |
                                           PaletteIndex(k + 1, y, 16)));
        }
      } else {
        for (int k = 0; k < 4; ++k) {
          data.push_back(static_cast<char>(PaletteIndex(k, y, 16)));
        }
      }
      x = 4;
    }
    while (x < width) {
      const int index = PaletteIndex(x, y, 16);
      int n = 1;
      while (x + n < width && PaletteIndex(x + n, y, 16) == index && n < 255) {
        ++n;
      }
      data.push_back(static_cast<char>(n));
      data.push_back(static_cast<char>(rle4 ? (index << 4 | index) : index));
      x += n;
    }
    data += std::string("\0\0", 2);
  }
  data += std::string("\0\x01", 2);
  return BmpFile(width, height, rle4 ? 4 : 8, rle4 ? 2 : 1, BmpPaletteTable(16),
                 data, 16);
}

std::string Bmp24(const RgbImage& image, bool top_down = false) {
  return BmpFile(
      image.width, top_down ? -image.height : image.height, 24, 0, "",
      BmpRows(image.width, image.height, 24, top_down,
              [&](int x, int y, std::string& out) {
                const uint8_t* p = &image.pixels_HWC[(y * image.width + x) * 3];
                out.push_back(static_cast<char>(p[2]));
                out.push_back(static_cast<char>(p[1]));
                out.push_back(static_cast<char>(p[0]));
              }));
}

void ExpectSamePixels(const absl::StatusOr<RgbImage>& actual,
                      const RgbImage& expected) {
  ASSERT_TRUE(actual.ok()) << actual.status();
  EXPECT_EQ(actual->width, expected.width);
  EXPECT_EQ(actual->height, expected.height);
  EXPECT_TRUE(actual->pixels_HWC == expected.pixels_HWC)
      << "mean abs diff "
      << MeanAbsDiff(actual->pixels_HWC, expected.pixels_HWC);
}

class ImageTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { ASSERT_TRUE(EnsureVipsStarted().ok()); }
};

// --- (1) The reference's crops, bit for bit. ---

TEST_F(ImageTest, GoldenCropsAreBitExact) {
  ASSERT_NE(CaseTensors(), nullptr);
  const VisionConfig vision = GoldenVision();
  const Json& images = Cases().at("images");
  ASSERT_FALSE(images.empty());
  for (const Json& entry : images) {
    const std::string name = entry.at("name");
    SCOPED_TRACE(name);
    const absl::StatusOr<RgbImage> image = DecodeImage(
        ReadFile(GoldenDir() + "/" + entry.at("file").get<std::string>()));
    ASSERT_TRUE(image.ok()) << image.status();
    EXPECT_EQ(image->width, entry.at("width").get<int>());
    EXPECT_EQ(image->height, entry.at("height").get<int>());

    const absl::StatusOr<OverlapCrops> crops = OverlapCropImage(*image, vision);
    ASSERT_TRUE(crops.ok()) << crops.status();
    const Tiling expected_tiling{entry.at("tiling").at(0).get<int>(),
                                 entry.at("tiling").at(1).get<int>()};
    EXPECT_EQ(crops->tiling.rows, expected_tiling.rows);
    EXPECT_EQ(crops->tiling.cols, expected_tiling.cols);
    EXPECT_EQ(crops->n_crops(), entry.at("n_crops").get<int>());

    const absl::StatusOr<TensorView> expected =
        CaseTensors()->Get(entry.at("tensors").at("crops").get<std::string>());
    ASSERT_TRUE(expected.ok()) << expected.status();
    ASSERT_EQ(expected->dtype, DType::kU8);
    const std::vector<int64_t> shape = {crops->n_crops(), crops->crop_size,
                                        crops->crop_size, 3};
    ASSERT_EQ(expected->shape, shape);
    ASSERT_EQ(expected->n_bytes, crops->crops_NSSC.size());

    const auto* want = reinterpret_cast<const uint8_t*>(expected->data);
    size_t n_differ = 0;
    int max_diff = 0;
    double sum_diff = 0;
    for (size_t i = 0; i < crops->crops_NSSC.size(); ++i) {
      const int d = std::abs(crops->crops_NSSC[i] - want[i]);
      n_differ += d != 0;
      sum_diff += d;
      max_diff = std::max(max_diff, d);
    }
    EXPECT_EQ(n_differ, 0u)
        << n_differ << " of " << crops->crops_NSSC.size()
        << " bytes differ; mean abs diff "
        << sum_diff / crops->crops_NSSC.size() << ", max " << max_diff;
    RecordProperty(name, absl::StrCat("differing bytes ", n_differ));
  }
}

TEST_F(ImageTest, ResizeCallsMatchReference) {
  const VisionConfig vision = GoldenVision();
  for (const Json& entry : Cases().at("images")) {
    SCOPED_TRACE(entry.at("name").get<std::string>());
    const absl::StatusOr<RgbImage> image = DecodeImage(
        ReadFile(GoldenDir() + "/" + entry.at("file").get<std::string>()));
    ASSERT_TRUE(image.ok()) << image.status();
    const Tiling tiling = ImageTiling(image->height, image->width, vision);
    const int margins = 2 * CropMarginPixels(vision);
    const int window = CropWindowPixels(vision);
    // overlap_crop_image resizes to the tiling's target, then to the global
    // crop.
    const std::vector<std::pair<int, int>> targets = {
        {tiling.rows * window + margins, tiling.cols * window + margins},
        {vision.crop_size, vision.crop_size}};
    const Json& calls = entry.at("resize_calls");
    ASSERT_EQ(calls.size(), targets.size());
    for (size_t k = 0; k < targets.size(); ++k) {
      const Json& call = calls.at(k);
      const auto [out_h, out_w] = targets[k];
      EXPECT_EQ(call.at("in_hw").at(0).get<int>(), image->height);
      EXPECT_EQ(call.at("in_hw").at(1).get<int>(), image->width);
      EXPECT_EQ(call.at("bands").get<int>(), 3);
      EXPECT_EQ(call.at("out_hw").at(0).get<int>(), out_h);
      EXPECT_EQ(call.at("out_hw").at(1).get<int>(), out_w);
      // The same doubles the reference passed to vips_resize.
      EXPECT_EQ(call.at("scale").get<double>(),
                static_cast<double>(out_w) / image->width);
      EXPECT_EQ(call.at("vscale").get<double>(),
                static_cast<double>(out_h) / image->height);
      const absl::StatusOr<RgbImage> resized =
          ResizeImage(*image, out_w, out_h);
      ASSERT_TRUE(resized.ok()) << resized.status();
      EXPECT_EQ(resized->width, out_w);
      EXPECT_EQ(resized->height, out_h);
    }
  }
}

TEST_F(ImageTest, ConcurrentCallsAgree) {
  // The service decodes and crops on several threads at once.
  const Json& entry = Cases().at("images").at(1);
  const std::string bytes =
      ReadFile(GoldenDir() + "/" + entry.at("file").get<std::string>());
  const VisionConfig vision = GoldenVision();
  auto run = [&]() -> std::vector<uint8_t> {
    const absl::StatusOr<RgbImage> image = DecodeImage(bytes);
    if (!image.ok()) return {};
    const absl::StatusOr<OverlapCrops> crops = OverlapCropImage(*image, vision);
    return crops.ok() ? crops->crops_NSSC : std::vector<uint8_t>{};
  };
  const std::vector<uint8_t> alone = run();
  ASSERT_FALSE(alone.empty());
  std::vector<std::vector<uint8_t>> results(4);
  std::vector<std::thread> threads;
  for (auto& result : results) {
    threads.emplace_back([&run, &result] { result = run(); });
  }
  for (std::thread& thread : threads) thread.join();
  for (const auto& result : results) EXPECT_TRUE(result == alone);
}

TEST_F(ImageTest, ResizeGivesExactSizesAcrossScales) {
  // vips_resize rounds its output size; check it lands on the target for
  // shrinks, enlargements and extreme aspect ratios.
  const VisionConfig vision;
  for (const auto& [w, h] : std::vector<std::pair<int, int>>{{1, 1},
                                                             {7, 5},
                                                             {377, 379},
                                                             {1000, 3},
                                                             {3, 1000},
                                                             {4000, 3000},
                                                             {1023, 767},
                                                             {2500, 2501}}) {
    SCOPED_TRACE(absl::StrCat(w, "x", h));
    const absl::StatusOr<OverlapCrops> crops =
        OverlapCropImage(TestPicture(w, h), vision);
    ASSERT_TRUE(crops.ok()) << crops.status();
    EXPECT_EQ(crops->crops_NSSC.size(),
              static_cast<size_t>(crops->n_crops()) * 378 * 378 * 3);
  }
}

TEST_F(ImageTest, OverlapCropRejectsInconsistentImages) {
  RgbImage bad;
  bad.width = 4;
  bad.height = 4;
  bad.pixels_HWC.resize(10);
  EXPECT_EQ(OverlapCropImage(bad, VisionConfig{}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(OverlapCropImage(RgbImage{}, VisionConfig{}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// --- (4) Grey and RGBA become RGB as PIL's .convert("RGB") does. ---

TEST_F(ImageTest, GreyGoldenIsReplicated) {
  const Json* entry = GoldenImageWithMode("L");
  ASSERT_NE(entry, nullptr);
  const std::string bytes =
      ReadFile(GoldenDir() + "/" + entry->at("file").get<std::string>());
  int bands = 0;
  const std::vector<uint8_t> grey = VipsPixels(bytes, &bands);
  ASSERT_EQ(bands, 1);
  const absl::StatusOr<RgbImage> image = DecodeImage(bytes);
  ASSERT_TRUE(image.ok()) << image.status();
  ASSERT_EQ(image->n_pixels(), grey.size());
  for (size_t i = 0; i < grey.size(); ++i) {
    ASSERT_EQ(image->pixels_HWC[3 * i], grey[i]) << i;
    ASSERT_EQ(image->pixels_HWC[3 * i + 1], grey[i]) << i;
    ASSERT_EQ(image->pixels_HWC[3 * i + 2], grey[i]) << i;
  }
}

TEST_F(ImageTest, RgbaGoldenDropsAlphaWithoutCompositing) {
  const Json* entry = GoldenImageWithMode("RGBA");
  ASSERT_NE(entry, nullptr);
  const std::string bytes =
      ReadFile(GoldenDir() + "/" + entry->at("file").get<std::string>());
  int bands = 0;
  const std::vector<uint8_t> rgba = VipsPixels(bytes, &bands);
  ASSERT_EQ(bands, 4);
  const absl::StatusOr<RgbImage> image = DecodeImage(bytes);
  ASSERT_TRUE(image.ok()) << image.status();
  ASSERT_EQ(image->n_pixels() * 4, rgba.size());
  size_t n_translucent = 0;
  for (size_t i = 0; i < image->n_pixels(); ++i) {
    for (int c = 0; c < 3; ++c) {
      ASSERT_EQ(image->pixels_HWC[3 * i + c], rgba[4 * i + c]) << i;
    }
    n_translucent += rgba[4 * i + 3] < 200 && rgba[4 * i] > 60;
  }
  // Compositing would have changed these pixels; the check above shows it did
  // not.
  EXPECT_GT(n_translucent, 100u);
}

TEST_F(ImageTest, GreyAlphaAndPalettePng) {
  // Grey + alpha: the grey band replicated, alpha ignored.
  std::vector<uint8_t> ga;
  for (int i = 0; i < 30 * 20; ++i) {
    ga.push_back(static_cast<uint8_t>(i * 7));
    ga.push_back(static_cast<uint8_t>(i % 2 ? 0 : 255));
  }
  const std::string png_ga = Save(
      ToVips(ga.data(), 30, 20, 2, VIPS_FORMAT_UCHAR, VIPS_INTERPRETATION_B_W)
          .get(),
      Saver::kPng);
  absl::StatusOr<RgbImage> image = DecodeImage(png_ga);
  ASSERT_TRUE(image.ok()) << image.status();
  for (int i = 0; i < 30 * 20; ++i) {
    for (int c = 0; c < 3; ++c)
      ASSERT_EQ(image->pixels_HWC[3 * i + c], ga[2 * i]);
  }

  // Palette: expanded to the palette's colours.
  const RgbImage picture = PaletteImage(37, 23, 16);
  const std::string png_p = Save(ToVips(picture).get(), Saver::kPngPalette);
  ASSERT_EQ(png_p[25], 3) << "colour type: not a palette PNG";
  ExpectSamePixels(DecodeImage(png_p), picture);
}

TEST_F(ImageTest, SixteenBitKeepsHighByte) {
  const int width = 33, height = 17;
  for (const int bands : {3, 1}) {
    SCOPED_TRACE(absl::StrCat(bands, " bands"));
    std::vector<uint16_t> samples;
    for (int i = 0; i < width * height * bands; ++i) {
      samples.push_back(static_cast<uint16_t>(i * 2654435761u >> 16));
    }
    const std::string png =
        Save(ToVips(samples.data(), width, height, bands, VIPS_FORMAT_USHORT,
                    bands == 3 ? VIPS_INTERPRETATION_RGB16
                               : VIPS_INTERPRETATION_GREY16)
                 .get(),
             Saver::kPng);
    ASSERT_EQ(png[24], 16) << "bit depth: not a 16-bit PNG";
    const absl::StatusOr<RgbImage> image = DecodeImage(png);
    ASSERT_TRUE(image.ok()) << image.status();
    for (int p = 0; p < width * height; ++p) {
      for (int c = 0; c < 3; ++c) {
        ASSERT_EQ(image->pixels_HWC[3 * p + c],
                  samples[p * bands + (bands == 3 ? c : 0)] >> 8)
            << p;
      }
    }
  }
}

TEST_F(ImageTest, JpegExifOrientationIsIgnored) {
  VipsImagePtr picture = ToVips(TestPicture(40, 20));
  vips_image_set_int(picture.get(), "orientation", 6);  // "rotate 90° CW"
  const std::string jpeg = Save(picture.get(), Saver::kJpeg);
  ASSERT_NE(jpeg.find("Exif"), std::string::npos);
  const absl::StatusOr<RgbImage> image = DecodeImage(jpeg);
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->width, 40);
  EXPECT_EQ(image->height, 20);
  EXPECT_LT(MeanAbsDiff(image->pixels_HWC, TestPicture(40, 20).pixels_HWC), 3);
}

TEST_F(ImageTest, CmykJpegUsesPilsNaiveConversion) {
  const int width = 32, height = 16;
  std::vector<uint8_t> cmyk;
  RgbImage expected;
  expected.width = width;
  expected.height = height;
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      // Flat 8x8 blocks keep JPEG's error small.
      const int block = (x / 8) + 4 * (y / 8);
      const uint8_t c[4] = {static_cast<uint8_t>(block * 30),
                            static_cast<uint8_t>(255 - block * 25),
                            static_cast<uint8_t>(block * 13 + 40),
                            static_cast<uint8_t>(block % 3 * 60)};
      cmyk.insert(cmyk.end(), c, c + 4);
      for (int i = 0; i < 3; ++i) {
        const int nk = 255 - c[3];
        expected.pixels_HWC.push_back(
            static_cast<uint8_t>(nk - (c[i] * nk + 127) / 255));
      }
    }
  }
  const std::string jpeg =
      Save(ToVips(cmyk.data(), width, height, 4, VIPS_FORMAT_UCHAR,
                  VIPS_INTERPRETATION_CMYK)
               .get(),
           Saver::kJpeg);
  const absl::StatusOr<RgbImage> image = DecodeImage(jpeg);
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_LT(MeanAbsDiff(image->pixels_HWC, expected.pixels_HWC), 2.0);
}

// --- Every accepted format decodes. ---

TEST_F(ImageTest, LosslessFormatsRoundTrip) {
  const RgbImage picture = TestPicture(61, 47);
  VipsImagePtr vips = ToVips(picture);
  for (const Saver saver : {Saver::kPng, Saver::kWebp, Saver::kTiff}) {
    SCOPED_TRACE(static_cast<int>(saver));
    ExpectSamePixels(DecodeImage(Save(vips.get(), saver)), picture);
  }
  ExpectSamePixels(DecodeImage(Bmp24(picture)), picture);
  ExpectSamePixels(DecodeImage(Bmp24(picture, /*top_down=*/true)), picture);
}

TEST_F(ImageTest, LossyFormatsDecodeClose) {
  const RgbImage picture = TestPicture(61, 47);
  VipsImagePtr vips = ToVips(picture);
  // Lossy WebP subsamples chroma 2x2 (the sharp blue checkerboard suffers);
  // GIF quantises to 256 colours with dithering.
  for (const auto& [saver, max_error] :
       std::vector<std::pair<Saver, double>>{{Saver::kJpeg, 3.0},
                                             {Saver::kWebpLossy, 12.0},
                                             {Saver::kGif, 12.0},
                                             {Saver::kAvif, 12.0}}) {
    SCOPED_TRACE(static_cast<int>(saver));
    const absl::StatusOr<RgbImage> image = DecodeImage(Save(vips.get(), saver));
    ASSERT_TRUE(image.ok()) << image.status();
    EXPECT_EQ(image->width, 61);
    EXPECT_EQ(image->height, 47);
    EXPECT_LT(MeanAbsDiff(image->pixels_HWC, picture.pixels_HWC), max_error);
  }
}

TEST_F(ImageTest, ReadImageInfoReadsTheHeader) {
  const RgbImage picture = TestPicture(61, 47);
  VipsImagePtr vips = ToVips(picture);
  const std::vector<std::pair<std::string, ImageFormat>> inputs = {
      {Save(vips.get(), Saver::kPng), ImageFormat::kPng},
      {Save(vips.get(), Saver::kJpeg), ImageFormat::kJpeg},
      {Save(vips.get(), Saver::kWebp), ImageFormat::kWebp},
      {Save(vips.get(), Saver::kGif), ImageFormat::kGif},
      {Save(vips.get(), Saver::kTiff), ImageFormat::kTiff},
      {Save(vips.get(), Saver::kAvif), ImageFormat::kHeif},
      {Bmp24(picture), ImageFormat::kBmp}};
  for (const auto& [bytes, format] : inputs) {
    SCOPED_TRACE(ImageFormatName(format));
    const absl::StatusOr<ImageInfo> info = ReadImageInfo(bytes);
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_EQ(info->format, format);
    EXPECT_EQ(info->width, 61);
    EXPECT_EQ(info->height, 47);
  }
}

// --- Our BMP decoder, variant by variant. ---

TEST_F(ImageTest, BmpPaletteDepths) {
  for (const int bits : {1, 4, 8}) {
    for (const bool top_down : {false, true}) {
      SCOPED_TRACE(absl::StrCat(bits, " bits, top_down ", top_down));
      ExpectSamePixels(DecodeImage(BmpPalette(29, 13, bits, top_down)),
                       PaletteImage(29, 13, std::min(16, 1 << bits)));
    }
  }
}

TEST_F(ImageTest, BmpRle) {
  ExpectSamePixels(DecodeImage(BmpRle(45, 11, /*rle4=*/false)),
                   PaletteImage(45, 11, 16));
  ExpectSamePixels(DecodeImage(BmpRle(45, 11, /*rle4=*/true)),
                   PaletteImage(45, 11, 16));
}

TEST_F(ImageTest, BmpDirectColour) {
  const RgbImage picture = TestPicture(23, 9);
  auto pixel = [&](int x, int y) {
    return &picture.pixels_HWC[(y * 23 + x) * 3];
  };

  // 32-bit BI_RGB: B, G, R, unused.
  const std::string bmp32 =
      BmpFile(23, 9, 32, 0, "",
              BmpRows(23, 9, 32, false, [&](int x, int y, std::string& out) {
                const uint8_t* p = pixel(x, y);
                out += {static_cast<char>(p[2]), static_cast<char>(p[1]),
                        static_cast<char>(p[0]), '\x7f'};
              }));
  ExpectSamePixels(DecodeImage(bmp32), picture);

  // 16-bit: 5-5-5 (BI_RGB) and 5-6-5 (BI_BITFIELDS), scaled as PIL does.
  for (const bool is565 : {false, true}) {
    SCOPED_TRACE(is565 ? "565" : "555");
    RgbImage expected = picture;
    std::string masks;
    if (is565) {
      PutLe(masks, 0xf800, 4);
      PutLe(masks, 0x07e0, 4);
      PutLe(masks, 0x001f, 4);
    }
    const int g_bits = is565 ? 6 : 5;
    const std::string bmp16 = BmpFile(
        23, 9, 16, is565 ? 3 : 0, masks,
        BmpRows(23, 9, 16, false, [&](int x, int y, std::string& out) {
          const uint8_t* p = pixel(x, y);
          const int r = p[0] >> 3, g = p[1] >> (8 - g_bits), b = p[2] >> 3;
          PutLe(out, r << (5 + g_bits) | g << 5 | b, 2);
          uint8_t* e = &expected.pixels_HWC[(y * 23 + x) * 3];
          e[0] = static_cast<uint8_t>(r * 255 / 31);
          e[1] = static_cast<uint8_t>(g * 255 / ((1 << g_bits) - 1));
          e[2] = static_cast<uint8_t>(b * 255 / 31);
        }));
    ExpectSamePixels(DecodeImage(bmp16), expected);
  }
}

TEST_F(ImageTest, BmpOs2AndV5Headers) {
  const RgbImage picture = TestPicture(10, 6);
  const std::string pixels =
      BmpRows(10, 6, 24, false, [&](int x, int y, std::string& out) {
        const uint8_t* p = &picture.pixels_HWC[(y * 10 + x) * 3];
        out += {static_cast<char>(p[2]), static_cast<char>(p[1]),
                static_cast<char>(p[0])};
      });
  // BITMAPCOREHEADER: 12 bytes, 16-bit dimensions.
  std::string core = "BM";
  PutLe(core, 26 + pixels.size(), 4);
  PutLe(core, 0, 4);
  PutLe(core, 26, 4);
  PutLe(core, 12, 4);
  PutLe(core, 10, 2);
  PutLe(core, 6, 2);
  PutLe(core, 1, 2);
  PutLe(core, 24, 2);
  ExpectSamePixels(DecodeImage(core + pixels), picture);

  // BITMAPV5HEADER with BI_BITFIELDS and an alpha mask (alpha dropped).
  std::string v5(124, '\0');
  auto put32 = [&](size_t at, uint32_t v) {
    for (int i = 0; i < 4; ++i) v5[at + i] = static_cast<char>(v >> (8 * i));
  };
  put32(0, 124);
  put32(4, 10);
  put32(8, static_cast<uint32_t>(-6));  // top-down
  put32(12, 1 | 32 << 16);
  put32(16, 3);
  put32(40, 0x00ff0000);
  put32(44, 0x0000ff00);
  put32(48, 0x000000ff);
  put32(52, 0xff000000);
  const std::string rows32 =
      BmpRows(10, 6, 32, true, [&](int x, int y, std::string& out) {
        const uint8_t* p = &picture.pixels_HWC[(y * 10 + x) * 3];
        out += {static_cast<char>(p[2]), static_cast<char>(p[1]),
                static_cast<char>(p[0]), static_cast<char>(x * 20)};
      });
  std::string file = "BM";
  PutLe(file, 14 + 124 + rows32.size(), 4);
  PutLe(file, 0, 4);
  PutLe(file, 14 + 124, 4);
  ExpectSamePixels(DecodeImage(file + v5 + rows32), picture);
}

TEST_F(ImageTest, BmpRefusals) {
  const std::string pixels(64, '\0');
  struct Case {
    std::string bytes;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"BM", "truncated"},
      {BmpFile(0, 4, 24, 0, "", pixels), "zero size"},
      {BmpFile(4, 0, 24, 0, "", pixels), "zero size"},
      {BmpFile(-4, 4, 24, 0, "", pixels), "negative width"},
      {BmpFile(4, 4, 24, 4, "", pixels), "embedded JPEG/PNG"},
      {BmpFile(4, 4, 2, 0, "", pixels), "bit depth 2"},
      {BmpFile(4, 4, 24, 1, "", pixels), "unsupported compression"},
      {BmpFile(4, -4, 8, 1, BmpPaletteTable(16), pixels, 16), "bottom-up"},
      {BmpFile(4, 4, 8, 0, BmpPaletteTable(2), pixels, 300), "palette of 300"},
      {BmpFile(40, 40, 24, 0, "", pixels), "truncated pixel data"},
      {BmpFile(100000, 100000, 24, 0, "", pixels), "too many pixels"},
      {BmpFile(1 << 30, -(1 << 30), 24, 0, "", pixels), "too many pixels"},
  };
  for (const Case& c : cases) {
    const absl::StatusOr<RgbImage> image = DecodeImage(c.bytes);
    ASSERT_FALSE(image.ok()) << c.message;
    EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(image.status().message()), HasSubstr(c.message));
  }
}

// --- (3) Decompression bombs: refused from the header. ---

long PeakRssKb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss;
}

TEST_F(ImageTest, PngBombIsRefusedFromTheHeader) {
  const std::string bomb = PngWithDimensions(100000, 100000);
  const long rss_before = PeakRssKb();
  const absl::StatusOr<ImageInfo> info = ReadImageInfo(bomb);
  const absl::StatusOr<RgbImage> image = DecodeImage(bomb);
  for (const absl::Status& status : {info.status(), image.status()}) {
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(status.message()), HasSubstr("too many pixels"));
    EXPECT_THAT(std::string(status.message()), HasSubstr("100000x100000"));
  }
  // 10^10 RGB pixels would be 30 GB; the peak grew by far less than one row
  // of a 1 GB image would take.
  EXPECT_LT(PeakRssKb() - rss_before, 64 * 1024);
}

TEST_F(ImageTest, BombsInEveryFormatAreRefused) {
  VipsImagePtr vips = ToVips(TestPicture(61, 47));
  // JPEG: SOF0's height and width (big-endian) after FF C0, length, precision.
  std::string jpeg = Save(vips.get(), Saver::kJpeg);
  const size_t sof = jpeg.find("\xff\xc0");
  ASSERT_NE(sof, std::string::npos);
  jpeg[sof + 5] = jpeg[sof + 6] = jpeg[sof + 7] = jpeg[sof + 8] = '\xfd';
  // GIF: logical screen and first image descriptor, little-endian.
  std::string gif = Save(vips.get(), Saver::kGif);
  const size_t descriptor = gif.find('\x2c', 13);
  ASSERT_NE(descriptor, std::string::npos);
  for (const size_t at :
       {size_t{6}, size_t{8}, descriptor + 5, descriptor + 7}) {
    gif[at] = gif[at + 1] = '\xfd';
  }
  for (const std::string& bomb :
       {jpeg, gif, PngWithDimensions(60000, 60000),
        BmpFile(65000, 65000, 24, 0, "", std::string(64, '\0'))}) {
    const absl::StatusOr<RgbImage> image = DecodeImage(bomb);
    EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(image.status().message()),
                HasSubstr("too many pixels"));
  }
}

TEST_F(ImageTest, PixelLimitIsASetting) {
  const RgbImage picture = TestPicture(61, 47);
  VipsImagePtr vips = ToVips(picture);
  for (const std::string& bytes :
       {Save(vips.get(), Saver::kPng), Save(vips.get(), Saver::kJpeg),
        Save(vips.get(), Saver::kWebp), Save(vips.get(), Saver::kGif),
        Save(vips.get(), Saver::kTiff), Save(vips.get(), Saver::kAvif),
        Bmp24(picture)}) {
    DecodeOptions options;
    options.max_pixels = 61 * 47;
    EXPECT_TRUE(DecodeImage(bytes, options).ok());
    EXPECT_TRUE(ReadImageInfo(bytes, options).ok());
    options.max_pixels = 61 * 47 - 1;
    const absl::StatusOr<RgbImage> image = DecodeImage(bytes, options);
    EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(image.status().message()),
                HasSubstr("too many pixels: 61x47 = 2867 > limit 2866"));
    EXPECT_FALSE(ReadImageInfo(bytes, options).ok());
  }
  EXPECT_EQ(DecodeOptions{}.max_pixels, 50'000'000);
}

// --- (5) Inputs that are not accepted images. ---

TEST_F(ImageTest, NonImagesAreRefusedClearly) {
  std::mt19937 rng(7);
  std::string noise(4096, '\0');
  for (char& c : noise) c = static_cast<char>(rng());
  noise[0] = '\0';  // not "BM"

  const std::string svg =
      "<?xml version=\"1.0\"?><svg xmlns=\"http://www.w3.org/2000/svg\" "
      "width=\"64\" height=\"64\"><rect width=\"64\" height=\"64\" "
      "fill=\"red\"/></svg>";
  const std::string pdf =
      "%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
      "2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
      "3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 64 64]>>endobj\n"
      "trailer<</Root 1 0 R>>\n%%EOF\n";
  const std::string ppm = std::string("P6\n2 2\n255\n") + std::string(12, 'x');

  struct Case {
    std::string name;
    std::string bytes;
    std::string message;
  };
  for (const Case& c : std::vector<Case>{
           {"empty", "", "empty image data"},
           {"noise", noise, "unsupported image format"},
           {"svg", svg, "unsupported image format \"svg\""},
           {"pdf", pdf, "unsupported image format \"pdf\""},
           {"ppm", ppm, "unsupported image format"},
           {"gif magic only", "GIF89a", "GIF"},
           {"png magic only", "\x89PNG\r\n\x1a\n", "PNG"},
           {"zero width png", PngWithDimensions(0, 10), "PNG"},
       }) {
    SCOPED_TRACE(c.name);
    const absl::StatusOr<RgbImage> image = DecodeImage(c.bytes);
    ASSERT_FALSE(image.ok());
    EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(image.status().message()), HasSubstr(c.message));
    EXPECT_FALSE(ReadImageInfo(c.bytes).ok());
  }
}

// --- (2) Fuzz-style: truncations and byte corruptions never crash. ---

struct FuzzInput {
  std::string name;
  std::string bytes;
};

std::vector<FuzzInput> FuzzCorpus() {
  const RgbImage picture = TestPicture(37, 29);
  VipsImagePtr vips = ToVips(picture);
  return {
      {"png", Save(vips.get(), Saver::kPng)},
      {"png palette", Save(vips.get(), Saver::kPngPalette)},
      {"jpeg", Save(vips.get(), Saver::kJpeg)},
      {"webp lossless", Save(vips.get(), Saver::kWebp)},
      {"webp lossy", Save(vips.get(), Saver::kWebpLossy)},
      {"gif", Save(vips.get(), Saver::kGif)},
      {"tiff", Save(vips.get(), Saver::kTiff)},
      {"avif", Save(vips.get(), Saver::kAvif)},
      {"bmp 24", Bmp24(picture)},
      {"bmp 8", BmpPalette(37, 29, 8)},
      {"bmp 4 top-down", BmpPalette(37, 29, 4, true)},
      {"bmp rle8", BmpRle(37, 29, false)},
      {"bmp rle4", BmpRle(37, 29, true)},
  };
}

// Either a well-formed image or an InvalidArgument error: nothing else.
void ExpectImageOrError(const absl::StatusOr<RgbImage>& image,
                        const std::string& what) {
  if (image.ok()) {
    EXPECT_GT(image->width, 0) << what;
    EXPECT_GT(image->height, 0) << what;
    EXPECT_EQ(image->pixels_HWC.size(), image->n_pixels() * 3) << what;
  } else {
    EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument)
        << what << ": " << image.status();
    EXPECT_FALSE(image.status().message().empty()) << what;
  }
}

TEST_F(ImageTest, FuzzTruncations) {
  DecodeOptions options;
  options.max_pixels = 1 << 22;
  for (const FuzzInput& input : FuzzCorpus()) {
    SCOPED_TRACE(input.name);
    ASSERT_FALSE(input.bytes.empty());
    const size_t size = input.bytes.size();
    std::vector<size_t> lengths;
    for (size_t n = 0; n < std::min<size_t>(size, 96); ++n)
      lengths.push_back(n);
    for (int k = 1; k < 160; ++k) lengths.push_back(size * k / 160);
    for (size_t back = 1; back <= 16 && back < size; ++back) {
      lengths.push_back(size - back);
    }
    int n_errors = 0;
    for (const size_t n : lengths) {
      const absl::StatusOr<RgbImage> image =
          DecodeImage(std::string_view(input.bytes).substr(0, n), options);
      ExpectImageOrError(image, absl::StrCat("truncated to ", n, " of ", size));
      n_errors += !image.ok();
      // Losing the second half of the pixel data is always noticed.
      if (n < size / 2) {
        EXPECT_FALSE(image.ok()) << "truncated to " << n << " of " << size;
      }
    }
    EXPECT_GT(n_errors, 0);
    ExpectImageOrError(DecodeImage(input.bytes, options), "whole file");
    EXPECT_TRUE(DecodeImage(input.bytes, options).ok());
  }
}

TEST_F(ImageTest, FuzzSingleByteCorruptions) {
  DecodeOptions options;
  options.max_pixels = 1 << 22;
  std::mt19937 rng(20250109);
  for (const FuzzInput& input : FuzzCorpus()) {
    SCOPED_TRACE(input.name);
    // Half the corruptions anywhere, half in the first 256 bytes, where the
    // headers, tables and palettes are.
    std::uniform_int_distribution<size_t> anywhere(0, input.bytes.size() - 1);
    std::uniform_int_distribution<size_t> in_header(
        0, std::min<size_t>(input.bytes.size(), 256) - 1);
    std::uniform_int_distribution<int> flip(1, 255);
    int n_ok = 0, n_errors = 0;
    for (int trial = 0; trial < 400; ++trial) {
      std::string bytes = input.bytes;
      const size_t at = trial % 2 ? in_header(rng) : anywhere(rng);
      bytes[at] = static_cast<char>(bytes[at] ^ flip(rng));
      const absl::StatusOr<RgbImage> image = DecodeImage(bytes, options);
      ExpectImageOrError(image, absl::StrCat("byte ", at, " corrupted"));
      (image.ok() ? n_ok : n_errors)++;
    }
    RecordProperty(input.name,
                   absl::StrCat(n_ok, " ok, ", n_errors, " errors"));
  }
}

}  // namespace
}  // namespace md
