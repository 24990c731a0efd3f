#include "scheduler/slots.h"

#include <algorithm>
#include <functional>

namespace md::scheduler {

const char* SlotStateName(SlotState state) {
  switch (state) {
    case SlotState::kFree:
      return "free";
    case SlotState::kAwaitingImage:
      return "awaiting_image";
    case SlotState::kPrefill:
      return "prefill";
    case SlotState::kDecode:
      return "decode";
  }
  return "unknown";
}

SlotTable::SlotTable(int n_slots)
    : states_(std::max(n_slots, 0), SlotState::kFree) {
  for (int s = n_slots - 1; s >= 0; --s) free_.push_back(s);
}

std::optional<int> SlotTable::Acquire() {
  if (free_.empty()) return std::nullopt;
  const int slot = free_.back();
  free_.pop_back();
  states_[slot] = SlotState::kAwaitingImage;
  return slot;
}

void SlotTable::Release(int slot) {
  if (slot < 0 || slot >= n_slots() || states_[slot] == SlotState::kFree) {
    return;
  }
  states_[slot] = SlotState::kFree;
  free_.insert(
      std::upper_bound(free_.begin(), free_.end(), slot, std::greater<int>()),
      slot);
}

void SlotTable::Set(int slot, SlotState state) {
  if (slot >= 0 && slot < n_slots()) states_[slot] = state;
}

}  // namespace md::scheduler
