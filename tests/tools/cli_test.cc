// Runs the real moondream-cli binary on the tiny random test model and on
// the default, the shipped synthetic-scenes demo model.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace {

struct Result {
  int exit_code = -1;
  std::string out;  // stdout and stderr together
};

// Runs in `dir` (the source tree unless told otherwise), with `env`
// ("NAME=value ...") added to the environment.
Result RunCli(const std::string& args, const std::string& dir = MD_SOURCE_DIR,
              const std::string& env = "") {
  const std::string command =
      "cd '" + dir + "' && " + env + " " + MD_CLI_PATH + " " + args + " 2>&1";
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

// The last line of the output is the JSON object (the banner goes first).
nlohmann::json LastJson(const std::string& out) {
  std::string trimmed = out.substr(0, out.find_last_not_of('\n') + 1);
  return nlohmann::json::parse(trimmed.substr(trimmed.rfind('\n') + 1));
}

// One tile (two crops): the vision encoder is the slow part of a run.
const std::string kImage = "--image=tests/data/golden/images/gray_200x150.png";

TEST(CliTest, EverySkillAnswersInJsonAndSaysTheModelIsRandom) {
  const std::pair<std::string, std::string> cases[] = {
      {"caption --length=short --max-tokens=8", "caption"},
      {"query --question='What is here?' --max-tokens=8", "answer"},
      {"detect --object=triangle", "objects"},
      {"point --object=circle", "points"},
      {"gaze --eye=0.4,0.3", "gaze"},
      {"gaze --face=0.3,0.2,0.5,0.4 --seed=3", "gaze"},
  };
  for (const auto& [args, key] : cases) {
    SCOPED_TRACE(args);
    Result r =
        RunCli(args + " " + kImage + " --json --model=models/tiny-random");
    ASSERT_EQ(r.exit_code, 0) << r.out;
    EXPECT_NE(r.out.find("meaningless"), std::string::npos);
    nlohmann::json j = LastJson(r.out);
    EXPECT_TRUE(j.contains(key)) << r.out;
  }
}

TEST(CliTest, StreamsTextAndIsDeterministic) {
  Result a = RunCli("caption " + kImage + " --max-tokens=12");
  Result b = RunCli("caption " + kImage + " --max-tokens=12");
  ASSERT_EQ(a.exit_code, 0) << a.out;
  EXPECT_EQ(a.out, b.out);
}

TEST(CliTest, AnnotateWritesAPng) {
  const std::string path = ::testing::TempDir() + "/annotated.png";
  std::remove(path.c_str());
  Result r = RunCli("detect --object=square " + kImage + " --annotate=" + path);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  std::ifstream in(path, std::ios::binary);
  char magic[8] = {};
  in.read(magic, 8);
  EXPECT_EQ(std::string(magic + 1, 3), "PNG");
}

TEST(CliTest, BadInputIsAClearErrorNotACrash) {
  const std::pair<std::string, std::string> cases[] = {
      {"caption --image=/nonexistent.png", "cannot open"},
      {"caption --image=README.md", "image"},
      {"query " + kImage, "--question is required"},
      {"gaze " + kImage, "exactly one of"},
      {"gaze --eye=2,0.5 " + kImage, "in [0, 1]"},
      {"caption --length=long " + kImage, "short or normal"},
      {"caption --dtype=int8 " + kImage, "unknown dtype"},
      {"caption --dtype=fp16 " + kImage, "fp16 compute needs a CUDA device"},
      {"caption --model=/nonexistent " + kImage, "does not exist"},
      {"dance " + kImage, "unknown skill"},
  };
  for (const auto& [args, message] : cases) {
    SCOPED_TRACE(args);
    Result r = RunCli(args);
    EXPECT_EQ(r.exit_code, 1) << r.out;
    EXPECT_NE(r.out.find(message), std::string::npos) << r.out;
  }
}

// The default model ships in the source tree; the binary finds it from
// anywhere, and `~` in a path flag is the home directory.
TEST(CliTest, FindsTheDefaultModelFromAnyDirectoryAndExpandsTilde) {
  const std::string home = ::testing::TempDir();
  const std::string png = home + "/tilde_annotated.png";
  std::remove(png.c_str());
  const std::string image =
      std::string(MD_SOURCE_DIR) + "/tests/data/golden/images/gray_200x150.png";
  Result r = RunCli("point --object=circle --json --image=" + image +
                        " --annotate=~/tilde_annotated.png",
                    "/", "HOME='" + home + "'");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("models/scenes-demo"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("NOTE: a demo model, not Moondream's weights"),
            std::string::npos)
      << r.out;
  EXPECT_TRUE(std::ifstream(png).good()) << r.out;
}

// The default model answers the README's first example right: the colour
// of the one circle of the scene it ships as scene_00000.png.
TEST(CliTest, TheDefaultModelAnswersAShippedScene) {
  const std::string examples =
      std::string(MD_SOURCE_DIR) + "/models/scenes-demo/examples";
  const nlohmann::json truth =
      nlohmann::json::parse(std::ifstream(examples + "/truth.json"));
  std::vector<std::string> circles;
  for (const nlohmann::json& shape : truth["scenes"][0]["shapes"]) {
    if (shape["kind"] == "circle") circles.push_back(shape["color"]);
  }
  ASSERT_EQ(circles.size(), 1u) << truth["scenes"][0].dump();
  Result r = RunCli("query --image=" + examples +
                    "/scene_00000.png --question='What color is the circle?' "
                    "--json");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(LastJson(r.out)["answer"], circles[0]) << r.out;
}

// Abseil lists only flags of a file named after the program under --help;
// every flag of the tool must show up there all the same ("--name (help);
// default: ...").
TEST(CliTest, HelpListsEveryFlag) {
  Result r = RunCli("--help");
  for (const char* flag :
       {"--model", "--image", "--question", "--object", "--eye", "--face",
        "--dtype", "--max_tokens", "--annotate", "--json"}) {
    EXPECT_NE(r.out.find(std::string(flag) + " ("), std::string::npos)
        << flag << "\n"
        << r.out;
  }
  EXPECT_EQ(r.out.find("No flags matched"), std::string::npos) << r.out;
}

}  // namespace
