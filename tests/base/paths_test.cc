#include "base/paths.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <iterator>
#include <optional>
#include <string>

namespace md {
namespace {

namespace fs = std::filesystem;

// Sets HOME for one test and puts the old value back.
class ScopedHome {
 public:
  explicit ScopedHome(const char* home) {
    if (const char* old = std::getenv("HOME")) old_ = old;
    if (home == nullptr) {
      unsetenv("HOME");
    } else {
      setenv("HOME", home, /*overwrite=*/1);
    }
  }
  ~ScopedHome() {
    if (old_) {
      setenv("HOME", old_->c_str(), 1);
    } else {
      unsetenv("HOME");
    }
  }

 private:
  std::optional<std::string> old_;
};

TEST(ExpandUserTest, LeadingTildeBecomesHome) {
  ScopedHome home("/home/ada");
  EXPECT_EQ(ExpandUser("~"), "/home/ada");
  EXPECT_EQ(ExpandUser("~/"), "/home/ada/");
  EXPECT_EQ(ExpandUser("~/models/moondream2"), "/home/ada/models/moondream2");
}

TEST(ExpandUserTest, TrailingSlashOfHomeIsNotDoubled) {
  {
    ScopedHome home("/home/ada/");
    EXPECT_EQ(ExpandUser("~/m"), "/home/ada/m");
  }
  ScopedHome root("/");
  EXPECT_EQ(ExpandUser("~/m"), "/m");
  EXPECT_EQ(ExpandUser("~"), "/");
}

TEST(ExpandUserTest, EverythingElseIsUnchanged) {
  ScopedHome home("/home/ada");
  for (const char* path : {"", "models/tiny-random", "/abs/~/x", "a~/b",
                           "~ada/models", "~~", "./~", "~models"}) {
    EXPECT_EQ(ExpandUser(path), path);
  }
}

TEST(ExpandUserTest, UnsetHomeFallsBackToThePasswordDatabase) {
  ScopedHome home(nullptr);
  const std::string expanded = ExpandUser("~/m");
  // Whatever the user's home is, it is absolute, or there is none and the
  // path stays as it was.
  EXPECT_TRUE(expanded == "~/m" ||
              (expanded.front() == '/' && expanded.ends_with("/m")))
      << expanded;
}

// A scratch directory tree, removed at the end.
class ProjectTreeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = ::testing::TempDir() + "/paths_test_XXXXXX";
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    root_ = fs::canonical(pattern);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }
  // Creates the directory; returns its absolute path as a string, the way
  // FindInProjectTree answers.
  std::string Make(const fs::path& relative) {
    fs::create_directories(root_ / relative);
    return (root_ / relative).string();
  }

  fs::path root_;
};

TEST_F(ProjectTreeTest, FindsTheModelFromTheBuildTree) {
  const std::string model = Make("repo/models/tiny-random");
  const std::string server_dir = Make("repo/build/service");
  const std::string test_dir = Make("repo/build/tests/base");
  EXPECT_EQ(FindInProjectTree("models/tiny-random", server_dir), model);
  EXPECT_EQ(FindInProjectTree("models/tiny-random", test_dir), model);
  // The binary's own directory counts too.
  EXPECT_EQ(FindInProjectTree("models/tiny-random", root_ / "repo"), model);
}

TEST_F(ProjectTreeTest, LooksAtMostThreeLevelsUp) {
  Make("repo/models/tiny-random");
  const std::string deep = Make("repo/a/b/c/d");
  EXPECT_EQ(FindInProjectTree("models/tiny-random", deep), "");
}

TEST_F(ProjectTreeTest, NearestAncestorWins) {
  Make("repo/models/tiny-random");
  const std::string inner = Make("repo/build/models/tiny-random");
  EXPECT_EQ(FindInProjectTree("models/tiny-random", root_ / "repo/build/tools"),
            inner);
}

TEST_F(ProjectTreeTest, FindsTheModelUnderAnInstallPrefix) {
  const std::string model =
      Make("prefix/share/moondream-serve/models/tiny-random");
  const std::string bin = Make("prefix/bin");
  EXPECT_EQ(FindInProjectTree("models/tiny-random", bin), model);
}

TEST_F(ProjectTreeTest, NothingFoundIsEmpty) {
  const std::string bin = Make("prefix/bin");
  EXPECT_EQ(FindInProjectTree("models/tiny-random", bin), "");
  EXPECT_EQ(FindInProjectTree("models/tiny-random", fs::path()), "");
  EXPECT_EQ(FindInProjectTree("", bin), "");
}

TEST(ResolveDefaultModelDirTest, FallsBackToTheWorkingDirectory) {
  EXPECT_EQ(ResolveDefaultModelDir("no/such/model/dir"), "no/such/model/dir");
}

// This binary is built in the project tree (build/tests/base/paths_test), so
// the shipped test model is found from it, whatever the working directory.
TEST(ResolveDefaultModelDirTest, FindsTheShippedModelNextToThisBinary) {
  const fs::path source = fs::canonical(MD_SOURCE_DIR);
  const fs::path exe_dir = ExecutableDir();
  ASSERT_FALSE(exe_dir.empty());
  const fs::path rel = exe_dir.lexically_relative(source);
  if (rel.empty() || rel.string().starts_with("..") ||
      std::distance(rel.begin(), rel.end()) > 3) {
    GTEST_SKIP() << "built outside the source tree: " << exe_dir;
  }
  EXPECT_EQ(ResolveDefaultModelDir("models/tiny-random"),
            (source / "models/tiny-random").string());
}

TEST(ResolveModelFlagTest, DefaultIsResolvedOtherValuesExpanded) {
  ScopedHome home("/home/ada");
  EXPECT_EQ(ResolveModelFlag("~/models/moondream2", "models/tiny-random"),
            "/home/ada/models/moondream2");
  EXPECT_EQ(ResolveModelFlag("/srv/m", "models/tiny-random"), "/srv/m");
  EXPECT_EQ(ResolveModelFlag("no/such/default", "no/such/default"),
            "no/such/default");
}

}  // namespace
}  // namespace md
