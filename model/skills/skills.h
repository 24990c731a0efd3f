// Skills for one request at the token level (docs/DESIGN.md §2.5): the batch of
// one (or of 20 gaze probes) driven through the same runs and step code the
// engine uses. Each call works on a copy of an encoded image prefix, so one
// encoding serves any number of requests.
#ifndef MOONDREAM_MODEL_SKILLS_SKILLS_H_
#define MOONDREAM_MODEL_SKILLS_SKILLS_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "model/net/moondream.h"
#include "model/skills/runs.h"
#include "model/skills/skill_table.h"
#include "model/skills/skill_types.h"
#include "model/skills/step.h"

namespace md {

// An image encoded for the text model: the KV of its 730 prefix positions
// (BOS + image tokens), [L, 2, H, 730, D].
struct EncodedImage {
  at::Tensor prefix_kv_L2HPD;
};

absl::StatusOr<EncodedImage> EncodeImage(const Model& model,
                                         const ImageCrops& image);
// Several images: one vision batch, one prefix prefill batch.
absl::StatusOr<std::vector<EncodedImage>> EncodeImages(
    const Model& model, absl::Span<const ImageCrops> images);

// Prompt ids from the config's templates; an error when the model's config
// has no template for the skill.
absl::StatusOr<std::vector<int>> CaptionPrompt(const MoondreamConfig& config,
                                               CaptionLength length);
absl::StatusOr<std::vector<int>> QueryPrompt(
    const MoondreamConfig& config, absl::Span<const int> question_ids);
absl::StatusOr<std::vector<int>> DetectPrompt(const MoondreamConfig& config,
                                              absl::Span<const int> object_ids);
absl::StatusOr<std::vector<int>> PointPrompt(const MoondreamConfig& config,
                                             absl::Span<const int> object_ids);

// The two strings detect_gaze tokenizes ("\n\nPoint:" and " gaze\n\n").
struct GazePromptIds {
  std::vector<int> before;
  std::vector<int> after;
};
// GPT-2's ids for them (the released models).
GazePromptIds Gpt2GazePromptIds();

// [emb(before); coord(eye.x); coord(eye.y); emb(after)].
absl::StatusOr<at::Tensor> GazePromptEmbeddings(const InputEmbedder& model,
                                                const GazePromptIds& ids,
                                                Point eye);

struct TextResult {
  std::vector<int> tokens;
  StopReason stop = StopReason::kNone;
};
struct DetectResult {
  std::vector<Box> objects;
  std::vector<std::vector<int>> bins;
  std::optional<int> first_token;
  StopReason stop = StopReason::kNone;
};
struct PointResult {
  std::vector<Point> points;
  std::vector<std::vector<int>> bins;
  std::optional<int> first_token;
  StopReason stop = StopReason::kNone;
};
struct GazeResult {
  std::optional<Point> gaze;
  std::vector<int> bins;
  std::optional<int> first_token;
};

// Query or caption (greedy unless `choose` says otherwise).
absl::StatusOr<TextResult> GenerateText(
    const Model& model, const EncodedImage& image, std::vector<int> prompt_ids,
    int max_tokens, TokenChooser choose = {}, const StepObserver& observe = {},
    TokenSink on_token = {});
absl::StatusOr<DetectResult> Detect(const Model& model,
                                    const EncodedImage& image,
                                    std::vector<int> prompt_ids,
                                    int max_objects = kMaxObjects,
                                    const StepObserver& observe = {});
absl::StatusOr<PointResult> PointAt(const Model& model,
                                    const EncodedImage& image,
                                    std::vector<int> prompt_ids,
                                    int max_objects = kMaxObjects,
                                    const StepObserver& observe = {});
// Gaze from one eye position.
absl::StatusOr<GazeResult> DetectGaze(const Model& model,
                                      const EncodedImage& image,
                                      const GazePromptIds& ids, Point eye,
                                      bool force_detect = false,
                                      const StepObserver& observe = {});

// One probe of prioritize_accuracy: where the eye is placed, on the image or
// on its mirror image (x then already mirrored).
struct GazeProbe {
  Point eye;
  bool mirrored = false;
};
inline constexpr int kGazeProbesPerSide = 10;
// The 2 × 10 probes in the reference's order (image first).
absl::StatusOr<std::vector<GazeProbe>> AccurateGazeProbes(FaceBox face,
                                                          uint64_t seed);
// The probes' answers (nullopt: none found) → the averaged gaze, or none
// when fewer than 10 probes answered. Mirrored answers are flipped back.
std::optional<Point> CombineGazeProbes(
    absl::Span<const GazeProbe> probes,
    absl::Span<const std::optional<Point>> answers);

// prioritize_accuracy: 10 eye positions drawn uniformly in the face on the
// image and 10 on its mirror image (Python's random.seed(seed) stream, in
// the reference's order), all 20 probes run as one batch; fewer than 10
// answers → no gaze; otherwise outliers are dropped and the rest averaged.
absl::StatusOr<std::optional<Point>> DetectGazeAccurate(
    const Model& model, const EncodedImage& image,
    const EncodedImage& flipped_image, const GazePromptIds& ids, FaceBox face,
    uint64_t seed, bool force_detect = false);

}  // namespace md

#endif  // MOONDREAM_MODEL_SKILLS_SKILLS_H_
