// What callers hand the engine, and how results come back.
//
// A request names its skill, its image (prepared off the engine thread: the
// crops and a content key), its prompt as token ids, its limits and sampling
// settings. Results go to the request's sink, called on the engine thread as
// they are decided: text pieces, objects, points, a gaze point, then exactly
// one OnDone with the final status.
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
#include "model/image_decode.h"
#include "model/moondream.h"
#include "model/runs.h"
#include "model/sampling.h"
#include "model/skills.h"

namespace md::scheduler {

enum class Skill { kCaption, kQuery, kDetect, kPoint, kGaze };
const char* SkillName(Skill skill);

// An image ready for the engine. `key` identifies the decoded pixels (and the
// model they were cropped for); equal keys share one prefix cache entry.
struct EngineImage {
  std::string key;
  ImageCrops crops;
  // The mirror image, for detect_gaze with prioritize_accuracy.
  std::optional<ImageCrops> mirrored;
  std::string mirrored_key;
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
  absl::Duration queued;         // Submit → admitted.
  absl::Duration time_to_first;  // Submit → first output (if any).
  absl::Duration total;          // Submit → done.
};

// Called on the engine thread: implementations must be quick and must not
// call back into the engine.
class RequestSink {
 public:
  virtual ~RequestSink() = default;
  // `text` is what `token` completes (empty while a character is partial).
  virtual void OnToken(int token, absl::string_view text) {}
  // Text still held back at the end (a partial character, as U+FFFD).
  virtual void OnTextTail(absl::string_view text) {}
  virtual void OnBox(const Box& box) {}
  virtual void OnPoint(const Point& point) {}
  virtual void OnGaze(const std::optional<Point>& gaze) {}
  // Exactly once, last.
  virtual void OnDone(const absl::Status& status,
                      const RequestSummary& summary) = 0;
};

struct GazeSettings {
  Point eye;                    // Where the eye is (single probe).
  std::optional<FaceBox> face;  // Set: prioritize_accuracy (20 probes).
  uint64_t seed = 0;            // For the accurate probes' eye positions.
  bool force_detect = false;
};

struct Request {
  Skill skill = Skill::kQuery;
  std::string tenant = "default";
  absl::Time deadline = absl::InfiniteFuture();
  std::shared_ptr<const EngineImage> image;
  // Caption, query, detect, point: the whole prompt (template applied).
  std::vector<int> prompt_ids;
  int max_tokens = kDefaultMaxTokens;  // Caption and query.
  int max_objects = kMaxObjects;       // Detect and point.
  SamplingParams sampling;             // Caption and query.
  // Caption and query: generate exactly max_tokens, eos or not (for load
  // tests and benchmarks, as vLLM's ignore_eos).
  bool ignore_eos = false;
  GazeSettings gaze;  // Gaze.
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
