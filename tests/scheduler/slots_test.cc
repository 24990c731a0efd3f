#include "scheduler/slots.h"

#include <gtest/gtest.h>

namespace md::scheduler {
namespace {

TEST(SlotTableTest, AcquiresLowestFreeSlotAndReusesReleasedOnes) {
  SlotTable slots(3);
  EXPECT_EQ(slots.n_free(), 3);
  EXPECT_EQ(slots.Acquire(), 0);
  EXPECT_EQ(slots.Acquire(), 1);
  EXPECT_EQ(slots.Acquire(), 2);
  EXPECT_EQ(slots.Acquire(), std::nullopt);
  EXPECT_EQ(slots.n_used(), 3);
  slots.Release(1);
  EXPECT_EQ(slots.state(1), SlotState::kFree);
  EXPECT_EQ(slots.Acquire(), 1);
  EXPECT_EQ(slots.state(1), SlotState::kAwaitingImage);
}

TEST(SlotTableTest, DoubleOrOutOfRangeReleaseIsIgnored) {
  SlotTable slots(2);
  EXPECT_EQ(slots.Acquire(), 0);
  slots.Release(0);
  slots.Release(0);
  slots.Release(7);
  slots.Release(-1);
  EXPECT_EQ(slots.n_free(), 2);
  EXPECT_EQ(slots.Acquire(), 0);
  EXPECT_EQ(slots.Acquire(), 1);
}

TEST(SlotTableTest, StatesFollowTheSequence) {
  SlotTable slots(1);
  const int slot = *slots.Acquire();
  slots.Set(slot, SlotState::kPrefill);
  EXPECT_STREQ(SlotStateName(slots.state(slot)), "prefill");
  slots.Set(slot, SlotState::kDecode);
  EXPECT_STREQ(SlotStateName(slots.state(slot)), "decode");
}

}  // namespace
}  // namespace md::scheduler
