// Images kept for later requests: EncodeImage returns a handle, and a
// request may send the handle instead of the bytes. The most recently used
// `capacity` images are kept; an evicted or unknown handle is NOT_FOUND.
// Thread-safe.
#ifndef MOONDREAM_SERVICE_HANDLES_H_
#define MOONDREAM_SERVICE_HANDLES_H_

#include <list>
#include <memory>
#include <string>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "model/image_decode.h"
#include "scheduler/request.h"

namespace md::service {

// What a handle keeps: the prepared image, and the decoded pixels (to
// prepare the mirror image that detect_gaze's accurate mode needs).
struct StoredImage {
  RgbImage rgb;
  std::shared_ptr<const scheduler::EngineImage> prepared;
};

class HandleStore {
 public:
  explicit HandleStore(int capacity) : capacity_(capacity) {}

  // Keeps `image` and returns its handle: the image's content key, so the
  // same image always gets the same handle.
  std::string Put(std::shared_ptr<const StoredImage> image);
  absl::StatusOr<std::shared_ptr<const StoredImage>> Get(
      const std::string& handle);

 private:
  using Entry = std::pair<std::string, std::shared_ptr<const StoredImage>>;

  const int capacity_;
  absl::Mutex mu_;
  std::list<Entry> lru_ ABSL_GUARDED_BY(mu_);  // Most recent first.
  absl::flat_hash_map<std::string, std::list<Entry>::iterator> index_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace md::service

#endif  // MOONDREAM_SERVICE_HANDLES_H_
