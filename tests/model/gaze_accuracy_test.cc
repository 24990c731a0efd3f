// detect_gaze with prioritize_accuracy: the 20 probes run as one batch must
// give what the reference's loop of single probes gives with the same random
// draws (Python's random.seed(seed) stream, image probes first, then the
// mirror image's), followed by the outlier filter and the mean.
#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

#include "model/skills/outliers.h"
#include "model/skills/python_random.h"
#include "model/skills/skills.h"
#include "tests/model/golden.h"

namespace md {
namespace {

using ::md::testing::Cases;
using ::md::testing::CaseTensor;
using ::md::testing::GoldenDir;

// The reference's loop, one probe at a time.
std::optional<Point> GazeOneProbeAtATime(const Model& model,
                                         const EncodedImage& image,
                                         const EncodedImage& flipped,
                                         const GazePromptIds& ids, FaceBox face,
                                         uint64_t seed) {
  PythonRandom random(seed);
  std::vector<PointXY> detections;
  for (int side = 0; side < 2; ++side) {
    for (int i = 0; i < 10; ++i) {
      const double u = random.Uniform(face.x_min, face.x_max);
      const double y = random.Uniform(face.y_min, face.y_max);
      auto r = side == 0 ? DetectGaze(model, image, ids, {u, y})
                         : DetectGaze(model, flipped, ids, {1 - u, y});
      EXPECT_TRUE(r.ok()) << r.status();
      if (!r.ok() || !r->gaze) continue;
      detections.push_back(
          {side == 0 ? r->gaze->x : 1 - r->gaze->x, r->gaze->y});
    }
  }
  if (detections.size() < 10) return std::nullopt;
  std::vector<PointXY> kept = RemoveOutlierPoints(detections);
  double sx = 0, sy = 0;
  for (const PointXY& p : kept) {
    sx += p.x;
    sy += p.y;
  }
  return Point{sx / kept.size(), sy / kept.size()};
}

TEST(GazeAccuracyTest, BatchedProbesEqualOneAtATime) {
  SetComputeThreads(2);
  auto model = Model::Load(GoldenDir(), Moondream2Config(), ModelOptions{});
  ASSERT_TRUE(model.ok()) << model.status();
  // Two different golden images stand in for an image and its mirror: the
  // aggregation only needs two prefixes.
  std::vector<ImageCrops> crops;
  for (const auto& image : Cases()["images"]) {
    if (image["tiling"][0] != 1 || image["tiling"][1] != 1) continue;
    crops.push_back({CaseTensor(image["tensors"]["crops"]), Tiling{1, 1}});
    if (crops.size() == 2) break;
  }
  ASSERT_EQ(crops.size(), 2u);
  auto encoded = EncodeImages(**model, crops);
  ASSERT_TRUE(encoded.ok()) << encoded.status();
  const auto& gp = Cases()["text_cases"];
  GazePromptIds ids;
  for (const auto& c : gp) {
    if (c["task"] == "gaze") {
      ids = {c["gaze_prompt"]["before_ids"].get<std::vector<int>>(),
             c["gaze_prompt"]["after_ids"].get<std::vector<int>>()};
      break;
    }
  }
  ASSERT_FALSE(ids.before.empty());
  const FaceBox face{0.3, 0.2, 0.6, 0.5};
  int n_with_gaze = 0;
  for (uint64_t seed : {0u, 7u, 12345u}) {
    SCOPED_TRACE(seed);
    auto batched = DetectGazeAccurate(**model, (*encoded)[0], (*encoded)[1],
                                      ids, face, seed);
    ASSERT_TRUE(batched.ok()) << batched.status();
    std::optional<Point> single = GazeOneProbeAtATime(
        **model, (*encoded)[0], (*encoded)[1], ids, face, seed);
    ASSERT_EQ(batched->has_value(), single.has_value());
    if (single) {
      ++n_with_gaze;
      EXPECT_DOUBLE_EQ((*batched)->x, single->x);
      EXPECT_DOUBLE_EQ((*batched)->y, single->y);
    }
    // Same seed, same answer.
    auto again = DetectGazeAccurate(**model, (*encoded)[0], (*encoded)[1], ids,
                                    face, seed);
    ASSERT_TRUE(again.ok());
    ASSERT_EQ(again->has_value(), batched->has_value());
    if (*again) {
      EXPECT_EQ((*again)->x, (*batched)->x);
    }
  }
  EXPECT_GT(n_with_gaze, 0)
      << "no seed produced a gaze: the test compares nothing";
}

TEST(GazeAccuracyTest, InvertedFaceBoxIsRefused) {
  auto model = Model::Load(GoldenDir(), Moondream2Config(), ModelOptions{});
  ASSERT_TRUE(model.ok()) << model.status();
  EncodedImage none;
  auto r = DetectGazeAccurate(**model, none, none, {{1}, {2}},
                              FaceBox{0.6, 0.2, 0.3, 0.5}, 0);
  EXPECT_FALSE(r.ok());
}

}  // namespace
}  // namespace md
