#include "scheduler/prefix_cache.h"

#include <ATen/ATen.h>

namespace md::scheduler {
namespace {

int64_t BytesOf(const at::Tensor& t) {
  return static_cast<int64_t>(t.numel()) *
         static_cast<int64_t>(t.element_size());
}

}  // namespace

std::optional<CachedPrefix> PrefixCache::Lookup(const std::string& key) {
  auto it = index_.find(key);
  if (it == index_.end()) {
    ++counters_.misses;
    return std::nullopt;
  }
  ++counters_.hits;
  lru_.splice(lru_.begin(), lru_, it->second);
  return it->second->second;
}

CachedPrefix PrefixCache::Insert(const std::string& key,
                                 at::Tensor prefix_L2HPD) {
  CachedPrefix entry{std::move(prefix_L2HPD), next_id_++};
  if (auto it = index_.find(key); it != index_.end()) Erase(it->second);
  const int64_t bytes = BytesOf(entry.prefix_L2HPD);
  if (bytes > byte_budget_) return entry;
  while (!lru_.empty() && counters_.bytes + bytes > byte_budget_) {
    Erase(std::prev(lru_.end()));
    ++counters_.evictions;
  }
  lru_.emplace_front(key, entry);
  index_[key] = lru_.begin();
  counters_.bytes += bytes;
  counters_.entries = static_cast<int64_t>(lru_.size());
  return entry;
}

void PrefixCache::Erase(std::list<Entry>::iterator it) {
  counters_.bytes -= BytesOf(it->second.prefix_L2HPD);
  index_.erase(it->first);
  lru_.erase(it);
  counters_.entries = static_cast<int64_t>(lru_.size());
}

}  // namespace md::scheduler
