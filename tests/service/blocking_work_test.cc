// BlockingWork: tasks run in the order posted, a blocked task does not stop
// the others on a second thread, and destruction runs what was posted.
#include "service/blocking_work.h"

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"

namespace md::service {
namespace {

TEST(BlockingWorkTest, OneThreadRunsTasksInOrder) {
  absl::Mutex mu;
  std::vector<int> order;
  {
    BlockingWork work(1);
    for (int i = 0; i < 20; ++i) {
      work.Post([&mu, &order, i] {
        absl::MutexLock lock(&mu);
        order.push_back(i);
      });
    }
  }
  absl::MutexLock lock(&mu);
  ASSERT_EQ(order.size(), 20u);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(order[i], i);
}

TEST(BlockingWorkTest, ABlockedTaskDoesNotStopTheNextOnAnotherThread) {
  absl::Notification release;
  absl::Notification second_ran;
  BlockingWork work(2);
  work.Post([&release] { release.WaitForNotification(); });
  work.Post([&second_ran] { second_ran.Notify(); });
  EXPECT_TRUE(second_ran.WaitForNotificationWithTimeout(absl::Seconds(10)));
  release.Notify();
}

TEST(BlockingWorkTest, DestructionRunsEveryPostedTask) {
  std::atomic<int> ran{0};
  auto owned = std::make_unique<int>(7);  // Tasks may own move-only state.
  {
    BlockingWork work(2);
    work.Post([&ran, owned = std::move(owned)] { ran += *owned; });
    for (int i = 0; i < 100; ++i) work.Post([&ran] { ++ran; });
  }
  EXPECT_EQ(ran.load(), 107);
}

}  // namespace
}  // namespace md::service
