// The bound on concurrent image decodes (issue: eight large PNGs at once kept
// the server busy for a minute and starved health and cached queries).
#include "service/work_permits.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <optional>
#include <thread>

#include "absl/synchronization/notification.h"

namespace md::service {
namespace {

using ::testing::HasSubstr;

TEST(WorkPermitsTest, RefusesPastTheBoundAfterItsWait) {
  WorkPermits permits(2);
  auto first = permits.Acquire(absl::ZeroDuration(), "decoding");
  auto second = permits.Acquire(absl::ZeroDuration(), "decoding");
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(permits.in_use(), 2);
  const absl::Time start = absl::Now();
  auto third = permits.Acquire(absl::Milliseconds(50), "decoding images");
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(50));
  ASSERT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(third.status().message(), HasSubstr("decoding images"));
  EXPECT_THAT(third.status().message(), HasSubstr("retry"));
}

TEST(WorkPermitsTest, APermitIsReturnedWhenItGoesOutOfScope) {
  WorkPermits permits(1);
  {
    auto held = permits.Acquire(absl::ZeroDuration(), "decoding");
    ASSERT_TRUE(held.ok());
    EXPECT_FALSE(permits.Acquire(absl::ZeroDuration(), "decoding").ok());
  }
  EXPECT_EQ(permits.in_use(), 0);
  EXPECT_TRUE(permits.Acquire(absl::ZeroDuration(), "decoding").ok());
  EXPECT_EQ(permits.in_use(), 0);
}

TEST(WorkPermitsTest, AWaiterGetsThePermitOnceItIsReleased) {
  WorkPermits permits(1);
  std::optional<absl::StatusOr<WorkPermits::Permit>> held(
      permits.Acquire(absl::ZeroDuration(), "decoding"));
  ASSERT_TRUE(held->ok());
  absl::Notification waiting;
  bool got = false;
  std::thread waiter([&] {
    waiting.Notify();
    got = permits.Acquire(absl::Seconds(30), "decoding").ok();
  });
  waiting.WaitForNotification();
  absl::SleepFor(absl::Milliseconds(20));
  held.reset();
  waiter.join();
  EXPECT_TRUE(got);
  EXPECT_EQ(permits.in_use(), 0);
}

}  // namespace
}  // namespace md::service
