#include "scheduler/image_encoder.h"

#include <utility>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "model/io/tensor_io.h"

namespace md::scheduler {

ImageEncoder::ImageEncoder(Executor& executor, std::function<void()> on_done)
    : executor_(executor), on_done_(std::move(on_done)) {
  thread_ = std::thread([this] { Loop(); });
}

ImageEncoder::~ImageEncoder() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  thread_.join();
}

bool ImageEncoder::Busy() const {
  absl::MutexLock lock(&mu_);
  return pending_.has_value() || running_ || finished_.has_value();
}

void ImageEncoder::Start(std::vector<std::string> keys,
                         std::vector<ImageCrops> crops) {
  absl::MutexLock lock(&mu_);
  pending_ = Pending{std::move(keys), std::move(crops)};
}

std::optional<ImageEncoder::Batch> ImageEncoder::TakeFinished() {
  absl::MutexLock lock(&mu_);
  std::optional<Batch> batch = std::move(finished_);
  finished_.reset();
  return batch;
}

void ImageEncoder::Loop() {
  for (;;) {
    Pending work;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(this, &ImageEncoder::HasWorkOrStop));
      if (stop_) return;
      work = std::move(*pending_);
      pending_.reset();
      running_ = true;
    }
    const absl::Time start = absl::Now();
    // Nothing may throw out of this thread: an exception becomes the
    // batch's status.
    Batch batch{
        std::move(work.keys),
        CatchExceptions("encoding images",
                        [&] { return executor_.EncodeImages(work.crops); }),
        0};
    batch.seconds = absl::ToDoubleSeconds(absl::Now() - start);
    {
      absl::MutexLock lock(&mu_);
      finished_ = std::move(batch);
      running_ = false;
    }
    if (on_done_) on_done_();
  }
}

}  // namespace md::scheduler
