#include "model/skills/python_random.h"

#include <cstdint>
#include <vector>

#include "gtest/gtest.h"

namespace md {
namespace {

// Expected values are CPython's: random.seed(s); [random.random() ...].

TEST(PythonRandomTest, SeedZero) {
  PythonRandom rng(0);
  EXPECT_DOUBLE_EQ(rng.Random(), 0.8444218515250481);
  EXPECT_DOUBLE_EQ(rng.Random(), 0.7579544029403025);
  EXPECT_DOUBLE_EQ(rng.Random(), 0.420571580830845);
}

TEST(PythonRandomTest, Seed42) {
  PythonRandom rng(42);
  EXPECT_DOUBLE_EQ(rng.Random(), 0.6394267984578837);
  EXPECT_DOUBLE_EQ(rng.Random(), 0.025010755222666936);
  EXPECT_DOUBLE_EQ(rng.Random(), 0.27502931836911926);
}

TEST(PythonRandomTest, SeedWiderThan32Bits) {
  // 2**40 + 7 is two 32-bit key words: [7, 256].
  PythonRandom rng((uint64_t{1} << 40) + 7);
  EXPECT_DOUBLE_EQ(rng.Random(), 0.6137037779936511);
  EXPECT_DOUBLE_EQ(rng.Random(), 0.8149162973309487);
}

TEST(PythonRandomTest, AcrossStateRefills) {
  // Draw 312 takes words 624 and 625, the first two of the second refill.
  PythonRandom rng(2024);
  std::vector<double> draws;
  for (int i = 0; i < 1000; ++i) draws.push_back(rng.Random());
  EXPECT_DOUBLE_EQ(draws[311], 0.19114087615589292);
  EXPECT_DOUBLE_EQ(draws[312], 0.8131085867475014);
  EXPECT_DOUBLE_EQ(draws[999], 0.0864141516073853);
}

TEST(PythonRandomTest, LargestSeed) {
  PythonRandom rng(UINT64_MAX);  // 2**64 - 1
  EXPECT_DOUBLE_EQ(rng.Random(), 0.021825695401270107);
}

TEST(PythonRandomTest, Uniform) {
  PythonRandom rng(42);
  EXPECT_DOUBLE_EQ(rng.Uniform(0.2, 0.4), 0.3278853596915767);
}

TEST(PythonRandomTest, SameSeedSameSequence) {
  PythonRandom a(1234567), b(1234567);
  // Past the first 624-word state refill too.
  for (int i = 0; i < 1000; ++i) {
    const double x = a.Random();
    ASSERT_EQ(x, b.Random()) << "draw " << i;
    ASSERT_GE(x, 0.0);
    ASSERT_LT(x, 1.0);
  }
}

TEST(PythonRandomTest, DifferentSeedsDiffer) {
  PythonRandom a(1), b(2);
  std::vector<double> xa, xb;
  for (int i = 0; i < 4; ++i) {
    xa.push_back(a.Random());
    xb.push_back(b.Random());
  }
  EXPECT_NE(xa, xb);
}

}  // namespace
}  // namespace md
