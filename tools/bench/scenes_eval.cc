// `moondream-bench scenes-eval`: asks a model every question of fresh
// synthetic scenes (tools/scenes/questions.h) through the skills
// moondream-cli runs (model/skills/skills.h, one request at a time, greedy)
// and scores the answers (tools/scenes/metrics.h) against issue 14's
// targets.
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/types/span.h"
#include "base/paths.h"
#include "base/status_macros.h"
#include "model/bundle.h"
#include "model/image/image_decode.h"
#include "model/io/tensor_io.h"
#include "model/net/dtype_choice.h"
#include "model/net/preprocess.h"
#include "model/skills/skills.h"
#include "model/tokenizer/detokenizer.h"
#include "tools/bench/flags.h"
#include "tools/bench/json_report.h"
#include "tools/bench/scenes.h"
#include "tools/bench/stats.h"
#include "tools/scenes/metrics.h"
#include "tools/scenes/questions.h"
#include "tools/scenes/random.h"
#include "tools/scenes/scene.h"

namespace md::bench {
namespace {

using scenes::Scene;
using scenes::SceneTask;
using scenes::TaskKind;

// Inside the project tree, found next to the binary (base/paths.h), as
// moondream-cli's default.
constexpr char kDefaultModel[] = "models/scenes-demo";
// The longest expected answer (a caption of four shapes) is about 25 GPT-2
// tokens; more only lets a rambling model waste time.
constexpr int kDefaultMaxTokens = 64;

struct EvalOptions {
  std::string model_dir = kDefaultModel;
  std::string preset = "moondream2";
  std::string dtype_name = "auto";
  std::string device_name = "cpu";
  int count = 200;
  int seed = 1;
  int n_threads = static_cast<int>(std::thread::hardware_concurrency());
  int max_tokens = kDefaultMaxTokens;
  int max_objects = kMaxObjects;
  int show_errors = 0;
  std::string json_path;
  bool require_targets = false;
  std::string require;  // comma-separated metric names
};

absl::StatusOr<EvalOptions> ParseOptions(const std::vector<std::string>& args,
                                         bool* help) {
  EvalOptions opts;
  FlagParser flags(
      "scenes-eval",
      "Asks a model every question of fresh synthetic scenes (count, colour\n"
      "and shape queries, short and normal captions, detect and point) with\n"
      "the skills moondream-cli runs, and reports accuracy against issue\n"
      "14's targets. Scene i is the one `moondream-bench scenes` writes as\n"
      "scene i for the same --seed.");
  flags.AddString("model", &opts.model_dir,
                  "model directory (default: the shipped demo model)");
  flags.AddString("preset", &opts.preset,
                  "built-in config a config.json in the directory overrides");
  flags.AddString("dtype", &opts.dtype_name,
                  "auto (what the server picks here) | fp32 | bf16 (fp16 on "
                  "CUDA)");
  flags.AddString("device", &opts.device_name, "cpu, cuda or cuda:N");
  flags.AddInt("threads", &opts.n_threads, "intra-op compute threads");
  flags.AddInt("count", &opts.count, "how many scenes");
  flags.AddInt("seed", &opts.seed,
               "the scene set's seed (>= 0); train on other seeds");
  flags.AddInt("max-tokens", &opts.max_tokens,
               "most tokens a query or caption answer may take");
  flags.AddInt("max-objects", &opts.max_objects,
               "most boxes or points one detect or point answer may take");
  flags.AddInt("show-errors", &opts.show_errors,
               "print the first N wrong answers");
  flags.AddString("json", &opts.json_path,
                  "also write the report as JSON to this file (- for stdout)");
  flags.AddBool("require-targets", &opts.require_targets,
                "exit with an error unless every target is met");
  flags.AddString("require", &opts.require,
                  "exit with an error unless these targets are met "
                  "(comma-separated names from the table, e.g. color,shape)");
  RETURN_IF_ERROR(flags.Parse(args));
  *help = flags.help_requested();
  if (*help) {
    std::printf("%s", flags.Usage().c_str());
    return opts;
  }
  if (opts.count < 1 || opts.seed < 0 || opts.n_threads < 1 ||
      opts.max_tokens < 1 || opts.show_errors < 0) {
    return absl::InvalidArgumentError(
        "--count, --threads and --max-tokens must be >= 1; --seed and "
        "--show-errors >= 0");
  }
  if (opts.max_objects < 1 || opts.max_objects > kMaxObjects) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max-objects must be in [1, ", kMaxObjects, "]"));
  }
  opts.model_dir = ResolveModelFlag(opts.model_dir, kDefaultModel);
  opts.json_path = JsonReportPath(opts.json_path);
  return opts;
}

// The scene as a user would hand it over: a PNG file's bytes, decoded by
// the code that decodes moondream-cli's --image.
absl::StatusOr<RgbImage> SceneImage(const Scene& scene) {
  std::vector<uchar> png;
  if (!cv::imencode(".png", scenes::RenderScene(scene), png)) {
    return absl::InternalError("could not encode a scene as PNG");
  }
  return DecodeImage(
      std::string_view(reinterpret_cast<const char*>(png.data()), png.size()),
      DecodeOptions{});
}

// What a skill answered: text (query, caption), boxes (detect) or points.
struct Answer {
  std::string text;
  std::vector<Box> boxes;
  std::vector<Point> points;
};

// Runs each task's skill on one encoded scene.
class SkillRunner {
 public:
  SkillRunner(const ModelBundle& bundle, const EvalOptions& opts)
      : bundle_(bundle), opts_(opts) {}

  absl::StatusOr<Answer> Run(const EncodedImage& image,
                             const SceneTask& task) const {
    const MoondreamConfig& config = bundle_.model->config();
    switch (task.kind) {
      case TaskKind::kCount:
      case TaskKind::kColour:
      case TaskKind::kShape: {
        ASSIGN_OR_RETURN(std::vector<int> question,
                         bundle_.tokenizer->Encode(task.input));
        ASSIGN_OR_RETURN(std::vector<int> prompt,
                         QueryPrompt(config, question));
        return Text(image, std::move(prompt));
      }
      case TaskKind::kCaptionShort:
      case TaskKind::kCaptionNormal: {
        ASSIGN_OR_RETURN(
            std::vector<int> prompt,
            CaptionPrompt(config, task.kind == TaskKind::kCaptionShort
                                      ? CaptionLength::kShort
                                      : CaptionLength::kNormal));
        return Text(image, std::move(prompt));
      }
      case TaskKind::kDetect:
      case TaskKind::kPoint:
        return Region(image, task);
    }
    return absl::InternalError("unknown task");
  }

 private:
  // Greedy text, detokenized as moondream-cli streams it.
  absl::StatusOr<Answer> Text(const EncodedImage& image,
                              std::vector<int> prompt) const {
    ASSIGN_OR_RETURN(TextResult result,
                     GenerateText(*bundle_.model, image, std::move(prompt),
                                  opts_.max_tokens));
    StreamingDetokenizer detok(bundle_.tokenizer.get());
    Answer answer;
    for (int token : result.tokens) {
      ASSIGN_OR_RETURN(std::string piece, detok.Push(token));
      answer.text += piece;
    }
    answer.text += detok.Flush();
    return answer;
  }

  absl::StatusOr<Answer> Region(const EncodedImage& image,
                                const SceneTask& task) const {
    const MoondreamConfig& config = bundle_.model->config();
    ASSIGN_OR_RETURN(std::vector<int> object,
                     bundle_.tokenizer->Encode(task.input));
    Answer answer;
    if (task.kind == TaskKind::kDetect) {
      ASSIGN_OR_RETURN(std::vector<int> prompt, DetectPrompt(config, object));
      ASSIGN_OR_RETURN(
          DetectResult result,
          Detect(*bundle_.model, image, std::move(prompt), opts_.max_objects));
      answer.boxes = std::move(result.objects);
    } else {
      ASSIGN_OR_RETURN(std::vector<int> prompt, PointPrompt(config, object));
      ASSIGN_OR_RETURN(
          PointResult result,
          PointAt(*bundle_.model, image, std::move(prompt), opts_.max_objects));
      answer.points = std::move(result.points);
    }
    return answer;
  }

  const ModelBundle& bundle_;
  const EvalOptions& opts_;
};

// Adds one answer to the tally; true when it was entirely right.
bool Score(const Scene& scene, const SceneTask& task, const Answer& answer,
           scenes::EvalTally& tally) {
  if (scenes::TextTally* text = tally.TextFor(task.kind)) {
    const bool right = scenes::AnswerMatches(answer.text, task.answer);
    ++text->asked;
    text->correct += right;
    return right;
  }
  if (task.kind == TaskKind::kDetect) {
    const scenes::DetectTally d =
        scenes::ScoreDetections(scene, task.targets, answer.boxes);
    tally.detect += d;
    tally.box_geometry +=
        scenes::MeasureBoxGeometry(scene, task.targets, answer.boxes);
    tally.errors.detect +=
        scenes::ClassifyDetectErrors(scene, task.targets, answer.boxes);
    return d.false_positives == 0 && d.false_negatives == 0;
  }
  const scenes::PointTally p =
      scenes::ScorePoints(scene, task.targets, answer.points);
  tally.point += p;
  tally.errors.point +=
      scenes::ClassifyPointErrors(scene, task.targets, answer.points);
  return p.inside == p.points && p.reached == p.targets;
}

// A rambling answer cut to a line's length.
std::string Shortened(const std::string& text) {
  constexpr size_t kMaxChars = 80;
  return text.size() <= kMaxChars ? text : text.substr(0, kMaxChars) + "...";
}

std::string BoxText(const Box& b) {
  return absl::StrFormat("(%.3f,%.3f)-(%.3f,%.3f)", b.x_min, b.y_min, b.x_max,
                         b.y_max);
}

std::string Describe(const Scene& scene, const SceneTask& task,
                     const Answer& answer) {
  const std::string what = absl::StrCat(
      scenes::TaskKindName(task.kind),
      task.input.empty() ? "" : absl::StrCat(" '", task.input, "'"));
  if (task.kind == TaskKind::kDetect) {
    // The targets' boxes next to the answer's: place or size shows.
    std::vector<std::string> targets, boxes;
    for (int index : task.targets) {
      targets.push_back(
          BoxText(scenes::NormalizedBox(scene, scene.shapes[index])));
    }
    for (const Box& b : answer.boxes) boxes.push_back(BoxText(b));
    return absl::StrCat(what, ": expected [", absl::StrJoin(targets, " "),
                        "], got [", absl::StrJoin(boxes, " "), "]");
  }
  if (task.kind == TaskKind::kPoint) {
    std::vector<std::string> points;
    for (const Point& p : answer.points) {
      points.push_back(absl::StrFormat("(%.3f,%.3f)", p.x, p.y));
    }
    return absl::StrCat(what, ": expected ", task.targets.size(),
                        " point(s), got [",
                        Shortened(absl::StrJoin(points, " ")), "]");
  }
  return absl::StrCat(what, ": expected '", task.answer, "', got '",
                      Shortened(answer.text), "'");
}

// Scenes by the ratio of the image's longer side to its shorter: the
// prefix's 27×27 grid squeezes a wide image's shapes into few columns (2 to
// 4.7 of them in a 2:1 image, 1.4 to 3.2 at 3:1), so the region answers'
// precision depends on it. Bucket i < kAspectLimits.size() holds ratios
// below kAspectLimits[i]; the last bucket holds the rest.
constexpr std::array<double, 2> kAspectLimits = {1.3, 1.8};
constexpr size_t kAspectBuckets = kAspectLimits.size() + 1;

int AspectBucket(const Scene& scene) {
  return static_cast<int>(std::upper_bound(kAspectLimits.begin(),
                                           kAspectLimits.end(),
                                           scenes::SceneAspect(scene)) -
                          kAspectLimits.begin());
}

std::string AspectBucketName(int bucket) {
  if (bucket == 0) return absl::StrFormat("< %.1f", kAspectLimits[0]);
  if (bucket == static_cast<int>(kAspectLimits.size())) {
    return absl::StrFormat(">= %.1f", kAspectLimits[bucket - 1]);
  }
  return absl::StrFormat("%.1f-%.1f", kAspectLimits[bucket - 1],
                         kAspectLimits[bucket]);
}

// Detect and point questions by how many shapes they ask for: one, or
// several (the region rows must then also pick which of them each answer
// is, left to right).
constexpr size_t kAnswerBuckets = 2;

bool IsRegionTask(const SceneTask& task) {
  return task.kind == scenes::TaskKind::kDetect ||
         task.kind == scenes::TaskKind::kPoint;
}

struct EvalRun {
  scenes::EvalTally tally;  // the aspect buckets' sum
  // The answers by AspectBucket.
  std::array<scenes::EvalTally, kAspectBuckets> by_aspect;
  std::array<int, kAspectBuckets> scenes_by_aspect{};
  // The detect and point answers again, by how many shapes they ask for.
  std::array<scenes::EvalTally, kAnswerBuckets> by_answers;
  std::array<int, kAnswerBuckets> questions_by_answers{};
  // The points of the point questions about several shapes, by place.
  scenes::PointPlaceTally several_point_places;
  int questions = 0;
  double seconds = 0;
};

absl::StatusOr<EvalRun> Evaluate(const ModelBundle& bundle,
                                 const EvalOptions& opts) {
  const SkillRunner runner(bundle, opts);
  EvalRun run;
  int errors_shown = 0;
  Stopwatch watch;
  for (int i = 0; i < opts.count; ++i) {
    const Scene scene = scenes::GenerateScene(
        scenes::SceneSeed(static_cast<uint64_t>(opts.seed), i));
    ASSIGN_OR_RETURN(RgbImage image, SceneImage(scene));
    ASSIGN_OR_RETURN(ImageCrops crops,
                     PrepareImage(image, bundle.model->config().vision));
    ASSIGN_OR_RETURN(EncodedImage encoded, EncodeImage(*bundle.model, crops));
    const int bucket = AspectBucket(scene);
    ++run.scenes_by_aspect[bucket];
    for (const SceneTask& task : scenes::SceneTasks(scene)) {
      ASSIGN_OR_RETURN(Answer answer, runner.Run(encoded, task));
      ++run.questions;
      scenes::EvalTally scored;
      const bool right = Score(scene, task, answer, scored);
      run.by_aspect[bucket] += scored;
      if (IsRegionTask(task)) {
        const size_t several = task.targets.size() > 1 ? 1 : 0;
        ++run.questions_by_answers[several];
        run.by_answers[several] += scored;
        if (several && task.kind == scenes::TaskKind::kPoint) {
          run.several_point_places +=
              scenes::ScorePointPlaces(scene, task.targets, answer.points);
        }
      }
      if (!right && errors_shown < opts.show_errors) {
        ++errors_shown;
        std::printf("wrong: scene %d: %s\n", i,
                    Describe(scene, task, answer).c_str());
      }
    }
    if ((i + 1) % 10 == 0 || i + 1 == opts.count) {
      std::fprintf(stderr, "\rscenes %d/%d, %.1f s", i + 1, opts.count,
                   watch.ElapsedMs() / 1000);
    }
  }
  std::fprintf(stderr, "\n");
  for (const scenes::EvalTally& bucket : run.by_aspect) run.tally += bucket;
  run.seconds = watch.ElapsedMs() / 1000;
  return run;
}

// A breakdown of the answers: one line per non-empty bucket (text) and its
// report (JSON), each bucket named under `name_key` and its size (`n`
// `unit`) under `unit`.
struct Bucket {
  std::string name;
  int n = 0;
  const scenes::EvalTally* tally = nullptr;
};

std::string BucketReport(const std::string& title, const char* name_key,
                         const char* unit, absl::Span<const Bucket> buckets,
                         nlohmann::ordered_json* json) {
  std::string text = title + ":\n";
  for (const Bucket& b : buckets) {
    if (b.n == 0) continue;
    const std::vector<scenes::MetricLine> lines = scenes::ReportLines(*b.tally);
    absl::StrAppendFormat(&text, "  %-8s %4d %s: %s\n", b.name, b.n, unit,
                          scenes::FormatValuesLine(lines));
    nlohmann::ordered_json bucket = {{name_key, b.name}, {unit, b.n}};
    bucket.update(scenes::ReportJson(*b.tally, lines));
    json->push_back(std::move(bucket));
  }
  return text;
}

std::string AspectReport(const EvalRun& run, nlohmann::ordered_json* json) {
  std::vector<Bucket> buckets;
  for (size_t b = 0; b < kAspectBuckets; ++b) {
    buckets.push_back({AspectBucketName(static_cast<int>(b)),
                       run.scenes_by_aspect[b], &run.by_aspect[b]});
  }
  return BucketReport("by image aspect (longer side / shorter side)", "aspect",
                      "scenes", buckets, json);
}

std::string AnswersReport(const EvalRun& run, nlohmann::ordered_json* json) {
  const std::vector<Bucket> buckets = {
      {"one", run.questions_by_answers[0], &run.by_answers[0]},
      {"several", run.questions_by_answers[1], &run.by_answers[1]}};
  return BucketReport("detect and point questions by the shapes they ask for",
                      "shapes_asked", "questions", buckets, json);
}

// Which answer of a question about several shapes goes wrong: the first
// (picking the leftmost) or those after it (passing over the shapes already
// answered).
std::string PointPlacesReport(const scenes::PointPlaceTally& t,
                              nlohmann::ordered_json* json) {
  constexpr std::array<const char*, scenes::PointPlaceTally::kPlaces> kNames = {
      "1st", "2nd", "3rd+"};
  std::string text =
      "points of the point questions for several shapes, by their place in "
      "the answer:";
  for (int k = 0; k < scenes::PointPlaceTally::kPlaces; ++k) {
    const double share =
        t.points[k] > 0 ? 100.0 * t.inside[k] / t.points[k] : 0.0;
    absl::StrAppendFormat(&text, "%s %s %.1f%% inside (%d/%d)",
                          k == 0 ? "" : ",", kNames[k], share, t.inside[k],
                          t.points[k]);
    json->push_back({{"place", kNames[k]},
                     {"points", t.points[k]},
                     {"inside", t.inside[k]}});
  }
  absl::StrAppendFormat(&text, "; %d shapes without a point\n", t.missing);
  return text;
}

}  // namespace

absl::Status RunScenesEval(const std::vector<std::string>& args) {
  bool help = false;
  ASSIGN_OR_RETURN(EvalOptions opts, ParseOptions(args, &help));
  if (help) return absl::OkStatus();
  ModelOptions model_options;
  ASSIGN_OR_RETURN(model_options.device, ParseDevice(opts.device_name));
  ASSIGN_OR_RETURN(const DTypeChoice dtype,
                   ChooseDType(opts.dtype_name, model_options.device));
  model_options.dtype = dtype.dtype;
  SetComputeThreads(opts.n_threads);
  ASSIGN_OR_RETURN(ModelBundle bundle,
                   LoadModelBundle(opts.model_dir, opts.preset, model_options));
  std::fprintf(stderr, "%s\n", DescribeBundle(bundle).c_str());

  ASSIGN_OR_RETURN(EvalRun run, Evaluate(bundle, opts));
  const std::vector<scenes::MetricLine> lines = scenes::ReportLines(run.tally);
  std::printf(
      "scenes-eval: %d scenes (seed %d), %d questions, %s, %d threads, "
      "%.1f s\n%s",
      opts.count, opts.seed, run.questions,
      std::string(DTypeLabel(model_options.dtype)).c_str(), opts.n_threads,
      run.seconds, scenes::FormatReport(lines).c_str());
  nlohmann::ordered_json by_aspect = nlohmann::ordered_json::array();
  nlohmann::ordered_json by_answers = nlohmann::ordered_json::array();
  nlohmann::ordered_json point_places = nlohmann::ordered_json::array();
  std::printf(
      "%s\n%s\n%s%s%s",
      scenes::FormatBoxGeometry(run.tally.box_geometry).c_str(),
      scenes::FormatErrorKinds(run.tally.errors).c_str(),
      AspectReport(run, &by_aspect).c_str(),
      AnswersReport(run, &by_answers).c_str(),
      PointPlacesReport(run.several_point_places, &point_places).c_str());
  if (!opts.json_path.empty()) {
    nlohmann::ordered_json report = {
        {"model", opts.model_dir},
        {"random_weights", bundle.random_weights},
        {"scenes", opts.count},
        {"seed", opts.seed},
        {"questions", run.questions},
        {"dtype", std::string(DTypeLabel(model_options.dtype))},
        {"threads", opts.n_threads},
        {"seconds", run.seconds},
    };
    report.update(scenes::ReportJson(run.tally, lines));
    report["by_aspect"] = std::move(by_aspect);
    report["by_shapes_asked"] = std::move(by_answers);
    report["several_points_by_place"] = {
        {"places", std::move(point_places)},
        {"shapes_without_a_point", run.several_point_places.missing}};
    RETURN_IF_ERROR(WriteJsonReport(report, opts.json_path));
  }
  if (opts.require_targets && !scenes::AllTargetsMet(lines)) {
    return absl::FailedPreconditionError("not every target is met");
  }
  if (!opts.require.empty()) {
    const std::vector<std::string> names =
        absl::StrSplit(opts.require, ',', absl::SkipEmpty());
    RETURN_IF_ERROR(scenes::NamedTargetsMet(lines, names));
  }
  return absl::OkStatus();
}

}  // namespace md::bench
