// The handle store: handles belong to their tenant, and the store is bounded
// by bytes as well as by count (issue 13 #3 and #5).
#include "service/handles.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>

namespace md::service {
namespace {

// An image whose crops take `crop_bytes` bytes.
std::shared_ptr<StoredImage> Image(const std::string& key,
                                   const std::string& tenant,
                                   int64_t crop_bytes) {
  auto prepared = std::make_shared<scheduler::EngineImage>();
  prepared->key = key;
  prepared->crops.crops_u8 = at::zeros({crop_bytes}, at::kByte);
  auto stored = std::make_shared<StoredImage>();
  stored->tenant = tenant;
  stored->prepared = prepared;
  return stored;
}

TEST(HandleStoreTest, AnotherTenantsHandleReadsAsUnknown) {
  HandleStore store(10, 1 << 20);
  auto put = store.Put(Image("k1", "alpha", 100));
  ASSERT_TRUE(put.ok());
  EXPECT_TRUE(store.Get(*put, "alpha").ok());
  auto stolen = store.Get(*put, "beta");
  EXPECT_EQ(stolen.status().code(), absl::StatusCode::kNotFound);
  auto unknown = store.Get("nope", "beta");
  // The same answer as an unknown handle: nothing to learn from it.
  EXPECT_EQ(unknown.status().code(), stolen.status().code());
}

TEST(HandleStoreTest, BytesBoundTheStoreLeastRecentlyUsedFirst) {
  const int64_t each = 1000 + 5;  // Crops plus the tenant's name.
  HandleStore store(100, 3 * each);
  for (const char* key : {"a", "b", "c"}) {
    ASSERT_TRUE(store.Put(Image(key, "t1111", 1000)).ok());
  }
  EXPECT_EQ(store.entries(), 3);
  EXPECT_EQ(store.bytes(), 3 * each);
  ASSERT_TRUE(store.Get("a", "t1111").ok());  // "b" is now the oldest.
  ASSERT_TRUE(store.Put(Image("d", "t1111", 1000)).ok());
  EXPECT_EQ(store.entries(), 3);
  EXPECT_LE(store.bytes(), 3 * each);
  EXPECT_FALSE(store.Get("b", "t1111").ok());
  EXPECT_TRUE(store.Get("a", "t1111").ok());
  EXPECT_TRUE(store.Get("d", "t1111").ok());
}

TEST(HandleStoreTest, AnImageLargerThanTheStoreIsRefused) {
  HandleStore store(10, 500);
  auto put = store.Put(Image("big", "t", 1000));
  EXPECT_EQ(put.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(store.entries(), 0);
  EXPECT_EQ(store.bytes(), 0);
}

TEST(HandleStoreTest, CountStillBoundsTheStore) {
  HandleStore store(2, 1 << 20);
  for (const char* key : {"a", "b", "c"}) {
    ASSERT_TRUE(store.Put(Image(key, "t", 10)).ok());
  }
  EXPECT_EQ(store.entries(), 2);
  EXPECT_FALSE(store.Get("a", "t").ok());
}

}  // namespace
}  // namespace md::service
