#include "service/auth.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>

namespace md::service {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(ApiKeysTest, WithoutKeysEveryoneIsAnonymous) {
  ApiKeys keys;
  EXPECT_TRUE(keys.open());
  EXPECT_EQ(*keys.Authenticate(""), kAnonymousTenant);
  EXPECT_EQ(*keys.Authenticate("anything"), kAnonymousTenant);
}

TEST(ApiKeysTest, KeysMapToTenantsAndBearerIsAccepted) {
  auto keys =
      ApiKeys::FromText("# production keys\n\nk1 team-a\n  k2\tteam-b  \n");
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_FALSE(keys->open());
  EXPECT_EQ(*keys->Authenticate("k1"), "team-a");
  EXPECT_EQ(*keys->Authenticate("Bearer k2"), "team-b");
  EXPECT_EQ(*keys->Authenticate("  k1 "), "team-a");
  EXPECT_EQ(keys->Authenticate("k3").status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(std::string(keys->Authenticate("").status().message()),
              HasSubstr("x-moondream-auth"));
}

TEST(ApiKeysTest, TenantsAreTheFilesOnceEachOrAnonymous) {
  EXPECT_THAT(ApiKeys().Tenants(), ElementsAre(kAnonymousTenant));
  auto keys = ApiKeys::FromText("k1 team-b\nk2 team-a\nk3 team-b\n");
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_THAT(keys->Tenants(), ElementsAre("team-a", "team-b"));
}

TEST(ApiKeysTest, MalformedFilesAreRefusedWithTheLine) {
  auto three_fields = ApiKeys::FromText("k1 team-a\nk2 team b\n");
  EXPECT_EQ(three_fields.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(three_fields.status().message()),
              HasSubstr("line 2"));
  auto twice = ApiKeys::FromText("k1 a\nk1 b\n");
  EXPECT_THAT(std::string(twice.status().message()), HasSubstr("twice"));
  EXPECT_EQ(ApiKeys::FromFile("/no/such/keys").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(ApiKeysTest, ReadsAFile) {
  const std::string path = ::testing::TempDir() + "/keys.txt";
  std::ofstream(path) << "file-key tenant-x\n";
  auto keys = ApiKeys::FromFile(path);
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_EQ(*keys->Authenticate("file-key"), "tenant-x");
  std::remove(path.c_str());
}

}  // namespace
}  // namespace md::service
