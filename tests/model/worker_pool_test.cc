// The worker pool our kernels share, and md::ParallelFor on it.
#include "model/net/kernels/worker_pool.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <set>
#include <thread>
#include <utility>
#include <vector>

namespace md {
namespace {

// How often each task ran.
struct Counts {
  std::vector<std::atomic<int>>* runs;
};

void CountTask(const void* context, int64_t task) {
  (*static_cast<const Counts*>(context)->runs)[task].fetch_add(1);
}

TEST(WorkerPoolTest, RunsEveryTaskOnce) {
  for (int threads : {1, 2, 3, 8}) {
    for (int64_t n : {1, 2, 7, 64, 1000}) {
      std::vector<std::atomic<int>> runs(n);
      const Counts counts{&runs};
      WorkerPool::Shared().Run(threads, n, &CountTask, &counts);
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_EQ(runs[i].load(), 1)
            << "task " << i << " of " << n << ", threads " << threads;
      }
    }
  }
}

TEST(WorkerPoolTest, ConcurrentCallersEachGetAllTheirTasks) {
  constexpr int64_t kTasks = 500;
  constexpr int kCalls = 50;
  auto caller = [] {
    for (int call = 0; call < kCalls; ++call) {
      std::vector<std::atomic<int>> runs(kTasks);
      const Counts counts{&runs};
      WorkerPool::Shared().Run(2, kTasks, &CountTask, &counts);
      for (int64_t i = 0; i < kTasks; ++i) {
        if (runs[i].load() != 1) return false;
      }
    }
    return true;
  };
  bool ok1 = false, ok2 = false;
  std::thread t1([&] { ok1 = caller(); });
  std::thread t2([&] { ok2 = caller(); });
  t1.join();
  t2.join();
  EXPECT_TRUE(ok1);
  EXPECT_TRUE(ok2);
}

TEST(ParallelForTest, CoversTheRangeOnceInChunksOfAtLeastTheGrain) {
  for (int threads : {1, 2, 4}) {
    for (int64_t n : {1, 5, 16, 100, 1001}) {
      for (int64_t grain : {1, 3, 64}) {
        std::mutex mu;
        std::vector<std::pair<int64_t, int64_t>> chunks;
        ParallelFor(n, grain, threads, [&](int64_t begin, int64_t end) {
          std::lock_guard<std::mutex> lock(mu);
          chunks.emplace_back(begin, end);
        });
        std::sort(chunks.begin(), chunks.end());
        SCOPED_TRACE(::testing::Message() << "n " << n << " grain " << grain
                                          << " threads " << threads);
        ASSERT_FALSE(chunks.empty());
        EXPECT_EQ(chunks.front().first, 0);
        EXPECT_EQ(chunks.back().second, n);
        for (size_t i = 0; i < chunks.size(); ++i) {
          EXPECT_LT(chunks[i].first, chunks[i].second);
          if (i + 1 < chunks.size()) {
            EXPECT_EQ(chunks[i].second, chunks[i + 1].first);
            EXPECT_GE(chunks[i].second - chunks[i].first, grain);
          }
        }
      }
    }
  }
  bool called = false;
  ParallelFor(0, 1, 2, [&](int64_t, int64_t) { called = true; });
  EXPECT_FALSE(called) << "an empty range runs nothing";
}

// The reason ParallelFor exists: at::parallel_for ran our kernels on one
// thread. Here every chunk waits until two threads have entered some chunk,
// which happens only if the chunks really run on two threads at once (a
// helper claims one while the caller waits in another).
TEST(ParallelForTest, RunsOnTwoThreadsAtOnce) {
  std::mutex mu;
  std::set<std::thread::id> entered;
  std::atomic<bool> met{false};
  ParallelFor(8, 1, 2, [&](int64_t, int64_t) {
    {
      std::lock_guard<std::mutex> lock(mu);
      entered.insert(std::this_thread::get_id());
      if (entered.size() >= 2) met = true;
    }
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!met && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::yield();
    }
  });
  EXPECT_TRUE(met) << "all chunks ran on one thread";
}

}  // namespace
}  // namespace md
