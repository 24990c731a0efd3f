// Access to a golden set (the format of tests/data/golden, described in its
// README.md and cases.json): the directory comes from MD_GOLDEN_DIR when set,
// else the project's own set in tests/data/golden.
#ifndef MOONDREAM_TESTS_MODEL_GOLDEN_H_
#define MOONDREAM_TESTS_MODEL_GOLDEN_H_

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "model/config/config.h"
#include "model/io/safetensors.h"
#include "model/io/tensor_io.h"
#include "model/net/moondream.h"

namespace md::testing {

inline std::string GoldenDir() {
  if (const char* dir = std::getenv("MD_GOLDEN_DIR"); dir != nullptr && *dir) {
    return dir;
  }
  return std::string(MD_SOURCE_DIR) + "/tests/data/golden";
}

inline nlohmann::json ReadJsonFile(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  std::stringstream buffer;
  buffer << in.rdbuf();
  return nlohmann::json::parse(buffer.str());
}

inline const nlohmann::json& Cases() {
  static const nlohmann::json* cases =
      new nlohmann::json(ReadJsonFile(GoldenDir() + "/cases.json"));
  return *cases;
}

inline const SafetensorsFile& CaseTensors() {
  static const SafetensorsFile* file = [] {
    auto opened = SafetensorsFile::Open(GoldenDir() + "/cases.safetensors");
    EXPECT_TRUE(opened.ok()) << opened.status();
    return opened.ok() ? opened->release() : nullptr;
  }();
  return *file;
}

// A tensor from cases.safetensors, in its stored dtype.
inline at::Tensor CaseTensor(const std::string& name) {
  auto view = CaseTensors().Get(name);
  EXPECT_TRUE(view.ok()) << view.status();
  if (!view.ok()) return {};
  auto tensor = ToTensor(*view);
  EXPECT_TRUE(tensor.ok()) << tensor.status();
  return tensor.ok() ? *tensor : at::Tensor();
}

// The golden model in float32 on 2 compute threads, loaded once.
inline const Model& GoldenModel() {
  static const Model* model = [] {
    SetComputeThreads(2);
    auto loaded = Model::Load(GoldenDir(), Moondream2Config(), ModelOptions{});
    EXPECT_TRUE(loaded.ok()) << loaded.status();
    return loaded.ok() ? loaded->release() : nullptr;
  }();
  return *model;
}

inline double Tolerance(const std::string& kind) {
  return Cases()["tolerances"][kind]["atol"].get<double>();
}

// Largest |actual − expected| (both moved to CPU float32).
inline double MaxAbsDiff(const at::Tensor& actual, const at::Tensor& expected) {
  at::Tensor a = actual.to(at::kCPU, at::kFloat);
  at::Tensor e = expected.to(at::kCPU, at::kFloat);
  EXPECT_EQ(a.sizes(), e.sizes());
  if (a.sizes() != e.sizes()) return INFINITY;
  return (a - e).abs().max().item<double>();
}

}  // namespace md::testing

#endif  // MOONDREAM_TESTS_MODEL_GOLDEN_H_
