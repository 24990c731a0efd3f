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
  if (!MakeRoom(bytes)) return entry;
  lru_.emplace_front(key, entry);
  index_[key] = lru_.begin();
  counters_.bytes += bytes;
  counters_.entries = static_cast<int64_t>(lru_.size());
  return entry;
}

bool PrefixCache::MakeRoom(int64_t bytes) {
  int64_t evictable = 0;
  for (const Entry& entry : lru_) {
    if (!pins_.contains(entry.second.id)) {
      evictable += BytesOf(entry.second.prefix_L2HPD);
    }
  }
  if (counters_.bytes - evictable + bytes > byte_budget_) return false;
  for (auto it = lru_.end(); counters_.bytes + bytes > byte_budget_;) {
    --it;
    if (pins_.contains(it->second.id)) continue;
    it = Erase(it);
    ++counters_.evictions;
  }
  return true;
}

void PrefixCache::Pin(uint64_t id) {
  ++pins_[id];
  CountPinned();
}

void PrefixCache::Unpin(uint64_t id) {
  auto it = pins_.find(id);
  if (it == pins_.end()) return;
  if (--it->second == 0) pins_.erase(it);
  CountPinned();
}

int PrefixCache::pins(uint64_t id) const {
  auto it = pins_.find(id);
  return it == pins_.end() ? 0 : it->second;
}

void PrefixCache::CountPinned() {
  int64_t n = 0;
  for (const Entry& entry : lru_) n += pins_.contains(entry.second.id);
  counters_.pinned_entries = n;
}

std::list<PrefixCache::Entry>::iterator PrefixCache::Erase(
    std::list<Entry>::iterator it) {
  counters_.bytes -= BytesOf(it->second.prefix_L2HPD);
  index_.erase(it->first);
  auto next = lru_.erase(it);
  counters_.entries = static_cast<int64_t>(lru_.size());
  CountPinned();
  return next;
}

}  // namespace md::scheduler
