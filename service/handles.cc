#include "service/handles.h"

#include "absl/strings/str_cat.h"

namespace md::service {
namespace {

int64_t TensorBytes(const at::Tensor& t) {
  return t.defined() ? static_cast<int64_t>(t.nbytes()) : 0;
}

}  // namespace

int64_t StoredImage::bytes() const {
  int64_t n = static_cast<int64_t>(encoded.size() + tenant.size());
  if (prepared != nullptr) {
    n += TensorBytes(prepared->crops.crops_u8);
    if (prepared->mirrored.has_value()) {
      n += TensorBytes(prepared->mirrored->crops_u8);
    }
  }
  return n;
}

absl::StatusOr<std::string> HandleStore::Put(
    std::shared_ptr<const StoredImage> image) {
  const int64_t size = image->bytes();
  if (size > max_bytes_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the image takes ", size,
        " bytes as a handle; the handle store "
        "holds ",
        max_bytes_, " (send the image with each request instead)"));
  }
  std::string handle = image->prepared->key;
  absl::MutexLock lock(&mu_);
  if (auto it = index_.find(handle); it != index_.end()) {
    bytes_ -= it->second->second->bytes();
    lru_.splice(lru_.begin(), lru_, it->second);
    it->second->second = std::move(image);
  } else {
    lru_.emplace_front(handle, std::move(image));
    index_[handle] = lru_.begin();
  }
  bytes_ += size;
  EvictOverBudget();
  return handle;
}

void HandleStore::EvictOverBudget() {
  while (lru_.size() > 1 && (static_cast<int>(lru_.size()) > max_entries_ ||
                             bytes_ > max_bytes_)) {
    bytes_ -= lru_.back().second->bytes();
    index_.erase(lru_.back().first);
    lru_.pop_back();
  }
}

absl::StatusOr<std::shared_ptr<const StoredImage>> HandleStore::Get(
    const std::string& handle, absl::string_view tenant) {
  absl::MutexLock lock(&mu_);
  auto it = index_.find(handle);
  // Another tenant's handle reads as unknown: the same answer, so nothing
  // is learnt from it.
  if (it == index_.end() || it->second->second->tenant != tenant) {
    return absl::NotFoundError(
        absl::StrCat("unknown or expired image handle '", handle.substr(0, 80),
                     "'; send the image bytes (or EncodeImage again)"));
  }
  lru_.splice(lru_.begin(), lru_, it->second);
  return it->second->second;
}

int64_t HandleStore::bytes() const {
  absl::MutexLock lock(&mu_);
  return bytes_;
}

int HandleStore::entries() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(lru_.size());
}

}  // namespace md::service
