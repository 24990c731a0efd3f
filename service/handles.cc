#include "service/handles.h"

#include "absl/strings/str_cat.h"

namespace md::service {

std::string HandleStore::Put(std::shared_ptr<const StoredImage> image) {
  std::string handle = image->prepared->key;
  absl::MutexLock lock(&mu_);
  if (auto it = index_.find(handle); it != index_.end()) {
    lru_.splice(lru_.begin(), lru_, it->second);
    it->second->second = std::move(image);
    return handle;
  }
  lru_.emplace_front(handle, std::move(image));
  index_[handle] = lru_.begin();
  while (static_cast<int>(lru_.size()) > capacity_) {
    index_.erase(lru_.back().first);
    lru_.pop_back();
  }
  return handle;
}

absl::StatusOr<std::shared_ptr<const StoredImage>> HandleStore::Get(
    const std::string& handle) {
  absl::MutexLock lock(&mu_);
  auto it = index_.find(handle);
  if (it == index_.end()) {
    return absl::NotFoundError(
        absl::StrCat("unknown or expired image handle '", handle.substr(0, 80),
                     "'; send the image bytes (or EncodeImage again)"));
  }
  lru_.splice(lru_.begin(), lru_, it->second);
  return it->second->second;
}

}  // namespace md::service
