// Encodes images (vision encoder + the 730-position prefix prefill) on a
// thread of its own, one batch at a time, so that running streams keep
// decoding while a new image is encoded instead of stalling for seconds.
// The prefill writes a scratch KV cache, never the engine's slots; the engine
// thread copies finished prefixes into the prefix cache and the slots.
#ifndef MOONDREAM_SCHEDULER_IMAGE_ENCODER_H_
#define MOONDREAM_SCHEDULER_IMAGE_ENCODER_H_

#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "model/net/moondream.h"
#include "model/skills/skills.h"
#include "scheduler/executor.h"

namespace md::scheduler {

class ImageEncoder {
 public:
  struct Batch {
    std::vector<std::string> keys;
    absl::StatusOr<std::vector<EncodedImage>> encoded;
    double seconds = 0;
  };

  // `on_done` runs on the encoder thread after each batch (to wake the
  // engine); it must be quick.
  ImageEncoder(Executor& executor, std::function<void()> on_done);
  // Finishes the batch in progress, then stops.
  ~ImageEncoder();

  ImageEncoder(const ImageEncoder&) = delete;
  ImageEncoder& operator=(const ImageEncoder&) = delete;

  // True while a batch is queued or running and not yet taken.
  bool Busy() const;
  // Starts a batch; only when !Busy().
  void Start(std::vector<std::string> keys, std::vector<ImageCrops> crops);
  // The finished batch, once.
  std::optional<Batch> TakeFinished();

 private:
  void Loop();
  bool HasWorkOrStop() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return pending_.has_value() || stop_;
  }

  Executor& executor_;
  const std::function<void()> on_done_;

  mutable absl::Mutex mu_;
  struct Pending {
    std::vector<std::string> keys;
    std::vector<ImageCrops> crops;
  };
  std::optional<Pending> pending_ ABSL_GUARDED_BY(mu_);
  bool running_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<Batch> finished_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;

  std::thread thread_;
};

}  // namespace md::scheduler

#endif  // MOONDREAM_SCHEDULER_IMAGE_ENCODER_H_
