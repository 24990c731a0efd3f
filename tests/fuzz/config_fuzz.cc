// Fuzzes the config.json parser (model/config/config.h) over each built-in
// preset as defaults.
//
// What holds by design: everything refused is InvalidArgument; what is
// accepted has passed ValidateConfig ("the invariants the model code relies
// on") and keeps the defaults' name. The sizes the model derives from an
// accepted config (head size, patch grid, prefix length, crop margins and
// window, the tiling of images from 1x1 to the decoder's pixel limit) are
// computed here too, so UBSan sees any of them overflowing.
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "model/config/config.h"
#include "model/image/tiling.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

// Keeps the optimizer from dropping the computations whose overflow UBSan
// should see.
volatile int sink = 0;

void CheckDerivedSizes(const md::MoondreamConfig& c) {
  sink = c.text.head_dim();
  sink = c.vision.grid();
  sink = c.vision.n_patches();
  sink = c.vision.patch_dim();
  sink = c.prefix_len();
  FUZZ_CHECK(c.prefix_len() < c.text.max_context);
  sink = md::CropMarginPixels(c.vision);
  sink = md::CropWindowPixels(c.vision);
  // Images as the decoder lets them through (up to 50 Mpx by default).
  for (const auto& [height, width] :
       std::initializer_list<std::pair<int, int>>{{1, 1},
                                                  {378, 378},
                                                  {480, 640},
                                                  {4000, 3000},
                                                  {7071, 7071},
                                                  {1, 50'000'000},
                                                  {50'000'000, 1},
                                                  {400, 125'000}}) {
    const md::Tiling tiling = md::ImageTiling(height, width, c.vision);
    FUZZ_CHECK(tiling.rows >= 1 && tiling.cols >= 1);
    sink = tiling.n_tiles();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view json(reinterpret_cast<const char*>(data), size);
  for (const md::MoondreamConfig& defaults :
       {md::Moondream2Config(), md::Moondream05BConfig()}) {
    const absl::StatusOr<md::MoondreamConfig> config =
        md::ParseConfigJson(json, defaults);
    if (!config.ok()) {
      FUZZ_CHECK_MSG(
          config.status().code() == absl::StatusCode::kInvalidArgument,
          config.status().ToString());
      continue;
    }
    FUZZ_CHECK(config->name == defaults.name);
    const absl::Status valid = md::ValidateConfig(*config);
    FUZZ_CHECK_MSG(valid.ok(), valid.ToString());
    CheckDerivedSizes(*config);
  }
  return 0;
}
