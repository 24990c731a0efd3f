// Image prefix cache: image key → the KV of the image's 730 prefix positions
// ([L, 2, H, 730, D], every layer), least recently used first out, under a
// byte budget. A hit lets a request skip the vision encoder and the prefix
// prefill, and costs no copy: the request's sequences read the entry's
// tensor in place (the slots store only the positions after the prefix,
// model/net/kv_cache.h).
//
// The engine pins an entry while sequences read it. Eviction skips pinned
// entries, so a prefix in use stays findable (new requests on that image
// hit it) and its bytes stay counted; when only pinned entries are left
// and a new one does not fit, the new one is handed out but not kept. (A
// tensor is also reference-counted, so memory is never freed under a
// reader either way.)
//
// Owned and used by the engine thread only (no locking).
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
  int64_t pinned_entries = 0;  // Entries that sequences read now.
};

// A prefix and the id of this copy (every Insert makes a new id).
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
  // unpinned ones until the budget holds. An entry that does not fit even
  // then (larger than the budget, or the rest is pinned) is not kept and
  // evicts nothing. Replaces an entry with the same key. Returns the prefix
  // with its new id (kept or not).
  CachedPrefix Insert(const std::string& key, at::Tensor prefix_L2HPD);
  bool Contains(const std::string& key) const { return index_.contains(key); }

  // One more / one fewer reader of the copy `id` (counted even when the
  // copy is not, or no longer, kept). Unpin balances a Pin.
  void Pin(uint64_t id);
  void Unpin(uint64_t id);
  int pins(uint64_t id) const;

  const PrefixCacheCounters& counters() const { return counters_; }
  int64_t byte_budget() const { return byte_budget_; }

 private:
  using Entry = std::pair<std::string, CachedPrefix>;

  // Returns the entry after `it`.
  std::list<Entry>::iterator Erase(std::list<Entry>::iterator it);
  // Evicts unpinned entries, least recent first, until `bytes` more fit;
  // false (and nothing evicted) when they cannot.
  bool MakeRoom(int64_t bytes);
  void CountPinned();

  const int64_t byte_budget_;
  std::list<Entry> lru_;  // Most recent first.
  absl::flat_hash_map<std::string, std::list<Entry>::iterator> index_;
  absl::flat_hash_map<uint64_t, int> pins_;  // id → readers, > 0 only.
  PrefixCacheCounters counters_;
  uint64_t next_id_ = 1;
};

}  // namespace md::scheduler

#endif  // MOONDREAM_SCHEDULER_PREFIX_CACHE_H_
