// Images kept for later requests: EncodeImage returns a handle, and a
// request may send the handle instead of the bytes.
//
// Handles belong to the tenant that made them: another tenant's handle is
// NOT_FOUND, exactly like an unknown one, so a tenant can learn nothing of
// another's images. The store is bounded by count and by bytes (what an
// entry holds: its crops and the encoded image, never the decoded pixels);
// the least recently used entries go first. Thread-safe.
#ifndef MOONDREAM_SERVICE_HANDLES_H_
#define MOONDREAM_SERVICE_HANDLES_H_

#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "scheduler/request.h"

namespace md::service {

// What a handle keeps: the prepared image (crops and its key), and the
// encoded bytes (to prepare the mirror image detect_gaze's accurate mode
// needs, on demand).
struct StoredImage {
  std::string tenant;
  std::string encoded;
  int width = 0;
  int height = 0;
  std::shared_ptr<const scheduler::EngineImage> prepared;

  int64_t bytes() const;
};

class HandleStore {
 public:
  HandleStore(int max_entries, int64_t max_bytes)
      : max_entries_(max_entries), max_bytes_(max_bytes) {}

  // Keeps `image` and returns its handle: its content key (which includes
  // the tenant), so the same image of the same tenant gets the same handle.
  // An image larger than the whole budget is refused.
  absl::StatusOr<std::string> Put(std::shared_ptr<const StoredImage> image);
  absl::StatusOr<std::shared_ptr<const StoredImage>> Get(
      const std::string& handle, absl::string_view tenant);

  int64_t bytes() const;
  int entries() const;

 private:
  using Entry = std::pair<std::string, std::shared_ptr<const StoredImage>>;
  void EvictOverBudget() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int max_entries_;
  const int64_t max_bytes_;
  mutable absl::Mutex mu_;
  int64_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
  std::list<Entry> lru_ ABSL_GUARDED_BY(mu_);  // Most recent first.
  absl::flat_hash_map<std::string, std::list<Entry>::iterator> index_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace md::service

#endif  // MOONDREAM_SERVICE_HANDLES_H_
