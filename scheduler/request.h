// What callers hand the engine, and how results come back.
//
// A request carries its skill's job (what to run, validated when built), its
// image (prepared off the engine thread: the crops and a content key), its
// tenant and deadline. Results go to the request's sink, called on the engine
// thread as they are decided: the job's outputs, then exactly one OnDone with
// the final status.
#ifndef MOONDREAM_SCHEDULER_REQUEST_H_
#define MOONDREAM_SCHEDULER_REQUEST_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "model/image/image_decode.h"
#include "model/net/moondream.h"
#include "model/skills/jobs.h"
#include "model/skills/runs.h"

namespace md::scheduler {

// An image ready for the engine. `key` identifies the decoded pixels (and the
// model they were cropped for); equal keys share one prefix cache entry.
struct EngineImage {
  std::string key;
  ImageCrops crops;
  // The mirror image, for jobs with sequences on it (ImageSide::kMirror).
  std::optional<ImageCrops> mirrored;
  std::string mirrored_key;

  // The crops and key of one side (the mirror only when prepared with it).
  const ImageCrops& crops_of(ImageSide side) const {
    return side == ImageSide::kMirror ? *mirrored : crops;
  }
  const std::string& key_of(ImageSide side) const {
    return side == ImageSide::kMirror ? mirrored_key : key;
  }
};

// Crops `image` for `model` (and its mirror image when asked), keyed by a
// 128-bit hash of the pixels plus `model_id`. Runs on the caller's thread.
absl::StatusOr<std::shared_ptr<const EngineImage>> PrepareEngineImage(
    const RgbImage& image, const VisionConfig& config,
    absl::string_view model_id, bool with_mirror);

// The content key PrepareEngineImage uses.
std::string ImageKey(const RgbImage& image, absl::string_view model_id);

struct RequestSummary {
  StopReason stop = StopReason::kNone;
  int prompt_tokens = 0;  // Prompt positions after the image prefix.
  int output_tokens = 0;  // Tokens, coordinates and sizes decoded.
  bool image_cache_hit = false;
  absl::Duration queued;  // Submit → admitted.
  // From the request's arrival (Request::arrived: before the image was
  // decoded), as a client measures them.
  absl::Duration time_to_first;  // Arrival → first output (if any).
  absl::Duration total;          // Arrival → done.
};

// What a request's outputs go to, and how it ends. Called on the engine
// thread: implementations must be quick and must not call back into the
// engine. Outputs (OutputSink, model/skills/jobs.h) arrive as the request's
// job decides them, then exactly one OnDone, last.
class RequestSink : public OutputSink {
 public:
  virtual void OnDone(const absl::Status& status,
                      const RequestSummary& summary) = 0;
};

struct Request {
  // The skill's work, built and validated by model/skills/jobs.h.
  std::unique_ptr<SkillJob> job;
  std::string tenant = "default";
  absl::Time deadline = absl::InfiniteFuture();
  // When the transport received it (before decoding its image); unset:
  // when it was submitted.
  absl::Time arrived = absl::InfinitePast();
  std::shared_ptr<const EngineImage> image;
  std::shared_ptr<RequestSink> sink;
};

// A sink that keeps everything, for tools, tests and benchmarks; another
// thread waits for the end.
class CollectingSink : public RequestSink {
 public:
  void OnToken(int token, absl::string_view text) override;
  void OnTextTail(absl::string_view text) override;
  void OnBox(const Box& box) override;
  void OnPoint(const Point& point) override;
  void OnGaze(const std::optional<Point>& gaze) override;
  void OnDone(const absl::Status& status,
              const RequestSummary& summary) override;

  // Blocks until OnDone (false on timeout).
  bool WaitDone(absl::Duration timeout = absl::InfiniteDuration());
  // Blocks until the first output or OnDone (false on timeout).
  bool WaitFirstOutput(absl::Duration timeout = absl::InfiniteDuration());

  struct Result {
    bool done = false;
    absl::Status status;
    RequestSummary summary;
    std::vector<int> tokens;
    std::vector<absl::Time> token_times;
    std::string text;
    std::vector<Box> boxes;
    std::vector<Point> points;
    std::optional<Point> gaze;
    bool gaze_reported = false;
  };
  Result result() const;

 private:
  bool HasOutput() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  Result result_ ABSL_GUARDED_BY(mu_);
};

}  // namespace md::scheduler

#endif  // MOONDREAM_SCHEDULER_REQUEST_H_
