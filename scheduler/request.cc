#include "scheduler/request.h"

#include <cstdio>
#include <string>
#include <tuple>
#include <utility>

#include "absl/hash/hash.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "model/net/preprocess.h"

namespace md::scheduler {

std::string ImageKey(const RgbImage& image, absl::string_view model_id) {
  const absl::string_view pixels(
      reinterpret_cast<const char*>(image.pixels_HWC.data()),
      image.pixels_HWC.size());
  // Two independently salted 64-bit hashes: a collision would hand one
  // image's prefix to another, so 64 bits alone are too few to be sure.
  const auto hash = [&](int salt) {
    return absl::Hash<
        std::tuple<int, int, int, absl::string_view, absl::string_view>>{}(
        std::make_tuple(salt, image.width, image.height, pixels, model_id));
  };
  return absl::StrFormat("%dx%d:%016x%016x", image.width, image.height,
                         hash(0x5eed), hash(0xfeed));
}

absl::StatusOr<std::shared_ptr<const EngineImage>> PrepareEngineImage(
    const RgbImage& image, const VisionConfig& config,
    absl::string_view model_id, bool with_mirror) {
  auto prepared = std::make_shared<EngineImage>();
  prepared->key = ImageKey(image, model_id);
  ASSIGN_OR_RETURN(prepared->crops, PrepareImage(image, config));
  if (with_mirror) {
    const RgbImage mirror = FlipHorizontal(image);
    prepared->mirrored_key = ImageKey(mirror, model_id);
    ASSIGN_OR_RETURN(prepared->mirrored, PrepareImage(mirror, config));
  }
  return std::shared_ptr<const EngineImage>(std::move(prepared));
}

// ---- CollectingSink ----

void CollectingSink::OnToken(int token, absl::string_view text) {
  absl::MutexLock lock(&mu_);
  result_.tokens.push_back(token);
  result_.token_times.push_back(absl::Now());
  result_.text.append(text.data(), text.size());
}

void CollectingSink::OnTextTail(absl::string_view text) {
  absl::MutexLock lock(&mu_);
  result_.text.append(text.data(), text.size());
}

void CollectingSink::OnBox(const Box& box) {
  absl::MutexLock lock(&mu_);
  result_.boxes.push_back(box);
}

void CollectingSink::OnPoint(const Point& point) {
  absl::MutexLock lock(&mu_);
  result_.points.push_back(point);
}

void CollectingSink::OnGaze(const std::optional<Point>& gaze) {
  absl::MutexLock lock(&mu_);
  result_.gaze = gaze;
  result_.gaze_reported = true;
}

void CollectingSink::OnDone(const absl::Status& status,
                            const RequestSummary& summary) {
  absl::MutexLock lock(&mu_);
  result_.done = true;
  result_.status = status;
  result_.summary = summary;
}

bool CollectingSink::HasOutput() const {
  return result_.done || !result_.tokens.empty() || !result_.boxes.empty() ||
         !result_.points.empty() || result_.gaze_reported;
}

bool CollectingSink::WaitDone(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithTimeout(absl::Condition(&result_.done), timeout);
}

bool CollectingSink::WaitFirstOutput(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithTimeout(absl::Condition(this, &CollectingSink::HasOutput),
                              timeout);
}

CollectingSink::Result CollectingSink::result() const {
  absl::MutexLock lock(&mu_);
  return result_;
}

}  // namespace md::scheduler
