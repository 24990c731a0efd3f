// The engine's slots: row s of every layer's K and V tensors ([S, H, P−730,
// D], model/net/kv_cache.h, shared-prefix layout) belongs to at most one
// sequence at a time.
//
// One sequence, P positions (the context per sequence, a setting):
//
//   0     1 ............ 729 | 730 ......... 730+T−1 | 730+T ....... P−1
//   BOS   image tokens       | prompt, T tokens       | generated tokens,
//   \____ image prefix ____/ | (chunked prefill)      | coordinates, sizes
//   not in the slot: read in |                        | one per decode step
//   place from the prefix    |\_____________ in the slot (index − 730) ____/
//   cache's tensor (or the   |
//   encoder's, when not kept)|
//
// States, in order; any state may go back to kFree (finished, cancelled,
// expired or failed), which returns the slot to the free list at once:
//
//   kFree ─► kAwaitingImage ─► kPrefill ─► kDecode ─► kFree
#ifndef MOONDREAM_SCHEDULER_SLOTS_H_
#define MOONDREAM_SCHEDULER_SLOTS_H_

#include <optional>
#include <vector>

namespace md::scheduler {

enum class SlotState { kFree, kAwaitingImage, kPrefill, kDecode };
const char* SlotStateName(SlotState state);

class SlotTable {
 public:
  explicit SlotTable(int n_slots);

  // Takes the lowest free slot (kAwaitingImage), or nullopt when none is.
  std::optional<int> Acquire();
  void Release(int slot);
  void Set(int slot, SlotState state);
  SlotState state(int slot) const { return states_[slot]; }

  int n_slots() const { return static_cast<int>(states_.size()); }
  int n_free() const { return static_cast<int>(free_.size()); }
  int n_used() const { return n_slots() - n_free(); }

 private:
  std::vector<SlotState> states_;
  std::vector<int> free_;  // Kept sorted, highest first: pop_back is lowest.
};

}  // namespace md::scheduler

#endif  // MOONDREAM_SCHEDULER_SLOTS_H_
