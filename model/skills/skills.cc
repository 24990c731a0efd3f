#include "model/skills/skills.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "model/io/tensor_io.h"
#include "model/skills/checks.h"
#include "model/skills/outliers.h"
#include "model/skills/python_random.h"

namespace md {
namespace {

std::vector<int> Concat(absl::Span<const int> a, absl::Span<const int> b,
                        absl::Span<const int> c = {}) {
  std::vector<int> out(a.begin(), a.end());
  out.insert(out.end(), b.begin(), b.end());
  out.insert(out.end(), c.begin(), c.end());
  return out;
}

absl::StatusOr<std::vector<int>> Templated(
    const std::optional<PromptTemplate>& t, absl::string_view skill,
    absl::Span<const int> ids) {
  if (!t.has_value()) {
    return absl::FailedPreconditionError(
        absl::StrCat("this model does not support ", skill));
  }
  return Concat(t->prefix, ids, t->suffix);
}

// A cache of `n_slots` slots, each holding `image`'s prefix and room for
// `extra` more positions (capped at the model's context).
absl::StatusOr<KvCache> CacheWithPrefix(
    const Model& model, absl::Span<const EncodedImage* const> images,
    int extra) {
  const int n_positions = std::min(model.config().text.max_context,
                                   model.prefix_len() + std::max(extra, 1));
  ASSIGN_OR_RETURN(
      KvCache cache,
      model.NewKvCache(static_cast<int>(images.size()), n_positions));
  RETURN_IF_ERROR(CatchTorchStatus("placing image prefixes", [&] {
    for (size_t s = 0; s < images.size(); ++s) {
      WriteSlotPrefix(cache, static_cast<int>(s), images[s]->prefix_kv_L2HPD);
    }
  }));
  return cache;
}

absl::Status RunAlone(const Model& model, const EncodedImage& image,
                      SkillRun& run, int extra_positions,
                      const StepObserver& observe) {
  const EncodedImage* images[] = {&image};
  ASSIGN_OR_RETURN(KvCache cache,
                   CacheWithPrefix(model, images, extra_positions));
  ActiveRun active[] = {{&run, /*slot=*/0, model.prefix_len()}};
  return RunToCompletion(model, cache, active, observe);
}

absl::Status CheckPrompt(const Model& model, absl::Span<const int> prompt_ids) {
  if (prompt_ids.empty()) return absl::InvalidArgumentError("empty prompt");
  const int room = model.config().text.max_context - model.prefix_len();
  if (static_cast<int>(prompt_ids.size()) > room) {
    return absl::OutOfRangeError(
        absl::StrCat("prompt of ", prompt_ids.size(), " tokens exceeds the ",
                     room, " positions left after the image"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<EncodedImage>> EncodeImages(
    const Model& model, absl::Span<const ImageCrops> images) {
  if (images.empty()) return std::vector<EncodedImage>();
  ASSIGN_OR_RETURN(std::vector<at::Tensor> embeddings,
                   model.EmbedImages(images));
  const int n = static_cast<int>(images.size());
  ASSIGN_OR_RETURN(KvCache cache, model.NewKvCache(n, model.prefix_len()));
  std::vector<at::Tensor> prefixes;
  std::vector<SequenceChunk> chunks;
  for (int i = 0; i < n; ++i) {
    ASSIGN_OR_RETURN(at::Tensor prefix, model.PrefixEmbeddings(embeddings[i]));
    prefixes.push_back(prefix);
    chunks.push_back({i, 0, model.prefix_len(), AttentionMask::kCausal});
  }
  ASSIGN_OR_RETURN(at::Tensor embeds_NC, CatchTorch("batching prefixes", [&] {
                     return at::cat(prefixes);
                   }));
  RETURN_IF_ERROR(model.Forward(embeds_NC, chunks, cache).status());
  return CatchTorch("reading prefixes", [&] {
    std::vector<EncodedImage> encoded;
    for (int i = 0; i < n; ++i) {
      encoded.push_back({ReadSlotPrefix(cache, i, model.prefix_len())});
    }
    return encoded;
  });
}

absl::StatusOr<EncodedImage> EncodeImage(const Model& model,
                                         const ImageCrops& image) {
  ASSIGN_OR_RETURN(std::vector<EncodedImage> encoded,
                   EncodeImages(model, {image}));
  return std::move(encoded[0]);
}

absl::StatusOr<std::vector<int>> CaptionPrompt(const MoondreamConfig& config,
                                               CaptionLength length) {
  const auto& t = length == CaptionLength::kShort
                      ? config.tokenizer.caption_short
                      : config.tokenizer.caption_normal;
  if (!t.has_value()) {
    return absl::FailedPreconditionError(
        "this model does not support that caption length");
  }
  return *t;
}

absl::StatusOr<std::vector<int>> QueryPrompt(
    const MoondreamConfig& config, absl::Span<const int> question_ids) {
  return Templated(config.tokenizer.query, "query", question_ids);
}

absl::StatusOr<std::vector<int>> DetectPrompt(
    const MoondreamConfig& config, absl::Span<const int> object_ids) {
  return Templated(config.tokenizer.detect, "detect", object_ids);
}

absl::StatusOr<std::vector<int>> PointPrompt(const MoondreamConfig& config,
                                             absl::Span<const int> object_ids) {
  return Templated(config.tokenizer.point, "point", object_ids);
}

GazePromptIds Gpt2GazePromptIds() {
  return {{198, 198, 12727, 25}, {17841, 628}};
}

absl::StatusOr<at::Tensor> GazePromptEmbeddings(const InputEmbedder& model,
                                                const GazePromptIds& ids,
                                                Point eye) {
  ASSIGN_OR_RETURN(at::Tensor before, model.EmbedTokens(ids.before));
  ASSIGN_OR_RETURN(at::Tensor after, model.EmbedTokens(ids.after));
  ASSIGN_OR_RETURN(at::Tensor eye_2C,
                   model.EncodeCoordinates(
                       {static_cast<float>(eye.x), static_cast<float>(eye.y)}));
  return CatchTorch("building the gaze prompt", [&] {
    return at::cat({before, eye_2C, after});
  });
}

absl::StatusOr<TextResult> GenerateText(const Model& model,
                                        const EncodedImage& image,
                                        std::vector<int> prompt_ids,
                                        int max_tokens, TokenChooser choose,
                                        const StepObserver& observe,
                                        TokenSink on_token) {
  RETURN_IF_ERROR(CheckPrompt(model, prompt_ids));
  if (max_tokens < 0)
    return absl::InvalidArgumentError("max_tokens must be >= 0");
  const int extra = static_cast<int>(prompt_ids.size()) + max_tokens;
  TextRun run(std::move(prompt_ids), max_tokens,
              model.config().tokenizer.eos_id, std::move(choose),
              std::move(on_token));
  RETURN_IF_ERROR(RunAlone(model, image, run, extra, observe));
  return TextResult{run.tokens(), run.stop_reason()};
}

namespace {

// Detect and point: the same loop; detect feeds a size after each (x, y).
absl::StatusOr<RegionRun> RunRegionAlone(
    const Model& model, const EncodedImage& image, RegionRun::Kind kind,
    std::vector<int> prompt_ids, int max_objects, const StepObserver& observe) {
  RETURN_IF_ERROR(CheckPrompt(model, prompt_ids));
  const int steps_per_object = kind == RegionRun::Kind::kDetect ? 3 : 2;
  const int extra =
      static_cast<int>(prompt_ids.size()) + steps_per_object * max_objects;
  RegionRun run(kind, std::move(prompt_ids), max_objects,
                model.config().tokenizer.eos_id);
  RETURN_IF_ERROR(RunAlone(model, image, run, extra, observe));
  return run;
}

}  // namespace

absl::StatusOr<DetectResult> Detect(const Model& model,
                                    const EncodedImage& image,
                                    std::vector<int> prompt_ids,
                                    int max_objects,
                                    const StepObserver& observe) {
  ASSIGN_OR_RETURN(RegionRun run,
                   RunRegionAlone(model, image, RegionRun::Kind::kDetect,
                                  std::move(prompt_ids), max_objects, observe));
  return DetectResult{run.boxes(), run.bins(), run.first_token(),
                      run.stop_reason()};
}

absl::StatusOr<PointResult> PointAt(const Model& model,
                                    const EncodedImage& image,
                                    std::vector<int> prompt_ids,
                                    int max_objects,
                                    const StepObserver& observe) {
  ASSIGN_OR_RETURN(RegionRun run,
                   RunRegionAlone(model, image, RegionRun::Kind::kPoint,
                                  std::move(prompt_ids), max_objects, observe));
  return PointResult{run.points(), run.bins(), run.first_token(),
                     run.stop_reason()};
}

namespace {
GazeResult GazeResultOf(const RegionRun& run) {
  GazeResult result;
  result.first_token = run.first_token();
  if (!run.points().empty()) {
    result.gaze = run.points()[0];
    result.bins = run.bins()[0];
  }
  return result;
}
}  // namespace

absl::StatusOr<GazeResult> DetectGaze(const Model& model,
                                      const EncodedImage& image,
                                      const GazePromptIds& ids, Point eye,
                                      bool force_detect,
                                      const StepObserver& observe) {
  ASSIGN_OR_RETURN(at::Tensor prompt, GazePromptEmbeddings(model, ids, eye));
  const int extra = static_cast<int>(prompt.size(0)) + 2;
  RegionRun run =
      RegionRun::Gaze(prompt, model.config().tokenizer.eos_id, force_detect);
  RETURN_IF_ERROR(RunAlone(model, image, run, extra, observe));
  return GazeResultOf(run);
}

absl::StatusOr<std::vector<GazeProbe>> AccurateGazeProbes(FaceBox face,
                                                          uint64_t seed) {
  // The single-request path (DetectGazeAccurate) has no job factory in front.
  RETURN_IF_ERROR(CheckFace(face));
  PythonRandom random(seed);
  std::vector<GazeProbe> probes;
  for (int side = 0; side < 2; ++side) {
    const bool mirrored = side == 1;
    for (int i = 0; i < kGazeProbesPerSide; ++i) {
      const double u = random.Uniform(face.x_min, face.x_max);
      const double y = random.Uniform(face.y_min, face.y_max);
      probes.push_back({Point{mirrored ? 1 - u : u, y}, mirrored});
    }
  }
  return probes;
}

std::optional<Point> CombineGazeProbes(
    absl::Span<const GazeProbe> probes,
    absl::Span<const std::optional<Point>> answers) {
  std::vector<PointXY> detections;
  for (size_t i = 0; i < probes.size() && i < answers.size(); ++i) {
    if (!answers[i].has_value()) continue;
    const Point& p = *answers[i];
    detections.push_back({probes[i].mirrored ? 1 - p.x : p.x, p.y});
  }
  if (static_cast<int>(detections.size()) < kGazeProbesPerSide) {
    return std::nullopt;
  }
  std::vector<PointXY> kept = RemoveOutlierPoints(detections);
  double sx = 0, sy = 0;
  for (const PointXY& p : kept) {
    sx += p.x;
    sy += p.y;
  }
  return Point{sx / kept.size(), sy / kept.size()};
}

absl::StatusOr<std::optional<Point>> DetectGazeAccurate(
    const Model& model, const EncodedImage& image,
    const EncodedImage& flipped_image, const GazePromptIds& ids, FaceBox face,
    uint64_t seed, bool force_detect) {
  ASSIGN_OR_RETURN(std::vector<GazeProbe> probes,
                   AccurateGazeProbes(face, seed));
  std::vector<RegionRun> runs;
  std::vector<const EncodedImage*> slot_images;
  for (const GazeProbe& probe : probes) {
    ASSIGN_OR_RETURN(at::Tensor prompt,
                     GazePromptEmbeddings(model, ids, probe.eye));
    runs.push_back(
        RegionRun::Gaze(prompt, model.config().tokenizer.eos_id, force_detect));
    slot_images.push_back(probe.mirrored ? &flipped_image : &image);
  }
  const int prompt_len =
      static_cast<int>(ids.before.size() + ids.after.size()) + 2;
  ASSIGN_OR_RETURN(KvCache cache,
                   CacheWithPrefix(model, slot_images, prompt_len + 2));
  std::vector<ActiveRun> active;
  for (size_t i = 0; i < runs.size(); ++i) {
    active.push_back({&runs[i], static_cast<int>(i), model.prefix_len()});
  }
  RETURN_IF_ERROR(RunToCompletion(model, cache, absl::MakeSpan(active)));

  std::vector<std::optional<Point>> answers;
  for (const RegionRun& run : runs) {
    answers.push_back(run.points().empty()
                          ? std::nullopt
                          : std::optional<Point>(run.points()[0]));
  }
  return CombineGazeProbes(probes, answers);
}

}  // namespace md
