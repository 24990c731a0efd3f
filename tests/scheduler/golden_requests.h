// Engine requests built from the golden cases (tests/data/golden), with what
// the reference produced for each, for the engine tests.
#ifndef MOONDREAM_TESTS_SCHEDULER_GOLDEN_REQUESTS_H_
#define MOONDREAM_TESTS_SCHEDULER_GOLDEN_REQUESTS_H_

#include <algorithm>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "model/image/image_decode.h"
#include "model/net/moondream.h"
#include "model/skills/jobs.h"
#include "scheduler/engine.h"
#include "scheduler/request.h"
#include "tests/model/golden.h"

namespace md::scheduler::testing {

using Json = nlohmann::json;
using ::md::testing::Cases;
using ::md::testing::CaseTensor;
using ::md::testing::GoldenDir;
using ::md::testing::GoldenModel;

inline const Json& GoldenImage(const std::string& name) {
  for (const Json& image : Cases()["images"]) {
    if (image["name"] == name) return image;
  }
  ADD_FAILURE() << "no image " << name;
  static const Json empty;
  return empty;
}

// The set's image names, fewest crops first (then by name): tests pick
// images by property, so they run on any golden set of this format.
inline std::vector<std::string> GoldenImagesBySize() {
  std::vector<std::pair<int, std::string>> sized;
  for (const Json& image : Cases()["images"]) {
    const int crops =
        1 + image["tiling"][0].get<int>() * image["tiling"][1].get<int>();
    sized.emplace_back(crops, image["name"].get<std::string>());
  }
  std::sort(sized.begin(), sized.end());
  std::vector<std::string> names;
  for (auto& [crops, name] : sized) names.push_back(name);
  return names;
}

// An image of the set other than `name` (the smallest such).
inline std::string GoldenImageOtherThan(const std::string& name) {
  for (const std::string& other : GoldenImagesBySize()) {
    if (other != name) return other;
  }
  ADD_FAILURE() << "the golden set has a single image";
  return name;
}

// The golden crops (what the reference encoded), keyed by the image name.
// With `with_mirror`, the PNG is decoded and prepared with its mirror image.
inline std::shared_ptr<const EngineImage> GoldenEngineImage(
    const std::string& name, bool with_mirror = false) {
  static auto* cache = new std::map<std::pair<std::string, bool>,
                                    std::shared_ptr<const EngineImage>>();
  auto it = cache->find({name, with_mirror});
  if (it != cache->end()) return it->second;
  const Json& image = GoldenImage(name);
  std::shared_ptr<const EngineImage> prepared;
  if (with_mirror) {
    std::ifstream in(GoldenDir() + "/" + image["file"].get<std::string>(),
                     std::ios::binary);
    std::stringstream bytes;
    bytes << in.rdbuf();
    auto rgb = DecodeImage(bytes.str());
    EXPECT_TRUE(rgb.ok()) << rgb.status();
    auto made = PrepareEngineImage(*rgb, GoldenModel().config().vision,
                                   "golden", /*with_mirror=*/true);
    EXPECT_TRUE(made.ok()) << made.status();
    prepared = *made;
  } else {
    auto made = std::make_shared<EngineImage>();
    made->key = "golden:" + name;
    made->crops = {
        CaseTensor(image["tensors"]["crops"]),
        Tiling{image["tiling"][0].get<int>(), image["tiling"][1].get<int>()}};
    prepared = made;
  }
  cache->emplace(std::make_pair(name, with_mirror), prepared);
  return prepared;
}

// The gaze strings of the golden vocabulary (the same in every gaze case).
inline GazePromptIds GoldenGazeIds() {
  for (const Json& c : Cases()["text_cases"]) {
    if (c["task"] == "gaze") {
      return {c["gaze_prompt"]["before_ids"].get<std::vector<int>>(),
              c["gaze_prompt"]["after_ids"].get<std::vector<int>>()};
    }
  }
  ADD_FAILURE() << "no gaze case";
  return {};
}

// A request for golden case `c` (its sink left to the caller); `tweak`
// changes a text case's options (sampling, ignore_eos, max_tokens).
inline Request GoldenRequest(
    const Json& c, const std::function<void(TextOptions&)>& tweak = {}) {
  Request r;
  r.image = GoldenEngineImage(c["image"]);
  const MoondreamConfig& config = GoldenModel().config();
  const std::optional<Skill> skill =
      SkillFromName(c["task"].get<std::string>());
  EXPECT_TRUE(skill.has_value()) << c["task"];
  absl::StatusOr<std::unique_ptr<SkillJob>> job;
  if (skill == Skill::kGaze) {
    GazeOptions gaze;
    gaze.eye = {c["gaze_prompt"]["eye"][0].get<double>(),
                c["gaze_prompt"]["eye"][1].get<double>()};
    job = MakeGazeJob(config, gaze, GoldenGazeIds());
  } else if (skill == Skill::kDetect || skill == Skill::kPoint) {
    job =
        MakeRegionJob(config, *skill, c["prompt_ids"].get<std::vector<int>>());
  } else {
    TextOptions options;
    if (c.contains("settings") && c["settings"].is_object() &&
        c["settings"].contains("max_tokens")) {
      options.max_tokens = c["settings"]["max_tokens"].get<int>();
    }
    if (tweak) tweak(options);
    job =
        MakeTextJob(config, skill.value_or(Skill::kQuery),
                    c["prompt_ids"].get<std::vector<int>>(), options, nullptr);
  }
  EXPECT_TRUE(job.ok()) << job.status();
  if (job.ok()) r.job = *std::move(job);
  return r;
}

// Checks a finished request against the reference's answer for case `c`.
inline void ExpectMatchesGolden(const Json& c,
                                const CollectingSink::Result& got) {
  SCOPED_TRACE(c["id"].get<std::string>());
  ASSERT_TRUE(got.done);
  ASSERT_TRUE(got.status.ok()) << got.status;
  const Json& e = c["expected"];
  const std::string task = c["task"];
  std::string stop = e["stop_reason"];
  if (stop == "max_points") stop = "max_objects";
  if (task == "caption" || task == "query") {
    EXPECT_EQ(got.tokens, e["tokens"].get<std::vector<int>>());
    EXPECT_EQ(StopReasonName(got.summary.stop), stop);
  } else if (task == "detect") {
    ASSERT_EQ(got.boxes.size(), e["objects"].size());
    for (size_t i = 0; i < got.boxes.size(); ++i) {
      EXPECT_EQ(got.boxes[i].x_min, e["objects"][i]["x_min"].get<double>());
      EXPECT_EQ(got.boxes[i].y_min, e["objects"][i]["y_min"].get<double>());
      EXPECT_EQ(got.boxes[i].x_max, e["objects"][i]["x_max"].get<double>());
      EXPECT_EQ(got.boxes[i].y_max, e["objects"][i]["y_max"].get<double>());
    }
    EXPECT_EQ(StopReasonName(got.summary.stop), stop);
  } else if (task == "point") {
    ASSERT_EQ(got.points.size(), e["points"].size());
    for (size_t i = 0; i < got.points.size(); ++i) {
      EXPECT_EQ(got.points[i].x, e["points"][i]["x"].get<double>());
      EXPECT_EQ(got.points[i].y, e["points"][i]["y"].get<double>());
    }
    EXPECT_EQ(StopReasonName(got.summary.stop), stop);
  } else {
    ASSERT_TRUE(got.gaze_reported);
    if (e["gaze"].is_null()) {
      EXPECT_FALSE(got.gaze.has_value());
    } else {
      ASSERT_TRUE(got.gaze.has_value());
      EXPECT_EQ(got.gaze->x, e["gaze"]["x"].get<double>());
      EXPECT_EQ(got.gaze->y, e["gaze"]["y"].get<double>());
    }
  }
}

}  // namespace md::scheduler::testing

#endif  // MOONDREAM_TESTS_SCHEDULER_GOLDEN_REQUESTS_H_
