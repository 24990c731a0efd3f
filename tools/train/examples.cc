#include "tools/train/examples.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <numbers>
#include <opencv2/imgproc.hpp>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "model/net/preprocess.h"
#include "model/skills/skills.h"
#include "tools/scenes/random.h"

namespace md::train {
namespace {

using scenes::Scene;
using scenes::SceneTask;
using scenes::TaskKind;

bool IsRegion(TaskKind kind) {
  return kind == TaskKind::kDetect || kind == TaskKind::kPoint;
}

// An even spread over `positions`.
Focus FocusOn(std::vector<int> positions) { return {std::move(positions), {}}; }

// The matching shapes left to right, as fractions of the image: detect
// aims at the bounding box, point at the centre of mass (what
// ScorePoints counts as inside). Their rows attend to the shape's
// CoverageFocus with `coverage`, else evenly to its FocusPositions.
std::vector<RegionTruth> TruthOf(const Scene& scene, const SceneTask& task,
                                 int grid, bool coverage) {
  std::vector<RegionTruth> out;
  for (int index : scenes::LeftToRight(scene)) {
    if (std::find(task.targets.begin(), task.targets.end(), index) ==
        task.targets.end()) {
      continue;
    }
    const scenes::Shape& s = scene.shapes[index];
    const double w = scene.width, h = scene.height;
    Focus focus = coverage ? CoverageFocus(scene, s, grid)
                           : FocusOn(FocusPositions(scene, {index}, grid));
    if (task.kind == TaskKind::kDetect) {
      out.push_back({(s.box.x_min + s.box.x_max) / (2 * w),
                     (s.box.y_min + s.box.y_max) / (2 * h), s.box.width() / w,
                     s.box.height() / h, std::move(focus)});
    } else {
      out.push_back(
          {s.centre_x() / w, s.centre_y() / h, 0, 0, std::move(focus)});
    }
  }
  return out;
}

// A standard normal draw (Box-Muller), portable as ScenePrng is.
double NormalDraw(scenes::ScenePrng& prng) {
  const double u = 1.0 - prng.UniformReal();  // (0, 1]: log is finite
  const double v = prng.UniformReal();
  return std::sqrt(-2.0 * std::log(u)) * std::cos(2.0 * std::numbers::pi * v);
}

// Moves the coordinates and sizes `seq` is fed (not its targets) as
// ExampleOptions::fed_jitter and fed_size_jitter say, with draws from
// `seed`.
void JitterFedRows(uint64_t seed, double coordinate_sigma, double size_sigma,
                   int coordinate_bins, int size_bins, Sequence& seq) {
  scenes::ScenePrng prng(seed);
  auto snapped = [](double v, int bins) {
    return BinValue(ValueBin(v, bins), bins);
  };
  for (InputRow& row : seq.rows) {
    if (row.kind == RowKind::kCoordinate && coordinate_sigma > 0) {
      row.value[0] = snapped(row.value[0] + coordinate_sigma * NormalDraw(prng),
                             coordinate_bins);
    } else if (row.kind == RowKind::kSize && size_sigma > 0) {
      for (float& v : row.value) {
        v = snapped(v * std::exp(size_sigma * NormalDraw(prng)), size_bins);
      }
    }
  }
}

// A region question's objects in an order drawn from the scene's seed and
// the sequence's index in its example (ExampleOptions::any_order).
void ShuffleObjects(uint64_t scene_seed, size_t sequence,
                    std::vector<RegionTruth>& objects) {
  scenes::ScenePrng prng(scenes::SceneSeed(scene_seed, sequence));
  for (size_t i = objects.size(); i > 1; --i) {
    std::swap(objects[i - 1], objects[prng.UniformInt(0, i - 1)]);
  }
}

absl::StatusOr<std::vector<int>> PromptOf(const MoondreamConfig& config,
                                          const Tokenizer& tokenizer,
                                          const SceneTask& task) {
  switch (task.kind) {
    case TaskKind::kCaptionShort:
      return CaptionPrompt(config, CaptionLength::kShort);
    case TaskKind::kCaptionNormal:
      return CaptionPrompt(config, CaptionLength::kNormal);
    default:
      break;
  }
  ASSIGN_OR_RETURN(std::vector<int> text, tokenizer.Encode(task.input));
  if (task.kind == TaskKind::kDetect) return DetectPrompt(config, text);
  if (task.kind == TaskKind::kPoint) return PointPrompt(config, text);
  return QueryPrompt(config, text);
}

void AddToken(Sequence& seq, int token) {
  seq.rows.push_back({RowKind::kToken, token, {0, 0}});
}
int LastRow(const Sequence& seq) {
  return static_cast<int>(seq.rows.size()) - 1;
}

void AddFocus(Sequence& seq, const Focus& focus) {
  if (!focus.positions.empty()) {
    seq.focuses.push_back({LastRow(seq), focus.positions, focus.shares});
  }
}

// The objects answered before the current row, in equal shares.
void AddAnswered(Sequence& seq, absl::Span<const RegionTruth> before) {
  std::vector<Focus> foci;
  for (const RegionTruth& o : before) {
    if (!o.focus.positions.empty()) foci.push_back(o.focus);
  }
  if (foci.empty()) return;
  const Focus merged = MergedFocus(foci);
  seq.answered.push_back({LastRow(seq), merged.positions, merged.shares});
}

// For each token of `answer`, the prefix positions of the shapes its words
// are about: in a caption, the shape of the phrase the token belongs to
// (phrases end at each shape's kind name; a separator belongs to the phrase
// that follows it); otherwise all of `task.targets`. Empty when the
// tokenizer splits a phrase boundary inside a token. With `sink`, a count's
// digit, a caption's separators and its eos row (one entry more) attend to
// SinkAndShapes of the shapes not yet named instead.
absl::StatusOr<std::vector<Focus>> AnswerFocus(const Scene& scene,
                                               const SceneTask& task,
                                               absl::Span<const int> answer,
                                               const Tokenizer& tokenizer,
                                               int grid, bool sink) {
  const bool caption = task.kind == TaskKind::kCaptionShort ||
                       task.kind == TaskKind::kCaptionNormal;
  if (!caption) {
    return std::vector<Focus>(
        answer.size(),
        sink && task.kind == TaskKind::kCount
            ? SinkAndShapes(scene, task.targets, grid)
            : FocusOn(FocusPositions(scene, task.targets, grid)));
  }
  const std::vector<int> order = scenes::LeftToRight(scene);
  std::vector<Focus> focus;
  size_t phrase_end = 0;
  for (size_t k = 0; k < order.size(); ++k) {
    const int index = order[k];
    const absl::string_view kind = scenes::KindName(scene.shapes[index].kind);
    phrase_end = task.answer.find(std::string(kind), phrase_end);
    if (phrase_end == std::string::npos) return std::vector<Focus>();
    phrase_end += kind.size();
    ASSIGN_OR_RETURN(std::vector<int> head,
                     tokenizer.Encode(task.answer.substr(0, phrase_end)));
    if (head.size() > answer.size() ||
        !std::equal(head.begin(), head.end(), answer.begin())) {
      return std::vector<Focus>();
    }
    const size_t separator = focus.size();
    focus.resize(head.size(), FocusOn(FocusPositions(scene, {index}, grid)));
    if (sink && k > 0 && separator < focus.size()) {
      focus[separator] = SinkAndShapes(
          scene, std::vector<int>(order.begin() + k, order.end()), grid);
    }
  }
  if (focus.size() != answer.size()) return std::vector<Focus>();
  if (sink) focus.push_back(SinkAndShapes(scene, {}, grid));
  return focus;
}

}  // namespace

int ValueBin(double v, int n_bins) {
  const double bin = std::nearbyint(v * n_bins);
  return static_cast<int>(std::clamp(bin, 0.0, n_bins - 1.0));
}

float BinValue(int bin, int n_bins) {
  // As model/skills/runs.cc computes it, in float.
  return static_cast<float>(bin) / static_cast<float>(n_bins);
}

std::vector<int> FocusPositions(const Scene& scene,
                                absl::Span<const int> shapes, int grid) {
  std::vector<int> positions;
  for (int index : shapes) {
    const scenes::Shape& s = scene.shapes[index];
    std::vector<bool> covered = CoveredCells(scene, s, grid);
    const double cell_w = static_cast<double>(scene.width) / grid;
    const double cell_h = static_cast<double>(scene.height) / grid;
    const int centre_col =
        std::min(grid - 1, static_cast<int>(s.centre_x() / cell_w));
    const int centre_row =
        std::min(grid - 1, static_cast<int>(s.centre_y() / cell_h));
    covered[centre_row * grid + centre_col] = true;
    for (int cell = 0; cell < grid * grid; ++cell) {
      if (covered[cell]) positions.push_back(1 + cell);
    }
  }
  std::sort(positions.begin(), positions.end());
  positions.erase(std::unique(positions.begin(), positions.end()),
                  positions.end());
  return positions;
}

Focus CoverageFocus(const Scene& scene, const scenes::Shape& shape, int grid) {
  const double cell_w = static_cast<double>(scene.width) / grid;
  const double cell_h = static_cast<double>(scene.height) / grid;
  const double step = 1.0 / kCoverageSamples;
  // Only the cells the shape's box reaches can hold any of it.
  const int col0 = std::max(0, static_cast<int>(shape.box.x_min / cell_w));
  const int col1 =
      std::min(grid - 1, static_cast<int>(shape.box.x_max / cell_w));
  const int row0 = std::max(0, static_cast<int>(shape.box.y_min / cell_h));
  const int row1 =
      std::min(grid - 1, static_cast<int>(shape.box.y_max / cell_h));
  Focus focus;
  std::vector<int> inside;
  int total = 0;
  for (int row = row0; row <= row1; ++row) {
    for (int col = col0; col <= col1; ++col) {
      int n = 0;
      for (int i = 0; i < kCoverageSamples; ++i) {
        for (int j = 0; j < kCoverageSamples; ++j) {
          n += scenes::ShapeContains(shape, (col + (j + 0.5) * step) * cell_w,
                                     (row + (i + 0.5) * step) * cell_h);
        }
      }
      if (n == 0) continue;
      focus.positions.push_back(1 + row * grid + col);
      inside.push_back(n);
      total += n;
    }
  }
  for (int n : inside) {
    focus.shares.push_back(static_cast<float>(n) / static_cast<float>(total));
  }
  return focus;
}

Focus SinkAndShapes(const Scene& scene, absl::Span<const int> shapes,
                    int grid) {
  const float share = 1.0f / static_cast<float>(shapes.size() + 1);
  Focus focus{{0}, {share}};
  for (int index : shapes) {
    const std::vector<int> cells = FocusPositions(scene, {index}, grid);
    for (int position : cells) {
      focus.positions.push_back(position);
      focus.shares.push_back(share / static_cast<float>(cells.size()));
    }
  }
  return focus;
}

namespace {

// 0 for background cells, else 1 + label(the shape covering the cell).
template <typename Label>
std::vector<int> PatchLabels(const Scene& scene, int grid, Label label) {
  std::vector<int> labels(static_cast<size_t>(grid) * grid, 0);
  for (const scenes::Shape& s : scene.shapes) {
    const std::vector<bool> covered = CoveredCells(scene, s, grid);
    for (int cell = 0; cell < grid * grid; ++cell) {
      if (covered[cell]) labels[cell] = 1 + label(s);
    }
  }
  return labels;
}

}  // namespace

std::vector<bool> CoveredCells(const Scene& scene, const scenes::Shape& shape,
                               int grid) {
  std::vector<bool> covered(static_cast<size_t>(grid) * grid, false);
  const double cell_w = static_cast<double>(scene.width) / grid;
  const double cell_h = static_cast<double>(scene.height) / grid;
  for (int row = 0; row < grid; ++row) {
    for (int col = 0; col < grid; ++col) {
      covered[row * grid + col] = scenes::ShapeContains(
          shape, (col + 0.5) * cell_w, (row + 0.5) * cell_h);
    }
  }
  return covered;
}

std::vector<int> PatchKinds(const Scene& scene, int grid) {
  return PatchLabels(scene, grid, [](const scenes::Shape& s) {
    return static_cast<int>(s.kind);
  });
}

std::vector<int> PatchColours(const Scene& scene, int grid) {
  return PatchLabels(scene, grid, [](const scenes::Shape& s) {
    return static_cast<int>(s.colour);
  });
}

std::vector<int> PatchRanks(const Scene& scene, int grid, bool with_colour) {
  std::vector<int> rank(scene.shapes.size(), 0);
  const std::vector<int> order = scenes::LeftToRight(scene);
  for (size_t i = 0; i < order.size(); ++i) {
    const scenes::Shape& s = scene.shapes[order[i]];
    for (size_t j = 0; j < i; ++j) {
      const scenes::Shape& left = scene.shapes[order[j]];
      rank[order[i]] +=
          left.kind == s.kind && (!with_colour || left.colour == s.colour);
    }
  }
  return PatchLabels(scene, grid, [&](const scenes::Shape& s) {
    return rank[static_cast<size_t>(&s - scene.shapes.data())];
  });
}

Scene TrainingScene(uint64_t base_seed, uint64_t index, double wide_share,
                    double min_aspect) {
  const uint64_t seed = scenes::SceneSeed(base_seed, index);
  Scene scene = scenes::GenerateScene(seed);
  if (wide_share <= 0) return scene;
  // Salted so that the choice is not a function of the scene drawn.
  constexpr uint64_t kWideSalt = 0x57494445ull;  // "WIDE"
  scenes::ScenePrng choose(scenes::SceneSeed(seed, kWideSalt));
  if (choose.UniformReal() >= wide_share) return scene;
  // About 2 in 5 of the specification's scenes have an aspect of 1.5 or
  // more, 1 in 5 of 1.8; the bound only keeps a bad min_aspect from looping.
  constexpr int kMaxDraws = 10000;
  for (int k = 1; k <= kMaxDraws && scenes::SceneAspect(scene) < min_aspect;
       ++k) {
    scene = scenes::GenerateScene(scenes::SceneSeed(seed, k));
  }
  return scene;
}

scenes::Scene ShrinkScene(const Scene& scene, int max_side) {
  const int longer = std::max(scene.width, scene.height);
  if (longer <= max_side) return scene;
  const double scale = static_cast<double>(max_side) / longer;
  auto scaled = [scale](int v) {
    return static_cast<int>(std::lround(v * scale));
  };
  Scene small = scene;
  small.width = std::min(max_side, scaled(scene.width));
  small.height = std::min(max_side, scaled(scene.height));
  for (scenes::Shape& s : small.shapes) {
    s.box = {scaled(s.box.x_min), scaled(s.box.y_min), scaled(s.box.x_max),
             scaled(s.box.y_max)};
  }
  return small;
}

std::vector<PatchBox> PatchBoxes(const Scene& scene, int grid) {
  std::vector<PatchBox> boxes(static_cast<size_t>(grid) * grid);
  const double w = scene.width, h = scene.height;
  for (const scenes::Shape& s : scene.shapes) {
    const std::vector<bool> covered = CoveredCells(scene, s, grid);
    const PatchBox box{
        {static_cast<float>((s.box.x_min + s.box.x_max) / (2 * w)),
         static_cast<float>((s.box.y_min + s.box.y_max) / (2 * h)),
         static_cast<float>(s.box.width() / w),
         static_cast<float>(s.box.height() / h)}};
    for (int cell = 0; cell < grid * grid; ++cell) {
      if (covered[cell]) boxes[cell] = box;
    }
  }
  return boxes;
}

PatchTruth ScenePatchTruth(const Scene& scene, int grid) {
  return {PatchKinds(scene, grid), PatchColours(scene, grid),
          PatchBoxes(scene, grid), PatchRanks(scene, grid, false),
          PatchRanks(scene, grid, true)};
}

Sequence TextSequence(TaskKind kind, absl::Span<const int> prompt,
                      absl::Span<const int> answer, int eos_id,
                      absl::Span<const Focus> focus) {
  Sequence seq;
  seq.kind = kind;
  for (int t : prompt) AddToken(seq, t);
  for (size_t i = 0; i < answer.size(); ++i) {
    const int t = answer[i];
    seq.tokens.push_back({LastRow(seq), t});
    if (i < focus.size()) AddFocus(seq, focus[i]);
    AddToken(seq, t);
  }
  seq.tokens.push_back({LastRow(seq), eos_id});
  if (focus.size() > answer.size()) AddFocus(seq, focus[answer.size()]);
  return seq;
}

Focus MergedFocus(absl::Span<const Focus> foci) {
  std::map<int, double> share_of;
  for (const Focus& f : foci) {
    for (size_t j = 0; j < f.positions.size(); ++j) {
      const double share = f.shares.empty() ? 1.0 / f.positions.size()
                                            : static_cast<double>(f.shares[j]);
      share_of[f.positions[j]] += share / foci.size();
    }
  }
  Focus merged;
  for (const auto& [position, share] : share_of) {
    merged.positions.push_back(position);
    merged.shares.push_back(static_cast<float>(share));
  }
  return merged;
}

Sequence RegionSequence(TaskKind kind, absl::Span<const int> prompt,
                        absl::Span<const RegionTruth> objects, int eos_id,
                        int coordinate_bins, int size_bins,
                        const Focus& stop_focus, bool any_order,
                        bool answered) {
  (void)eos_id;  // stop targets name eos by meaning, not id
  Sequence seq;
  seq.kind = kind;
  for (int t : prompt) AddToken(seq, t);
  for (size_t k = 0; k < objects.size(); ++k) {
    const RegionTruth& o = objects[k];
    // The row that decides "another object" also gives its x.
    const int x_bin = ValueBin(o.x, coordinate_bins);
    const int y_bin = ValueBin(o.y, coordinate_bins);
    seq.stops.push_back({LastRow(seq), false});
    seq.coordinates.push_back({LastRow(seq), x_bin});
    if (answered && k > 0) AddAnswered(seq, objects.first(k));
    std::vector<Focus> open = {o.focus};
    for (size_t j = k + 1; any_order && j < objects.size(); ++j) {
      seq.coordinates.back().also.push_back(
          ValueBin(objects[j].x, coordinate_bins));
      open.push_back(objects[j].focus);
    }
    AddFocus(seq, open.size() == 1 ? o.focus : MergedFocus(open));
    seq.rows.push_back(
        {RowKind::kCoordinate, 0, {BinValue(x_bin, coordinate_bins), 0}});
    seq.coordinates.push_back({LastRow(seq), y_bin});
    AddFocus(seq, o.focus);
    seq.rows.push_back(
        {RowKind::kCoordinate, 0, {BinValue(y_bin, coordinate_bins), 0}});
    if (kind == TaskKind::kDetect) {
      AddFocus(seq, o.focus);
      const int w_bin = ValueBin(o.w, size_bins);
      const int h_bin = ValueBin(o.h, size_bins);
      seq.sizes.push_back({LastRow(seq), w_bin, h_bin});
      seq.rows.push_back(
          {RowKind::kSize,
           0,
           {BinValue(w_bin, size_bins), BinValue(h_bin, size_bins)}});
    }
  }
  seq.stops.push_back({LastRow(seq), true});
  AddFocus(seq, stop_focus);
  if (answered && !objects.empty()) AddAnswered(seq, objects);
  return seq;
}

absl::StatusOr<ImageCrops> SceneCrops(const Scene& scene,
                                      const VisionConfig& config) {
  cv::Mat rgb;
  cv::cvtColor(scenes::RenderScene(scene), rgb, cv::COLOR_BGR2RGB);
  if (!rgb.isContinuous()) rgb = rgb.clone();
  RgbImage image;
  image.width = rgb.cols;
  image.height = rgb.rows;
  image.pixels_HWC.resize(image.n_pixels() * 3);
  std::memcpy(image.pixels_HWC.data(), rgb.data, image.pixels_HWC.size());
  return PrepareImage(image, config);
}

absl::StatusOr<SceneExample> MakeSceneExample(const Scene& scene,
                                              const MoondreamConfig& config,
                                              const Tokenizer& tokenizer,
                                              const ExampleOptions& options) {
  SceneExample example;
  example.scene = scene;
  ASSIGN_OR_RETURN(example.crops, SceneCrops(scene, config.vision));
  const int eos = config.tokenizer.eos_id;
  const int coordinate_bins = config.region.coord_out_dim;
  const int size_bins = config.region.size_out_dim / 2;
  const int grid = static_cast<int>(config.vision.grid());
  example.patches = ScenePatchTruth(scene, grid);
  for (const SceneTask& task : scenes::SceneTasks(scene)) {
    ASSIGN_OR_RETURN(std::vector<int> prompt,
                     PromptOf(config, tokenizer, task));
    if (IsRegion(task.kind)) {
      std::vector<RegionTruth> truth =
          TruthOf(scene, task, grid, options.focus_coverage);
      const bool any_order = options.any_order && truth.size() > 1;
      const int repeats =
          task.targets.size() > 1 ? std::max(1, options.several_repeats) : 1;
      for (int r = 0; r < repeats; ++r) {
        if (any_order) {
          ShuffleObjects(scene.seed, example.sequences.size(), truth);
        }
        example.sequences.push_back(RegionSequence(
            task.kind, prompt, truth, eos, coordinate_bins, size_bins,
            options.focus_sink && !options.free_region_stop
                ? SinkAndShapes(scene, {}, grid)
                : Focus(),
            any_order, options.answered_focus));
        if (options.fed_jitter > 0 || options.fed_size_jitter > 0) {
          // Its own stream: ShuffleObjects draws from SceneSeed(seed, i).
          JitterFedRows(
              scenes::SceneSeed(~scene.seed, example.sequences.size()),
              options.fed_jitter, options.fed_size_jitter, coordinate_bins,
              size_bins, example.sequences.back());
        }
      }
    } else {
      ASSIGN_OR_RETURN(std::vector<int> answer, tokenizer.Encode(task.answer));
      ASSIGN_OR_RETURN(std::vector<Focus> focus,
                       AnswerFocus(scene, task, answer, tokenizer, grid,
                                   options.focus_sink));
      example.sequences.push_back(
          TextSequence(task.kind, prompt, answer, eos, focus));
    }
  }
  return example;
}

}  // namespace md::train
