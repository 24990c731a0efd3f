// Image prefix cache: image key → the KV of the image's 730 prefix positions
// ([L, 2, H, 730, D], every layer), least recently used first out, under a
// byte budget. A hit lets a request skip the vision encoder and the prefix
// prefill: the engine copies the entry into the request's slot.
//
// Owned and used by the engine thread only (no locking). Entries are never
// handed out by reference, so eviction cannot pull a prefix from under a slot.
#ifndef MOONDREAM_SCHEDULER_PREFIX_CACHE_H_
#define MOONDREAM_SCHEDULER_PREFIX_CACHE_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <list>
#include <optional>
#include <string>
#include <utility>

#include "absl/container/flat_hash_map.h"

namespace md::scheduler {

struct PrefixCacheCounters {
  int64_t hits = 0;
  int64_t misses = 0;
  int64_t evictions = 0;
  int64_t entries = 0;
  int64_t bytes = 0;
};

// A prefix and the id of this copy: every Insert makes a new id, so two
// slots placed from the same id hold the same bits.
struct CachedPrefix {
  at::Tensor prefix_L2HPD;
  uint64_t id = 0;
};

class PrefixCache {
 public:
  explicit PrefixCache(int64_t byte_budget) : byte_budget_(byte_budget) {}

  // The cached prefix (a hit, now most recent), or nullopt (a miss).
  std::optional<CachedPrefix> Lookup(const std::string& key);
  // Keeps `prefix_L2HPD` as the most recent entry, evicting the least recent
  // ones until the budget holds. An entry larger than the whole budget is
  // not kept (and evicts nothing). Replaces an entry with the same key.
  // Returns the prefix with its new id (kept or not).
  CachedPrefix Insert(const std::string& key, at::Tensor prefix_L2HPD);
  bool Contains(const std::string& key) const { return index_.contains(key); }

  const PrefixCacheCounters& counters() const { return counters_; }
  int64_t byte_budget() const { return byte_budget_; }

 private:
  using Entry = std::pair<std::string, CachedPrefix>;

  void Erase(std::list<Entry>::iterator it);

  const int64_t byte_budget_;
  std::list<Entry> lru_;  // Most recent first.
  absl::flat_hash_map<std::string, std::list<Entry>::iterator> index_;
  PrefixCacheCounters counters_;
  uint64_t next_id_ = 1;
};

}  // namespace md::scheduler

#endif  // MOONDREAM_SCHEDULER_PREFIX_CACHE_H_
