// Image bytes → the crops tensor the model encodes: decode (md_image),
// overlap-crop exactly as the reference, and wrap as a uint8 tensor.
#ifndef MOONDREAM_MODEL_NET_PREPROCESS_H_
#define MOONDREAM_MODEL_NET_PREPROCESS_H_

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "model/config/config.h"
#include "model/image/image_crops.h"
#include "model/image/image_decode.h"
#include "model/net/moondream.h"

namespace md {

// Overlap crops as the [1 + tiles, S, S, 3] uint8 tensor ImageCrops holds.
absl::StatusOr<ImageCrops> CropsToTensor(const OverlapCrops& crops);

// Decoded RGB image → crops tensor.
absl::StatusOr<ImageCrops> PrepareImage(const RgbImage& image,
                                        const VisionConfig& config);

// The image mirrored left to right (detect_gaze's prioritize_accuracy probes
// the mirror image too).
RgbImage FlipHorizontal(const RgbImage& image);

}  // namespace md

#endif  // MOONDREAM_MODEL_NET_PREPROCESS_H_
