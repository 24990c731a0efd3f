#include "scheduler/prefix_cache.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

namespace md::scheduler {
namespace {

// A stand-in prefix of `n` floats (4n bytes), filled with `value`.
at::Tensor Prefix(int64_t n, float value) {
  return at::full({n}, value, at::kFloat);
}

TEST(PrefixCacheTest, MissThenHitReturnsTheSameValues) {
  PrefixCache cache(1000);
  EXPECT_FALSE(cache.Lookup("a").has_value());
  cache.Insert("a", Prefix(10, 1.5f));
  std::optional<CachedPrefix> hit = cache.Lookup("a");
  ASSERT_TRUE(hit.has_value());
  EXPECT_TRUE(at::equal(hit->prefix_L2HPD, Prefix(10, 1.5f)));
  EXPECT_EQ(cache.counters().hits, 1);
  EXPECT_EQ(cache.counters().misses, 1);
  EXPECT_EQ(cache.counters().bytes, 40);
  EXPECT_EQ(cache.counters().entries, 1);
}

TEST(PrefixCacheTest, EvictsLeastRecentlyUsedFirst) {
  PrefixCache cache(120);  // Three entries of 40 bytes.
  cache.Insert("a", Prefix(10, 1));
  cache.Insert("b", Prefix(10, 2));
  cache.Insert("c", Prefix(10, 3));
  ASSERT_TRUE(cache.Lookup("a").has_value());  // "b" is now least recent.
  cache.Insert("d", Prefix(10, 4));
  EXPECT_FALSE(cache.Contains("b"));
  EXPECT_TRUE(cache.Contains("a"));
  EXPECT_TRUE(cache.Contains("c"));
  EXPECT_TRUE(cache.Contains("d"));
  EXPECT_EQ(cache.counters().evictions, 1);
  EXPECT_EQ(cache.counters().bytes, 120);

  cache.Insert("big", Prefix(15, 5));  // 60 bytes: evicts c, then a.
  EXPECT_FALSE(cache.Contains("c"));
  EXPECT_FALSE(cache.Contains("a"));
  EXPECT_TRUE(cache.Contains("d"));
  EXPECT_TRUE(cache.Contains("big"));
  EXPECT_EQ(cache.counters().evictions, 3);
  EXPECT_LE(cache.counters().bytes, cache.byte_budget());
}

TEST(PrefixCacheTest, EntryLargerThanTheBudgetIsNotKeptAndEvictsNothing) {
  PrefixCache cache(100);
  cache.Insert("a", Prefix(10, 1));
  cache.Insert("huge", Prefix(1000, 2));
  EXPECT_FALSE(cache.Contains("huge"));
  EXPECT_TRUE(cache.Contains("a"));
  EXPECT_EQ(cache.counters().evictions, 0);
}

TEST(PrefixCacheTest, ReinsertingAKeyReplacesItsBytes) {
  PrefixCache cache(100);
  cache.Insert("a", Prefix(10, 1));
  cache.Insert("a", Prefix(20, 2));
  EXPECT_EQ(cache.counters().entries, 1);
  EXPECT_EQ(cache.counters().bytes, 80);
  EXPECT_TRUE(at::equal(cache.Lookup("a")->prefix_L2HPD, Prefix(20, 2)));
}

TEST(PrefixCacheTest, EveryInsertIsANewCopyId) {
  PrefixCache cache(1000);
  const uint64_t first = cache.Insert("a", Prefix(10, 1)).id;
  EXPECT_EQ(cache.Lookup("a")->id, first);
  EXPECT_EQ(cache.Lookup("a")->id, first);
  const uint64_t second = cache.Insert("a", Prefix(10, 1)).id;
  EXPECT_NE(second, first);
  EXPECT_EQ(cache.Lookup("a")->id, second);
  PrefixCache none(0);
  EXPECT_NE(none.Insert("b", Prefix(10, 1)).id,
            none.Insert("b", Prefix(10, 1)).id);
}

TEST(PrefixCacheTest, ZeroBudgetKeepsNothing) {
  PrefixCache cache(0);
  cache.Insert("a", Prefix(1, 1));
  EXPECT_FALSE(cache.Lookup("a").has_value());
  EXPECT_EQ(cache.counters().bytes, 0);
}

}  // namespace
}  // namespace md::scheduler
