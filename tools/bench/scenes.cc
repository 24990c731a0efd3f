// `moondream-bench scenes`: writes a set of synthetic scenes and their truth.
#include "tools/bench/scenes.h"

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <string>
#include <system_error>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/paths.h"
#include "base/status_macros.h"
#include "tools/bench/flags.h"
#include "tools/scenes/questions.h"
#include "tools/scenes/random.h"
#include "tools/scenes/scene.h"

namespace md::bench {
namespace {

constexpr char kTruthFile[] = "truth.json";

struct ScenesOptions {
  int count = 16;
  int seed = 0;
  std::string out_dir;
  bool questions = false;
};

absl::StatusOr<ScenesOptions> ParseOptions(const std::vector<std::string>& args,
                                           bool* help) {
  ScenesOptions opts;
  FlagParser flags(
      "scenes",
      "Writes synthetic scenes (1-4 circles, squares and triangles in red,\n"
      "green, blue and yellow; tools/scenes/scene.h) as PNGs, with their\n"
      "truth in DIR/truth.json. The same seed gives the same scenes on every\n"
      "platform; scene i is the one scenes-eval asks about as its scene i.");
  flags.AddInt("count", &opts.count, "how many scenes");
  flags.AddInt("seed", &opts.seed, "the set's seed (>= 0)");
  flags.AddString("out", &opts.out_dir, "directory to write (created)");
  flags.AddBool("questions", &opts.questions,
                "also write each scene's questions and expected answers");
  RETURN_IF_ERROR(flags.Parse(args));
  *help = flags.help_requested();
  if (*help) {
    std::printf("%s", flags.Usage().c_str());
    return opts;
  }
  if (opts.out_dir.empty()) {
    return absl::InvalidArgumentError("--out=DIR is required");
  }
  if (opts.count < 1 || opts.seed < 0) {
    return absl::InvalidArgumentError("--count must be >= 1 and --seed >= 0");
  }
  opts.out_dir = ExpandUser(opts.out_dir);
  return opts;
}

nlohmann::ordered_json TasksJson(const scenes::Scene& scene) {
  nlohmann::ordered_json tasks = nlohmann::ordered_json::array();
  for (const scenes::SceneTask& task : scenes::SceneTasks(scene)) {
    nlohmann::ordered_json entry = {
        {"kind", std::string(scenes::TaskKindName(task.kind))}};
    if (!task.input.empty()) entry["input"] = task.input;
    if (task.kind == scenes::TaskKind::kDetect ||
        task.kind == scenes::TaskKind::kPoint) {
      entry["shapes"] = task.targets;  // indices into "shapes"
    } else {
      entry["answer"] = task.answer;
    }
    tasks.push_back(std::move(entry));
  }
  return tasks;
}

absl::Status WritePng(const cv::Mat& image, const std::string& path) {
  try {
    if (cv::imwrite(path, image)) return absl::OkStatus();
  } catch (const cv::Exception& e) {
    return absl::InternalError(absl::StrCat("writing ", path, ": ", e.what()));
  }
  return absl::InternalError(absl::StrCat("could not write ", path));
}

absl::Status WriteJson(const nlohmann::ordered_json& json,
                       const std::string& path) {
  std::ofstream out(path);
  out << json.dump(1) << "\n";
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("could not write ", path));
  return absl::OkStatus();
}

}  // namespace

absl::Status RunScenes(const std::vector<std::string>& args) {
  bool help = false;
  ASSIGN_OR_RETURN(ScenesOptions opts, ParseOptions(args, &help));
  if (help) return absl::OkStatus();
  std::error_code error;
  std::filesystem::create_directories(opts.out_dir, error);
  if (error) {
    return absl::InternalError(
        absl::StrCat("creating ", opts.out_dir, ": ", error.message()));
  }
  nlohmann::ordered_json truth = {{"seed", opts.seed},
                                  {"count", opts.count},
                                  {"scenes", nlohmann::ordered_json::array()}};
  for (int i = 0; i < opts.count; ++i) {
    const scenes::Scene scene = scenes::GenerateScene(
        scenes::SceneSeed(static_cast<uint64_t>(opts.seed), i));
    const std::string file = absl::StrFormat("scene_%05d.png", i);
    RETURN_IF_ERROR(WritePng(scenes::RenderScene(scene),
                             (std::filesystem::path(opts.out_dir) / file)));
    nlohmann::ordered_json entry = scenes::SceneTruthJson(scene, file);
    if (opts.questions) entry["questions"] = TasksJson(scene);
    truth["scenes"].push_back(std::move(entry));
    std::printf("%s  %3dx%-3d  %-10s  %s\n", file.c_str(), scene.width,
                scene.height,
                std::string(scenes::BackgroundName(scene.background)).c_str(),
                scenes::CaptionOf(scene).c_str());
  }
  const std::string truth_path =
      std::filesystem::path(opts.out_dir) / kTruthFile;
  RETURN_IF_ERROR(WriteJson(truth, truth_path));
  std::printf("wrote %d scenes (seed %d) and %s\n", opts.count, opts.seed,
              truth_path.c_str());
  return absl::OkStatus();
}

}  // namespace md::bench
