#include "tools/scenes/metrics.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace md::scenes {
namespace {

double Ratio(int numerator, int denominator) {
  return denominator == 0 ? 0.0 : static_cast<double>(numerator) / denominator;
}

double Area(const Box& b) {
  return std::max(0.0, b.x_max - b.x_min) * std::max(0.0, b.y_max - b.y_min);
}

bool InsideAnyTarget(const Scene& scene, absl::Span<const int> targets,
                     double x, double y) {
  for (int t : targets) {
    if (ShapeContains(scene.shapes[t], x, y)) return true;
  }
  return false;
}

MetricLine TextLine(std::string name, const TextTally& tally, double target) {
  MetricLine line;
  line.name = std::move(name);
  line.percent = true;
  line.measured = tally.asked > 0;
  line.value = 100 * Ratio(tally.correct, tally.asked);
  line.has_target = true;
  line.target = target;
  line.detail = absl::StrCat(tally.correct, "/", tally.asked, " exact");
  return line;
}

MetricLine FractionLine(std::string name, double value, bool measured,
                        std::string detail) {
  MetricLine line;
  line.name = std::move(name);
  line.value = value;
  line.measured = measured;
  line.detail = std::move(detail);
  return line;
}

MetricLine WithTarget(MetricLine line, double target) {
  line.has_target = true;
  line.target = target;
  return line;
}

void DecidePass(MetricLine& line) {
  line.pass = line.has_target && line.measured && line.value >= line.target;
}

std::string ValueText(const MetricLine& line) {
  if (!line.measured) return "n/a";
  return line.percent ? absl::StrFormat("%.1f%%", line.value)
                      : absl::StrFormat("%.3f", line.value);
}

std::string TargetText(const MetricLine& line) {
  if (!line.has_target) return "";
  return line.percent ? absl::StrFormat(">= %.0f%%", line.target)
                      : absl::StrFormat(">= %.2f", line.target);
}

std::string VerdictText(const MetricLine& line) {
  if (!line.has_target) return "";
  if (!line.measured) return "n/a";
  return line.pass ? "pass" : "FAIL";
}

}  // namespace

double DetectTally::precision() const {
  return Ratio(true_positives, true_positives + false_positives);
}

double DetectTally::recall() const {
  return Ratio(true_positives, true_positives + false_negatives);
}

double DetectTally::f1() const {
  const double p = precision(), r = recall();
  return p + r == 0 ? 0.0 : 2 * p * r / (p + r);
}

Box NormalizedBox(const Scene& scene, const Shape& shape) {
  return {static_cast<double>(shape.box.x_min) / scene.width,
          static_cast<double>(shape.box.y_min) / scene.height,
          static_cast<double>(shape.box.x_max) / scene.width,
          static_cast<double>(shape.box.y_max) / scene.height};
}

TextTally& TextTally::operator+=(const TextTally& other) {
  asked += other.asked;
  correct += other.correct;
  return *this;
}

EvalTally& EvalTally::operator+=(const EvalTally& other) {
  count += other.count;
  colour += other.colour;
  shape += other.shape;
  caption_short += other.caption_short;
  caption_normal += other.caption_normal;
  detect += other.detect;
  point += other.point;
  box_geometry += other.box_geometry;
  errors += other.errors;
  return *this;
}

DetectTally& DetectTally::operator+=(const DetectTally& other) {
  true_positives += other.true_positives;
  false_positives += other.false_positives;
  false_negatives += other.false_negatives;
  return *this;
}

PointTally& PointTally::operator+=(const PointTally& other) {
  points += other.points;
  inside += other.inside;
  targets += other.targets;
  reached += other.reached;
  return *this;
}

bool AnswerMatches(absl::string_view answer, absl::string_view expected) {
  return absl::StripAsciiWhitespace(answer) ==
         absl::StripAsciiWhitespace(expected);
}

double Iou(const Box& a, const Box& b) {
  const Box overlap{std::max(a.x_min, b.x_min), std::max(a.y_min, b.y_min),
                    std::min(a.x_max, b.x_max), std::min(a.y_max, b.y_max)};
  const double shared = Area(overlap);
  const double either = Area(a) + Area(b) - shared;
  return either <= 0 ? 0.0 : shared / either;
}

std::vector<BoxMatch> MatchBoxes(absl::Span<const Box> answers,
                                 absl::Span<const Box> targets,
                                 double min_iou) {
  std::vector<BoxMatch> candidates;
  for (size_t a = 0; a < answers.size(); ++a) {
    for (size_t t = 0; t < targets.size(); ++t) {
      const double iou = Iou(answers[a], targets[t]);
      if (iou >= min_iou && iou > 0) candidates.push_back({iou, a, t});
    }
  }
  std::stable_sort(
      candidates.begin(), candidates.end(),
      [](const BoxMatch& x, const BoxMatch& y) { return x.iou > y.iou; });
  std::vector<bool> answer_used(answers.size()), target_used(targets.size());
  std::vector<BoxMatch> matches;
  for (const BoxMatch& m : candidates) {
    if (answer_used[m.answer] || target_used[m.target]) continue;
    answer_used[m.answer] = target_used[m.target] = true;
    matches.push_back(m);
  }
  return matches;
}

std::vector<Box> TargetBoxes(const Scene& scene,
                             absl::Span<const int> targets) {
  std::vector<Box> boxes;
  for (int t : targets) boxes.push_back(NormalizedBox(scene, scene.shapes[t]));
  return boxes;
}

DetectTally ScoreDetections(const Scene& scene, absl::Span<const int> targets,
                            absl::Span<const Box> predicted) {
  const int matched = static_cast<int>(
      MatchBoxes(predicted, TargetBoxes(scene, targets), kMatchIou).size());
  DetectTally tally;
  tally.true_positives = matched;
  tally.false_positives = static_cast<int>(predicted.size()) - matched;
  tally.false_negatives = static_cast<int>(targets.size()) - matched;
  return tally;
}

PointTally ScorePoints(const Scene& scene, absl::Span<const int> targets,
                       absl::Span<const Point> predicted) {
  PointTally tally;
  tally.points = static_cast<int>(predicted.size());
  tally.targets = static_cast<int>(targets.size());
  for (const Point& p : predicted) {
    if (InsideAnyTarget(scene, targets, p.x * scene.width,
                        p.y * scene.height)) {
      ++tally.inside;
    }
  }
  for (int t : targets) {
    const bool reached =
        std::any_of(predicted.begin(), predicted.end(), [&](const Point& p) {
          return ShapeContains(scene.shapes[t], p.x * scene.width,
                               p.y * scene.height);
        });
    if (reached) ++tally.reached;
  }
  return tally;
}

PointPlaceTally& PointPlaceTally::operator+=(const PointPlaceTally& other) {
  for (int k = 0; k < kPlaces; ++k) {
    points[k] += other.points[k];
    inside[k] += other.inside[k];
  }
  missing += other.missing;
  return *this;
}

PointPlaceTally ScorePointPlaces(const Scene& scene,
                                 absl::Span<const int> targets,
                                 absl::Span<const Point> predicted) {
  PointPlaceTally tally;
  for (size_t i = 0; i < predicted.size(); ++i) {
    const int place =
        std::min(static_cast<int>(i), PointPlaceTally::kPlaces - 1);
    ++tally.points[place];
    tally.inside[place] +=
        InsideAnyTarget(scene, targets, predicted[i].x * scene.width,
                        predicted[i].y * scene.height);
  }
  tally.missing = std::max(
      0, static_cast<int>(targets.size()) - static_cast<int>(predicted.size()));
  return tally;
}

TextTally* EvalTally::TextFor(TaskKind kind) {
  switch (kind) {
    case TaskKind::kCount:
      return &count;
    case TaskKind::kColour:
      return &colour;
    case TaskKind::kShape:
      return &shape;
    case TaskKind::kCaptionShort:
      return &caption_short;
    case TaskKind::kCaptionNormal:
      return &caption_normal;
    case TaskKind::kDetect:
    case TaskKind::kPoint:
      return nullptr;
  }
  return nullptr;
}

std::vector<MetricLine> ReportLines(const EvalTally& tally) {
  const DetectTally& d = tally.detect;
  const PointTally& p = tally.point;
  const bool detect_measured =
      d.true_positives + d.false_positives + d.false_negatives > 0;
  const std::string detect_counts =
      absl::StrCat("tp ", d.true_positives, ", fp ", d.false_positives, ", fn ",
                   d.false_negatives);
  MetricLine point_inside =
      WithTarget(FractionLine("point inside", 100 * Ratio(p.inside, p.points),
                              p.points > 0,
                              absl::StrCat(p.inside, "/", p.points, " points")),
                 85);
  point_inside.percent = true;
  std::vector<MetricLine> lines = {
      TextLine("count", tally.count, 90),
      TextLine("color", tally.colour, 90),
      TextLine("shape", tally.shape, 90),
      TextLine("caption short", tally.caption_short, 70),
      TextLine("caption normal", tally.caption_normal, 70),
      FractionLine("detect precision", d.precision(), detect_measured,
                   detect_counts),
      FractionLine("detect recall", d.recall(), detect_measured, detect_counts),
      WithTarget(
          FractionLine("detect F1", d.f1(), detect_measured, detect_counts),
          0.8),
      point_inside,
      WithTarget(
          FractionLine(
              "point recall", Ratio(p.reached, p.targets), p.targets > 0,
              absl::StrCat(p.reached, "/", p.targets, " shapes reached")),
          0.8),
  };
  for (MetricLine& line : lines) DecidePass(line);
  return lines;
}

bool AllTargetsMet(absl::Span<const MetricLine> lines) {
  return std::all_of(lines.begin(), lines.end(), [](const MetricLine& line) {
    return !line.has_target || line.pass;
  });
}

absl::Status NamedTargetsMet(absl::Span<const MetricLine> lines,
                             absl::Span<const std::string> names) {
  std::vector<std::string> failing;
  for (const std::string& name : names) {
    const auto line =
        std::find_if(lines.begin(), lines.end(),
                     [&](const MetricLine& l) { return l.name == name; });
    if (line == lines.end() || !line->has_target) {
      return absl::InvalidArgumentError(
          absl::StrCat("no metric with a target is called '", name, "'"));
    }
    if (!line->pass) failing.push_back(name);
  }
  if (failing.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("required targets not met: ", absl::StrJoin(failing, ", ")));
}

std::string FormatReport(absl::Span<const MetricLine> lines) {
  std::string out = absl::StrFormat("%-17s %8s %9s %-6s %s\n", "metric",
                                    "value", "target", "result", "counts");
  for (const MetricLine& line : lines) {
    out +=
        absl::StrFormat("%-17s %8s %9s %-6s %s\n", line.name, ValueText(line),
                        TargetText(line), VerdictText(line), line.detail);
  }
  out += AllTargetsMet(lines) ? "all targets met\n" : "targets NOT all met\n";
  return out;
}

std::string FormatValuesLine(absl::Span<const MetricLine> lines) {
  std::vector<std::string> parts;
  for (const MetricLine& line : lines) {
    if (!line.measured || !line.has_target) continue;
    parts.push_back(absl::StrCat(line.name, " ", ValueText(line)));
  }
  return absl::StrJoin(parts, ", ");
}

nlohmann::ordered_json ReportJson(const EvalTally& tally,
                                  absl::Span<const MetricLine> lines) {
  nlohmann::ordered_json metrics = nlohmann::ordered_json::object();
  for (const MetricLine& line : lines) {
    nlohmann::ordered_json entry = {{"value", line.value},
                                    {"unit", line.percent ? "%" : "fraction"},
                                    {"measured", line.measured},
                                    {"detail", line.detail}};
    if (line.has_target) {
      entry["target"] = line.target;
      entry["pass"] = line.pass;
    }
    metrics[line.name] = std::move(entry);
  }
  auto text = [](const TextTally& t) {
    return nlohmann::ordered_json{{"asked", t.asked}, {"correct", t.correct}};
  };
  const DetectTally& d = tally.detect;
  const PointTally& p = tally.point;
  return {
      {"metrics", std::move(metrics)},
      {"all_pass", AllTargetsMet(lines)},
      {"tallies",
       {{"count", text(tally.count)},
        {"color", text(tally.colour)},
        {"shape", text(tally.shape)},
        {"caption short", text(tally.caption_short)},
        {"caption normal", text(tally.caption_normal)},
        {"detect",
         {{"true_positives", d.true_positives},
          {"false_positives", d.false_positives},
          {"false_negatives", d.false_negatives}}},
        {"point",
         {{"points", p.points},
          {"inside", p.inside},
          {"targets", p.targets},
          {"reached", p.reached}}}}},
      {"box_geometry", BoxGeometryJson(tally.box_geometry)},
      {"error_kinds", ErrorKindsJson(tally.errors)},
  };
}

}  // namespace md::scenes
