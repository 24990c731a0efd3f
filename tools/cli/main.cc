// moondream-cli: runs one skill once on a local image, streaming text to
// stdout as it is generated.
//
//   moondream-cli caption --image=photo.jpg [--length=short]
//   moondream-cli query   --image=photo.jpg --question="What is this?"
//   moondream-cli detect  --image=photo.jpg --object=face --annotate=out.png
//   moondream-cli point   --image=photo.jpg --object=cup --json
//   moondream-cli gaze    --image=photo.jpg --eye=0.4,0.3
//   moondream-cli gaze    --image=photo.jpg --face=0.3,0.2,0.5,0.4 --seed=7
//
// each with --model=DIR (default: the tiny random test model).
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "base/command_line.h"
#include "base/files.h"
#include "base/paths.h"
#include "base/status_macros.h"
#include "base/threading.h"
#include "model/bundle.h"
#include "model/image/image_decode.h"
#include "model/io/tensor_io.h"
#include "model/net/dtype_choice.h"
#include "model/net/preprocess.h"
#include "model/skills/skill_table.h"
#include "model/skills/skills.h"
#include "model/tokenizer/detokenizer.h"
#include "tools/cli/annotate.h"

// Inside the project tree; found next to the binary wherever the tool is
// started from (base/paths.h).
constexpr char kDefaultModel[] = "models/scenes-demo";

ABSL_FLAG(std::string, model, kDefaultModel,
          "Model directory: model.safetensors, tokenizer.json, optional "
          "config.json. The default is the synthetic-scenes demo model (a tiny "
          "Moondream trained on coloured shapes, not Moondream's weights), "
          "looked for next to the binary, then in the working directory.");
ABSL_FLAG(std::string, preset, "moondream2",
          "Built-in config a config.json in the model directory overrides: "
          "moondream2 or moondream-0.5b");
ABSL_FLAG(std::string, image, "",
          "Image file (JPEG, PNG, WebP, GIF, TIFF, HEIF, BMP)");
ABSL_FLAG(std::string, question, "", "query: the question");
ABSL_FLAG(std::string, object, "", "detect/point: what to look for");
ABSL_FLAG(std::string, length, "normal", "caption: short or normal");
ABSL_FLAG(std::string, eye, "", "gaze: eye position x,y in [0,1]");
ABSL_FLAG(std::string, face, "",
          "gaze: face box x_min,y_min,x_max,y_max in [0,1] "
          "(prioritize_accuracy: 20 probes)");
ABSL_FLAG(uint64_t, seed, 0, "gaze with --face: seed of the probe positions");
ABSL_FLAG(bool, force_detect, false,
          "gaze: answer even when the model says there is none");
ABSL_FLAG(int, max_tokens, md::kDefaultMaxTokens,
          "caption/query: most tokens to generate");
ABSL_FLAG(bool, json, false, "Print one JSON object instead of text");
ABSL_FLAG(std::string, annotate, "",
          "Write the image with results drawn on it (PNG)");
ABSL_FLAG(std::string, dtype, "auto",
          "Compute dtype: auto (bf16 where the CPU has AVX512-BF16 or on "
          "CUDA, else fp32), fp32, bf16 or fp16 (CUDA)");
ABSL_FLAG(std::string, device, "cpu", "cpu, cuda or cuda:N");
ABSL_FLAG(int, threads, 0, "Compute threads (0: one per core)");
ABSL_FLAG(int64_t, max_pixels, 50'000'000,
          "Refuse images with more pixels than this");

namespace md::cli {
namespace {

using Json = nlohmann::json;

absl::StatusOr<std::vector<double>> ParseNumbers(const std::string& text,
                                                 size_t n, const char* flag) {
  std::vector<double> values;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    double v;
    if (!absl::SimpleAtod(part, &v) || v < 0 || v > 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--", flag, " takes ", n, " comma-separated numbers in [0, 1]"));
    }
    values.push_back(v);
  }
  if (values.size() != n) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, " takes ", n, " numbers"));
  }
  return values;
}

absl::StatusOr<std::vector<int>> EncodeText(const ModelBundle& bundle,
                                            const std::string& text,
                                            const char* what) {
  if (text.empty())
    return absl::InvalidArgumentError(absl::StrCat("--", what, " is required"));
  return bundle.tokenizer->Encode(text);
}

struct Session {
  ModelBundle bundle;
  RgbImage image;
  bool json = false;
  Annotations notes;
};

absl::Status RunText(Session& s, std::vector<int> prompt, const char* key) {
  ASSIGN_OR_RETURN(ImageCrops crops,
                   PrepareImage(s.image, s.bundle.model->config().vision));
  ASSIGN_OR_RETURN(EncodedImage encoded, EncodeImage(*s.bundle.model, crops));
  StreamingDetokenizer detok(s.bundle.tokenizer.get());
  std::string text;
  absl::Status stream_status;
  auto on_token = [&](int token) {
    absl::StatusOr<std::string> piece = detok.Push(token);
    if (!piece.ok()) {
      stream_status.Update(piece.status());
      return;
    }
    text += *piece;
    if (!s.json) {
      std::fwrite(piece->data(), 1, piece->size(), stdout);
      std::fflush(stdout);
    }
  };
  ASSIGN_OR_RETURN(
      TextResult result,
      GenerateText(*s.bundle.model, encoded, std::move(prompt),
                   absl::GetFlag(FLAGS_max_tokens), {}, {}, on_token));
  RETURN_IF_ERROR(stream_status);
  const std::string tail = detok.Flush();
  text += tail;
  if (s.json) {
    Json out = {{key, text},
                {"finish_reason", StopReasonName(result.stop)},
                {"tokens", result.tokens.size()}};
    std::cout << out.dump() << "\n";
  } else {
    std::cout << tail << "\n";
  }
  return absl::OkStatus();
}

absl::Status RunCaption(Session& s) {
  const std::string length = absl::GetFlag(FLAGS_length);
  if (length != "short" && length != "normal") {
    return absl::InvalidArgumentError("--length must be short or normal");
  }
  ASSIGN_OR_RETURN(std::vector<int> prompt,
                   CaptionPrompt(s.bundle.model->config(),
                                 length == "short" ? CaptionLength::kShort
                                                   : CaptionLength::kNormal));
  return RunText(s, std::move(prompt), "caption");
}

absl::Status RunQuery(Session& s) {
  ASSIGN_OR_RETURN(
      std::vector<int> question,
      EncodeText(s.bundle, absl::GetFlag(FLAGS_question), "question"));
  ASSIGN_OR_RETURN(std::vector<int> prompt,
                   QueryPrompt(s.bundle.model->config(), question));
  return RunText(s, std::move(prompt), "answer");
}

absl::Status RunRegion(Session& s, bool detect) {
  ASSIGN_OR_RETURN(std::vector<int> object,
                   EncodeText(s.bundle, absl::GetFlag(FLAGS_object), "object"));
  const MoondreamConfig& config = s.bundle.model->config();
  ASSIGN_OR_RETURN(std::vector<int> prompt, detect
                                                ? DetectPrompt(config, object)
                                                : PointPrompt(config, object));
  ASSIGN_OR_RETURN(ImageCrops crops, PrepareImage(s.image, config.vision));
  ASSIGN_OR_RETURN(EncodedImage encoded, EncodeImage(*s.bundle.model, crops));
  Json out;
  if (detect) {
    ASSIGN_OR_RETURN(DetectResult r, Detect(*s.bundle.model, encoded, prompt));
    out["objects"] = Json::array();
    for (const Box& b : r.objects) {
      out["objects"].push_back({{"x_min", b.x_min},
                                {"y_min", b.y_min},
                                {"x_max", b.x_max},
                                {"y_max", b.y_max}});
    }
    s.notes.boxes = r.objects;
  } else {
    ASSIGN_OR_RETURN(PointResult r, PointAt(*s.bundle.model, encoded, prompt));
    out["points"] = Json::array();
    for (const Point& p : r.points)
      out["points"].push_back({{"x", p.x}, {"y", p.y}});
    s.notes.points = r.points;
  }
  std::cout << (s.json ? out.dump() : out.dump(2)) << "\n";
  return absl::OkStatus();
}

absl::Status RunGaze(Session& s) {
  const Model& model = *s.bundle.model;
  const std::string eye_flag = absl::GetFlag(FLAGS_eye),
                    face_flag = absl::GetFlag(FLAGS_face);
  if (eye_flag.empty() == face_flag.empty()) {
    return absl::InvalidArgumentError(
        "gaze takes exactly one of --eye=x,y or --face=x0,y0,x1,y1");
  }
  std::optional<Point> gaze;
  if (!eye_flag.empty()) {
    ASSIGN_OR_RETURN(std::vector<double> eye, ParseNumbers(eye_flag, 2, "eye"));
    ASSIGN_OR_RETURN(ImageCrops crops,
                     PrepareImage(s.image, model.config().vision));
    ASSIGN_OR_RETURN(EncodedImage encoded, EncodeImage(model, crops));
    ASSIGN_OR_RETURN(
        GazeResult r,
        DetectGaze(model, encoded, s.bundle.gaze_ids, Point{eye[0], eye[1]},
                   absl::GetFlag(FLAGS_force_detect)));
    gaze = r.gaze;
    s.notes.eye = Point{eye[0], eye[1]};
  } else {
    ASSIGN_OR_RETURN(std::vector<double> f, ParseNumbers(face_flag, 4, "face"));
    ASSIGN_OR_RETURN(ImageCrops crops,
                     PrepareImage(s.image, model.config().vision));
    ASSIGN_OR_RETURN(ImageCrops flipped, PrepareImage(FlipHorizontal(s.image),
                                                      model.config().vision));
    ASSIGN_OR_RETURN(std::vector<EncodedImage> encoded,
                     EncodeImages(model, {crops, flipped}));
    ASSIGN_OR_RETURN(
        gaze, DetectGazeAccurate(
                  model, encoded[0], encoded[1], s.bundle.gaze_ids,
                  FaceBox{f[0], f[1], f[2], f[3]}, absl::GetFlag(FLAGS_seed),
                  absl::GetFlag(FLAGS_force_detect)));
    s.notes.eye = Point{(f[0] + f[2]) / 2, (f[1] + f[3]) / 2};
  }
  s.notes.gaze = gaze;
  Json out = {
      {"gaze", gaze ? Json{{"x", gaze->x}, {"y", gaze->y}} : Json(nullptr)}};
  std::cout << (s.json ? out.dump() : out.dump(2)) << "\n";
  return absl::OkStatus();
}

std::string SkillNames() {
  std::vector<std::string> names;
  for (const SkillSpec& spec : SkillTable()) names.emplace_back(spec.name);
  return absl::StrJoin(names, ", ");
}

absl::Status RunSkill(Skill skill, Session& s) {
  switch (skill) {
    case Skill::kCaption:
      return RunCaption(s);
    case Skill::kQuery:
      return RunQuery(s);
    case Skill::kDetect:
      return RunRegion(s, /*detect=*/true);
    case Skill::kPoint:
      return RunRegion(s, /*detect=*/false);
    case Skill::kGaze:
      return RunGaze(s);
  }
  return absl::InternalError("unknown skill");
}

absl::Status Run(const std::string& name) {
  const std::optional<Skill> skill = SkillFromName(name);
  if (!skill.has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown skill '", name, "' (", SkillNames(), "; --help for more)"));
  }
  ModelOptions options;
  ASSIGN_OR_RETURN(options.device, ParseDevice(absl::GetFlag(FLAGS_device)));
  ASSIGN_OR_RETURN(const DTypeChoice dtype_choice,
                   ChooseDType(absl::GetFlag(FLAGS_dtype), options.device));
  options.dtype = dtype_choice.dtype;
  const int threads = absl::GetFlag(FLAGS_threads);
  SetComputeThreads(
      threads > 0 ? threads
                  : static_cast<int>(std::thread::hardware_concurrency()));

  const std::string image_path = ExpandUser(absl::GetFlag(FLAGS_image));
  if (image_path.empty())
    return absl::InvalidArgumentError("--image is required");
  ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(image_path, "image"));

  Session s;
  s.json = absl::GetFlag(FLAGS_json);
  ASSIGN_OR_RETURN(
      s.bundle, LoadModelBundle(
                    ResolveModelFlag(absl::GetFlag(FLAGS_model), kDefaultModel),
                    absl::GetFlag(FLAGS_preset), options));
  std::cerr << DescribeBundle(s.bundle) << "\n"
            << "dtype " << DTypeLabel(options.dtype) << " ("
            << dtype_choice.reason << ")\n";
  ASSIGN_OR_RETURN(
      s.image,
      DecodeImage(
          bytes, DecodeOptions{.max_pixels = absl::GetFlag(FLAGS_max_pixels)}));

  RETURN_IF_ERROR(RunSkill(*skill, s));

  if (const std::string out = ExpandUser(absl::GetFlag(FLAGS_annotate));
      !out.empty()) {
    RETURN_IF_ERROR(WriteAnnotatedPng(s.image, s.notes, out));
    std::cerr << "wrote " << out << "\n";
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace md::cli

int main(int argc, char** argv) {
  md::EnsurePassiveOpenMpWait(argv);
  absl::SetProgramUsageMessage(
      "runs one Moondream skill on a local image.\n\n"
      "  moondream-cli caption --image=photo.jpg [--length=short]\n"
      "  moondream-cli query   --image=photo.jpg --question=\"What is this?\"\n"
      "  moondream-cli detect  --image=photo.jpg --object=face "
      "[--annotate=out.png]\n"
      "  moondream-cli point   --image=photo.jpg --object=cup [--json]\n"
      "  moondream-cli gaze    --image=photo.jpg --eye=0.4,0.3 | "
      "--face=x0,y0,x1,y1\n\n"
      "--model=DIR picks the model (default: the synthetic-scenes demo "
      "model, which\nknows only images of coloured shapes; see README 'The "
      "default model').");
  md::ListFlagsInHelp(__FILE__);
  // Accept --max-tokens as well as absl's --max_tokens spelling.
  md::UnderscoredArgv underscored(argc, argv);
  std::vector<char*> args = absl::ParseCommandLine(argc, underscored.argv());
  if (args.size() != 2) {
    std::cerr << "usage: moondream-cli <caption|query|detect|point|gaze> "
                 "[flags]; --help for more\n";
    return 2;
  }
  absl::Status status = md::cli::Run(args[1]);
  if (!status.ok()) {
    std::cerr << "moondream-cli: " << status.message() << "\n";
    return 1;
  }
  return 0;
}
