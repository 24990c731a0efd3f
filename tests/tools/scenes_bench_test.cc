// Runs the real moondream-bench `scenes`, `scenes-eval` and `feature-probe`
// subcommands; the evaluation on the tiny random model, whose answers are all
// wrong: the point is that it runs end to end and reports.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

namespace {

struct Result {
  int exit_code = -1;
  std::string out;  // stdout only: progress and the banner go to stderr
};

Result RunBench(const std::string& args) {
  const std::string command = std::string("cd '") + MD_SOURCE_DIR + "' && " +
                              MD_BENCH_PATH + " " + args + " 2>/dev/null";
  Result r;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return r;
  char buffer[4096];
  for (size_t n; (n = fread(buffer, 1, sizeof buffer, pipe)) > 0;)
    r.out.append(buffer, n);
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::filesystem::path FreshDir(const std::string& name) {
  const std::filesystem::path dir =
      std::filesystem::path(::testing::TempDir()) / name;
  std::filesystem::remove_all(dir);
  return dir;
}

TEST(ScenesBenchTest, WritesPngsAndTruthTheSameForASeed) {
  const std::filesystem::path a = FreshDir("scenes_a"),
                              b = FreshDir("scenes_b");
  const Result ra =
      RunBench("scenes --count=3 --seed=4 --questions --out=" + a.string());
  ASSERT_EQ(ra.exit_code, 0) << ra.out;
  ASSERT_EQ(
      RunBench("scenes --count=3 --seed=4 --questions --out=" + b.string())
          .exit_code,
      0);
  const nlohmann::json truth =
      nlohmann::json::parse(ReadFile(a / "truth.json"));
  ASSERT_EQ(truth["scenes"].size(), 3u);
  for (const nlohmann::json& scene : truth["scenes"]) {
    const std::string file = scene["file"];
    const std::string png = ReadFile(a / file);
    ASSERT_GT(png.size(), 8u) << file;
    EXPECT_EQ(png.substr(1, 3), "PNG");
    EXPECT_EQ(png, ReadFile(b / file)) << file;
    EXPECT_GE(scene["shapes"].size(), 1u);
    EXPECT_EQ(scene["questions"][0]["input"], "How many shapes are there?");
    EXPECT_NE(ra.out.find(file), std::string::npos);
  }
  EXPECT_EQ(ReadFile(a / "truth.json"), ReadFile(b / "truth.json"));
}

TEST(ScenesBenchTest, EvaluatesTheTinyModelEndToEnd) {
  const std::filesystem::path dir = FreshDir("scenes_eval");
  std::filesystem::create_directories(dir);
  const std::filesystem::path json = dir / "report.json";
  const Result r = RunBench(
      "scenes-eval --model=models/tiny-random --count=2 --seed=1 --threads=2 "
      "--max-tokens=8 --max-objects=4 --show-errors=40 --json=" +
      json.string());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  for (const char* row : {"count", "color", "shape", "caption short",
                          "caption normal", "detect F1", "point inside",
                          "point recall", ">= 90%", ">= 0.80", "wrong: "}) {
    EXPECT_NE(r.out.find(row), std::string::npos) << row << "\n" << r.out;
  }
  // A wrong detect answer shows the target boxes next to the answer's.
  EXPECT_NE(r.out.find("detect 'circle': expected [("), std::string::npos)
      << r.out;
  const nlohmann::json report = nlohmann::json::parse(ReadFile(json));
  EXPECT_EQ(report["scenes"], 2);
  EXPECT_EQ(report["random_weights"], true);
  EXPECT_GT(report["questions"].get<int>(), 2 * 8);
  EXPECT_EQ(report["all_pass"], false);
  for (const char* metric : {"count", "caption normal", "detect F1",
                             "point inside", "point recall"}) {
    EXPECT_TRUE(report["metrics"].contains(metric)) << metric;
    EXPECT_TRUE(report["metrics"][metric].contains("pass")) << metric;
  }
  EXPECT_EQ(report["tallies"]["count"]["asked"], 2);
  // How the detect boxes miss, measured whether or not any box overlaps.
  EXPECT_NE(r.out.find("box geometry"), std::string::npos) << r.out;
  EXPECT_TRUE(report["box_geometry"].contains("aspect_slope"));
  // Each pair is one answered box: at most the boxes the answers gave.
  const nlohmann::json& detect = report["tallies"]["detect"];
  EXPECT_LE(report["box_geometry"]["pairs"].get<int>(),
            detect["true_positives"].get<int>() +
                detect["false_positives"].get<int>());
  // Every wrong box, missed shape and point outside has one error kind.
  EXPECT_NE(r.out.find("wrong boxes: "), std::string::npos) << r.out;
  const nlohmann::json& kinds = report["error_kinds"];
  const auto sum = [](const nlohmann::json& object,
                      std::initializer_list<const char*> keys) {
    int total = 0;
    for (const char* key : keys) total += object[key].get<int>();
    return total;
  };
  EXPECT_EQ(sum(kinds["detect"],
                {"imprecise", "duplicate", "other_shape", "on_nothing"}),
            detect["false_positives"].get<int>());
  EXPECT_EQ(sum(kinds["detect"], {"missed_near", "missed_far"}),
            detect["false_negatives"].get<int>());
  const nlohmann::json& point = report["tallies"]["point"];
  EXPECT_EQ(sum(kinds["point"], {"in_target_box", "other_shape", "background"}),
            point["points"].get<int>() - point["inside"].get<int>());
  // The same answers split by the image's aspect: every scene in one bucket.
  EXPECT_NE(r.out.find("by image aspect"), std::string::npos) << r.out;
  int bucketed = 0, counts_asked = 0;
  for (const nlohmann::json& bucket : report["by_aspect"]) {
    bucketed += bucket["scenes"].get<int>();
    counts_asked += bucket["tallies"]["count"]["asked"].get<int>();
  }
  EXPECT_EQ(bucketed, 2);
  EXPECT_EQ(counts_asked, 2);
  // The detect and point answers again, by how many shapes each question
  // asks for: each such question in one bucket, nothing else in any.
  EXPECT_NE(r.out.find("by the shapes they ask for"), std::string::npos)
      << r.out;
  int detect_targets = 0, points = 0;
  for (const nlohmann::json& bucket : report["by_shapes_asked"]) {
    const nlohmann::json& t = bucket["tallies"];
    detect_targets += t["detect"]["true_positives"].get<int>() +
                      t["detect"]["false_negatives"].get<int>();
    points += t["point"]["points"].get<int>();
    EXPECT_EQ(t["count"]["asked"], 0) << bucket.dump();
  }
  EXPECT_EQ(detect_targets, detect["true_positives"].get<int>() +
                                detect["false_negatives"].get<int>());
  EXPECT_EQ(points, point["points"].get<int>());
  // The point answers to questions about several shapes, by place: each of
  // their points in one place, and no more shapes missing than they ask for.
  EXPECT_NE(r.out.find("by their place in the answer"), std::string::npos)
      << r.out;
  int placed = 0, several_points = 0, several_targets = 0;
  for (const nlohmann::json& place :
       report["several_points_by_place"]["places"]) {
    placed += place["points"].get<int>();
    EXPECT_LE(place["inside"].get<int>(), place["points"].get<int>());
  }
  for (const nlohmann::json& bucket : report["by_shapes_asked"]) {
    if (bucket["shapes_asked"] != "several") continue;
    several_points = bucket["tallies"]["point"]["points"].get<int>();
    several_targets = bucket["tallies"]["point"]["targets"].get<int>();
  }
  EXPECT_EQ(placed, several_points);
  EXPECT_LE(
      report["several_points_by_place"]["shapes_without_a_point"].get<int>(),
      several_targets);

  // The same targets as a gate: the random model fails it.
  const Result gated = RunBench(
      "scenes-eval --count=1 --threads=2 --max-tokens=4 --max-objects=2 "
      "--require-targets");
  EXPECT_EQ(gated.exit_code, 1) << gated.out;
}

TEST(ScenesBenchTest, BadFlagsAreClearErrors) {
  EXPECT_EQ(RunBench("scenes --count=2").exit_code, 2);  // no --out
  EXPECT_EQ(RunBench("scenes-eval --count=0").exit_code, 2);
  EXPECT_EQ(RunBench("scenes-eval --max-objects=99").exit_code, 2);
  // The trainer's scene flags: a share is a fraction, and no scene of the
  // specification is wider than 3:1.
  const std::string out =
      "train --steps=0 --out=" + FreshDir("bad_train").string();
  EXPECT_EQ(RunBench(out + " --wide-scenes=1.5").exit_code, 2);
  EXPECT_EQ(RunBench(out + " --wide-scenes=0.5 --wide-aspect=3.5").exit_code,
            2);
  EXPECT_EQ(RunBench(out + " --max-shapes=5").exit_code, 2);
  EXPECT_EQ(RunBench("feature-probe --count=4").exit_code, 2);
  EXPECT_EQ(RunBench("feature-probe --model=/nonexistent").exit_code, 1);
}

// feature-probe on the shipped demo model: the table and its JSON, every
// readout with an R² per target (the probes' own test is
// feature_probe_test).
TEST(ScenesBenchTest, FeatureProbeReportsEveryReadout) {
  const std::filesystem::path json = FreshDir("feature_probe") / "probe.json";
  std::filesystem::create_directories(json.parent_path());
  const Result r =
      RunBench("feature-probe --count=8 --threads=2 --json=" + json.string());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("cell mask (truth)"), std::string::npos) << r.out;
  const nlohmann::json report = nlohmann::json::parse(ReadFile(json));
  EXPECT_EQ(report["scenes"], 8);
  // The tower's five readouts, the focus head's two, the detect size row's
  // two, the x row's gathered values (all of them and the shape's
  // alone), the x and y rows and the region head's answers, all and of
  // the second and later objects (the shipped model has a tokenizer).
  ASSERT_EQ(report["readouts"].size(), 15u);
  EXPECT_EQ(report["readouts"][13]["readout"], "region head's answers");
  EXPECT_EQ(report["readouts"][14]["readout"], "answers, 2nd+ objects");
  EXPECT_EQ(report["readouts"][14]["rows"], report["later_focus_rows"]);
  EXPECT_GT(report["x_row_focus"]["shape"].get<double>(), 0);
  EXPECT_GE(report["x_row_focus"]["answered"].get<double>(), 0);
  EXPECT_GE(report["later_focus_rows"].get<int>(), 0);
  EXPECT_TRUE(report["later_x_row_focus"].contains("answered"));
  for (const auto& readout : report["readouts"]) {
    EXPECT_EQ(readout["r2"].size(), 5u) << readout.dump();
    EXPECT_GT(readout["rows"].get<int>(), 0) << readout.dump();
  }
}

}  // namespace
