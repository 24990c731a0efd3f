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
TEST(PrefixCacheTest, EvictionSkipsPinnedEntries) {
  PrefixCache cache(120);  // Three entries of 40 bytes.
  const uint64_t a = cache.Insert("a", Prefix(10, 1)).id;
  cache.Insert("b", Prefix(10, 2));
  cache.Insert("c", Prefix(10, 3));
  cache.Pin(a);  // "a" is least recent, but read by a sequence.
  EXPECT_EQ(cache.counters().pinned_entries, 1);
  cache.Insert("d", Prefix(10, 4));
  EXPECT_TRUE(cache.Contains("a"));
  EXPECT_FALSE(cache.Contains("b"));
  EXPECT_EQ(cache.counters().evictions, 1);
  cache.Unpin(a);
  EXPECT_EQ(cache.pins(a), 0);
  EXPECT_EQ(cache.counters().pinned_entries, 0);
  cache.Insert("e", Prefix(10, 5));  // Now "a" goes.
  EXPECT_FALSE(cache.Contains("a"));
  EXPECT_EQ(cache.counters().bytes, 120);
}

TEST(PrefixCacheTest, WhenOnlyPinnedEntriesAreLeftTheNewOneIsNotKept) {
  PrefixCache cache(80);
  const uint64_t a = cache.Insert("a", Prefix(10, 1)).id;
  const uint64_t b = cache.Insert("b", Prefix(10, 2)).id;
  cache.Pin(a);
  cache.Pin(b);
  cache.Pin(b);
  const CachedPrefix c = cache.Insert("c", Prefix(10, 3));
  EXPECT_TRUE(at::equal(c.prefix_L2HPD, Prefix(10, 3)));  // Handed out.
  EXPECT_FALSE(cache.Contains("c"));
  EXPECT_TRUE(cache.Contains("a"));
  EXPECT_TRUE(cache.Contains("b"));
  EXPECT_EQ(cache.counters().evictions, 0);
  EXPECT_EQ(cache.counters().pinned_entries, 2);
  cache.Unpin(a);
  cache.Unpin(b);  // One reader of "b" is left.
  EXPECT_EQ(cache.pins(b), 1);
  cache.Insert("c", Prefix(10, 3));
  EXPECT_TRUE(cache.Contains("c"));
  EXPECT_TRUE(cache.Contains("b"));
  EXPECT_FALSE(cache.Contains("a"));
  EXPECT_EQ(cache.counters().bytes, 80);
}

TEST(PrefixCacheTest, PinsOutliveTheirEntry) {
  PrefixCache cache(40);
  const uint64_t a = cache.Insert("a", Prefix(10, 1)).id;
  cache.Pin(a);
  cache.Insert("a", Prefix(10, 2));  // Replaces the pinned copy.
  EXPECT_EQ(cache.pins(a), 1);
  EXPECT_EQ(cache.counters().pinned_entries, 0);
  EXPECT_EQ(cache.counters().bytes, 40);
  cache.Unpin(a);
  cache.Unpin(a);  // An extra unpin is harmless.
  EXPECT_EQ(cache.pins(a), 0);
}

}  // namespace md::scheduler
