// Reproduces every case of a golden set (tests/data/golden format) in fp32 on
// CPU: vision intermediates, the image prefix K/V, prefill and per-step
// logits, and the exact discrete outputs of every skill.
#include "tests/model/golden.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "model/net/moondream.h"
#include "model/skills/skills.h"

namespace md {
namespace {

using ::md::testing::Cases;
using ::md::testing::CaseTensor;
using ::md::testing::GoldenDir;
using ::md::testing::MaxAbsDiff;
using ::md::testing::Tolerance;
using Json = nlohmann::json;
using ::md::testing::GoldenModel;

const Json& ImageCase(const std::string& name) {
  for (const Json& image : Cases()["images"]) {
    if (image["name"] == name) return image;
  }
  ADD_FAILURE() << "no image " << name;
  static const Json empty;
  return empty;
}

ImageCrops CropsOf(const Json& image) {
  return {CaseTensor(image["tensors"]["crops"]),
          Tiling{image["tiling"][0].get<int>(), image["tiling"][1].get<int>()}};
}

// Encodings are shared by the cases of one image.
const EncodedImage& Encoded(const std::string& name) {
  static auto* cache = new std::map<std::string, EncodedImage>();
  auto it = cache->find(name);
  if (it == cache->end()) {
    auto encoded = EncodeImage(GoldenModel(), CropsOf(ImageCase(name)));
    EXPECT_TRUE(encoded.ok()) << encoded.status();
    it = cache->emplace(name, encoded.ok() ? *encoded : EncodedImage{}).first;
  }
  return it->second;
}

std::vector<int> Ids(const Json& array) {
  return array.get<std::vector<int>>();
}

std::string ExpectedStop(const std::string& golden) {
  return golden == "max_points" ? "max_objects" : golden;
}

void ExpectClose(const at::Tensor& actual, const std::string& tensor_name,
                 const std::string& tolerance_kind) {
  ASSERT_TRUE(actual.defined()) << tensor_name;
  const double diff = MaxAbsDiff(actual, CaseTensor(tensor_name));
  EXPECT_LE(diff, Tolerance(tolerance_kind)) << tensor_name;
}

// ---- Images ----

std::vector<std::string> ImageNames() {
  std::vector<std::string> names;
  for (const Json& image : Cases()["images"]) names.push_back(image["name"]);
  return names;
}

class GoldenImageTest : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenImageTest, VisionIntermediatesMatch) {
  const Json& image = ImageCase(GetParam());
  auto features = GoldenModel().EncodeImageDetailed(CropsOf(image));
  ASSERT_TRUE(features.ok()) << features.status();
  const Json& t = image["tensors"];
  ExpectClose(features->global_PE, t["global_features"], "global_features");
  ExpectClose(features->reconstructed_HWE, t["reconstructed"], "reconstructed");
  ExpectClose(features->pooled_GGE, t["pooled"], "pooled");
  ExpectClose(features->embedding_PC, t["img_emb"], "img_emb");
}

TEST_P(GoldenImageTest, PrefixKvMatches) {
  const Json& image = ImageCase(GetParam());
  const EncodedImage& encoded = Encoded(GetParam());
  ASSERT_TRUE(encoded.prefix_kv_L2HPD.defined());
  EXPECT_EQ(encoded.prefix_kv_L2HPD.size(3), image["pos"].get<int>());
  ExpectClose(encoded.prefix_kv_L2HPD, image["tensors"]["kv_cache"],
              "kv_cache");
}

TEST(GoldenBatchTest, EncodingImagesTogetherEqualsOneByOne) {
  std::vector<ImageCrops> all;
  for (const std::string& name : ImageNames())
    all.push_back(CropsOf(ImageCase(name)));
  auto together = EncodeImages(GoldenModel(), all);
  ASSERT_TRUE(together.ok()) << together.status();
  const std::vector<std::string> names = ImageNames();
  for (size_t i = 0; i < names.size(); ++i) {
    SCOPED_TRACE(names[i]);
    EXPECT_LE(MaxAbsDiff((*together)[i].prefix_kv_L2HPD,
                         Encoded(names[i]).prefix_kv_L2HPD),
              Tolerance("kv_cache"));
  }
}

INSTANTIATE_TEST_SUITE_P(Golden, GoldenImageTest,
                         ::testing::ValuesIn(ImageNames()),
                         [](const auto& info) { return info.param; });

// ---- Text cases ----

std::vector<std::string> TextCaseIds() {
  std::vector<std::string> ids;
  for (const Json& c : Cases()["text_cases"]) ids.push_back(c["id"]);
  return ids;
}

const Json& TextCase(const std::string& id) {
  for (const Json& c : Cases()["text_cases"]) {
    if (c["id"] == id) return c;
  }
  ADD_FAILURE() << "no case " << id;
  static const Json empty;
  return empty;
}

// Everything the heads produced, in step order.
struct Recorder {
  std::vector<StepOutput> steps;
  StepObserver observer() {
    return [this](size_t, const StepOutput& out) { steps.push_back(out); };
  }
};

class GoldenCaseTest : public ::testing::TestWithParam<std::string> {
 protected:
  const Json& c() const { return TextCase(GetParam()); }
  const EncodedImage& image() const { return Encoded(c()["image"]); }
  // A case's tensor name; some are absent in valid cases (an empty answer
  // has no per-step logits), so a missing one fails the test, never reads
  // past the JSON.
  bool has_tensor(const std::string& key) const {
    const Json& tensors = c()["tensors"];
    return tensors.is_object() && tensors.contains(key);
  }
  std::string tensor(const std::string& key) const {
    if (!has_tensor(key)) {
      ADD_FAILURE() << "case " << GetParam() << " has no tensor " << key;
      return "";
    }
    return c()["tensors"][key];
  }

  // Prefill logits, then the first object's x, y (and size) logits: x from
  // the prefill's hidden state, y after feeding x, size after feeding y.
  void ExpectRegionLogits(const Recorder& rec) const {
    ASSERT_FALSE(rec.steps.empty());
    ExpectClose(rec.steps[0].logits_V, tensor("prefill_logits"),
                "prefill_logits");
    const Json& tensors = c()["tensors"];
    if (tensors.contains("point0_x_logits")) {
      ASSERT_GE(rec.steps.size(), 2u);
      ExpectClose(rec.steps[0].coordinate_X, tensor("point0_x_logits"),
                  "region_logits");
      ExpectClose(rec.steps[1].coordinate_X, tensor("point0_y_logits"),
                  "region_logits");
    }
    if (tensors.contains("point0_size_logits")) {
      ASSERT_GE(rec.steps.size(), 3u);
      ExpectClose(rec.steps[2].size_2X, tensor("point0_size_logits"),
                  "region_logits");
    }
  }
};

TEST_P(GoldenCaseTest, Reproduces) {
  const Json& tc = c();
  const Json& expected = tc["expected"];
  const std::string task = tc["task"];
  const Model& model = GoldenModel();
  Recorder rec;

  if (task == "query" || task == "caption") {
    auto result = GenerateText(model, image(), Ids(tc["prompt_ids"]),
                               tc["settings"]["max_tokens"].get<int>(), {},
                               rec.observer());
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->tokens, Ids(expected["tokens"]));
    EXPECT_EQ(StopReasonName(result->stop),
              ExpectedStop(expected["stop_reason"]));
    ASSERT_FALSE(rec.steps.empty());
    ExpectClose(rec.steps[0].logits_V, tensor("prefill_logits"),
                "prefill_logits");
    if (!has_tensor("step_top5_values")) {
      // The first token was the end: nothing was fed after the prompt.
      EXPECT_TRUE(expected["tokens"].empty());
      EXPECT_EQ(rec.steps.size(), 1u);
      return;
    }
    // Step i feeds generated token i; we skip the feed after max_tokens.
    at::Tensor values = CaseTensor(tensor("step_top5_values"));
    at::Tensor indices = CaseTensor(tensor("step_top5_indices"));
    for (size_t i = 1; i < rec.steps.size(); ++i) {
      SCOPED_TRACE(::testing::Message() << "step " << i);
      auto [top_values, top_indices] = at::topk(rec.steps[i].logits_V, 5);
      EXPECT_LE(MaxAbsDiff(top_values, values[i - 1]),
                Tolerance("step_logits"));
      EXPECT_EQ(top_indices[0].item<int64_t>(),
                indices[i - 1][0].item<int64_t>());
    }
    const size_t fed = rec.steps.size() - 1;
    EXPECT_GE(fed + 1, static_cast<size_t>(values.size(0)))
        << "a step whose logits the reference recorded was not run";
  } else if (task == "detect" || task == "point") {
    std::vector<int> prompt = Ids(tc["prompt_ids"]);
    std::vector<std::vector<int>> bins;
    std::optional<int> first_token;
    StopReason stop;
    if (task == "detect") {
      auto result = Detect(model, image(), prompt, kMaxObjects, rec.observer());
      ASSERT_TRUE(result.ok()) << result.status();
      ASSERT_EQ(result->objects.size(), expected["objects"].size());
      for (size_t i = 0; i < result->objects.size(); ++i) {
        const Json& e = expected["objects"][i];
        EXPECT_EQ(result->objects[i].x_min, e["x_min"].get<double>());
        EXPECT_EQ(result->objects[i].y_min, e["y_min"].get<double>());
        EXPECT_EQ(result->objects[i].x_max, e["x_max"].get<double>());
        EXPECT_EQ(result->objects[i].y_max, e["y_max"].get<double>());
      }
      bins = result->bins;
      first_token = result->first_token;
      stop = result->stop;
    } else {
      auto result =
          PointAt(model, image(), prompt, kMaxObjects, rec.observer());
      ASSERT_TRUE(result.ok()) << result.status();
      ASSERT_EQ(result->points.size(), expected["points"].size());
      for (size_t i = 0; i < result->points.size(); ++i) {
        EXPECT_EQ(result->points[i].x,
                  expected["points"][i]["x"].get<double>());
        EXPECT_EQ(result->points[i].y,
                  expected["points"][i]["y"].get<double>());
      }
      bins = result->bins;
      first_token = result->first_token;
      stop = result->stop;
    }
    EXPECT_EQ(bins, expected["bins"].get<std::vector<std::vector<int>>>());
    EXPECT_EQ(first_token, expected["first_token"].get<int>());
    EXPECT_EQ(StopReasonName(stop), ExpectedStop(expected["stop_reason"]));
    ExpectRegionLogits(rec);
  } else if (task == "gaze") {
    const Json& gp = tc["gaze_prompt"];
    GazePromptIds ids{Ids(gp["before_ids"]), Ids(gp["after_ids"])};
    Point eye{gp["eye"][0].get<double>(), gp["eye"][1].get<double>()};
    auto result = DetectGaze(model, image(), ids, eye, false, rec.observer());
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->first_token, expected["first_token"].get<int>());
    if (expected["gaze"].is_null()) {
      EXPECT_FALSE(result->gaze.has_value());
    } else {
      ASSERT_TRUE(result->gaze.has_value());
      EXPECT_EQ(result->gaze->x, expected["gaze"]["x"].get<double>());
      EXPECT_EQ(result->gaze->y, expected["gaze"]["y"].get<double>());
      EXPECT_EQ(result->bins, expected["bins"][0].get<std::vector<int>>());
    }
    ExpectRegionLogits(rec);
  } else {
    FAIL() << "unknown task " << task;
  }
}

std::string TestName(const ::testing::TestParamInfo<std::string>& info) {
  std::string name = info.param;
  for (char& ch : name) {
    if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
  }
  return name;
}

INSTANTIATE_TEST_SUITE_P(Golden, GoldenCaseTest,
                         ::testing::ValuesIn(TextCaseIds()), TestName);

}  // namespace
}  // namespace md
