#include "tools/train/feature_probe.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <numeric>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "base/status_macros.h"
#include "model/io/tensor_io.h"
#include "model/net/moondream.h"
#include "model/net/region.h"
#include "model/tokenizer/tokenizer.h"
#include "tools/scenes/metrics.h"
#include "tools/scenes/random.h"
#include "tools/scenes/scene.h"
#include "tools/train/examples.h"
#include "tools/train/train_forward.h"
#include "tools/train/trainer.h"

namespace md::train {
namespace {

using Targets = std::array<double, kProbeTargets>;

// One readout's rows as they are gathered: features, targets, and whether
// the row's scene is on the fitting side.
struct ProbeRows {
  explicit ProbeRows(std::string readout) : name(std::move(readout)) {}

  std::string name;
  std::vector<at::Tensor> features_F;
  std::vector<Targets> targets;
  std::vector<bool> fit;

  void Add(at::Tensor features, const Targets& t, bool on_fit_side) {
    features_F.push_back(std::move(features));
    targets.push_back(t);
    fit.push_back(on_fit_side);
  }
};

// The shape's box as detect answers it (NormalizedBox: the image's
// fractions), as centre, size and log aspect.
Targets BoxTargets(const scenes::Scene& scene, const scenes::Shape& s) {
  const Box b = scenes::NormalizedBox(scene, s);
  const double w = b.x_max - b.x_min, h = b.y_max - b.y_min;
  return {(b.x_min + b.x_max) / 2, (b.y_min + b.y_max) / 2, w, h,
          std::log(w / h)};
}

// What the covered cells alone say (in grid units scaled to [0, 1]): the
// first and last column and row, the cell count, the extents and their
// logarithms, the mean column and row.
at::Tensor MaskFeatures(const std::vector<int64_t>& cells, int grid) {
  int c0 = grid, c1 = -1, r0 = grid, r1 = -1;
  double col_sum = 0, row_sum = 0;
  for (int64_t cell : cells) {
    const int row = static_cast<int>(cell / grid);
    const int col = static_cast<int>(cell % grid);
    c0 = std::min(c0, col);
    c1 = std::max(c1, col);
    r0 = std::min(r0, row);
    r1 = std::max(r1, row);
    col_sum += col;
    row_sum += row;
  }
  const double g = grid, n = static_cast<double>(cells.size());
  const double cols = c1 - c0 + 1, rows = r1 - r0 + 1;
  return at::tensor({c0 / g, c1 / g, r0 / g, r1 / g, n / (g * g), cols / g,
                     rows / g, std::log(cols), std::log(rows),
                     std::log(cols / rows), col_sum / n / g, row_sum / n / g},
                    at::kDouble);
}

// The decoder over the prefix and `rows_BTC` (EmbedSequences), fp32 out:
// the rows' last residual stream, where the region head reads it. `taps`
// receives the last text layer's first head (the head the trainer's focus
// loss points at a shape): its values over the prefix, what that head can
// gather from the image after the decoder's earlier layers, and where each
// row looks.
at::Tensor DecoderRows(const Model& model, const at::Tensor& image_PC,
                       const at::Tensor& rows_BTC, const RotaryTable& rotary,
                       FocusTaps& taps) {
  const MoondreamConfig& config = model.config();
  const Weights& w = model.weights();
  const at::Tensor prefix_PC = PrefixEmbeddings(image_PC, w, config);
  at::Tensor out_BTC = DecoderForward(prefix_PC, rows_BTC.to(prefix_PC.dtype()),
                                      w.text, config.text, rotary, &taps);
  taps.values_PD = taps.values_PD.to(at::kFloat);
  taps.probs_BTP = taps.probs_BTP.to(at::kFloat);
  return out_BTC.to(at::kFloat);
}

// The scene's detect questions, teacher-forced, as the trainer lays them
// out (examples.h); empty without a tokenizer.
absl::StatusOr<std::vector<Sequence>> DetectSequences(
    const scenes::Scene& scene, const Model& model,
    const Tokenizer* tokenizer) {
  std::vector<Sequence> detects;
  if (tokenizer == nullptr) return detects;
  ASSIGN_OR_RETURN(SceneExample example,
                   MakeSceneExample(scene, model.config(), *tokenizer));
  for (Sequence& seq : example.sequences) {
    if (!seq.sizes.empty()) detects.push_back(std::move(seq));
  }
  return detects;
}

// What the region head itself answers on the teacher-forced rows (x on the
// x row, y on the y row, w and h on the size row, argmax bins as the
// skills take them) next to the truth: scored directly, nothing fitted.
struct HeadAnswers {
  std::vector<Targets> answers, truths;
  std::vector<bool> fit;
};

int ArgmaxBin(const at::Tensor& logits_X) {
  return static_cast<int>(logits_X.argmax().item<int64_t>());
}

// R² of the answers themselves on the scored (odd) scenes, per target.
FeatureReadout ScoreAnswers(const HeadAnswers& a, std::string name) {
  FeatureReadout out;
  out.name = std::move(name);
  out.rows = static_cast<int>(a.truths.size());
  for (int t = 0; t < kProbeTargets; ++t) {
    double sum = 0, n = 0;
    for (size_t i = 0; i < a.truths.size(); ++i) {
      if (!a.fit[i]) sum += a.truths[i][t], ++n;
    }
    if (n < 2) return out;
    double residual = 0, variance = 0;
    for (size_t i = 0; i < a.truths.size(); ++i) {
      if (a.fit[i]) continue;
      residual += std::pow(a.answers[i][t] - a.truths[i][t], 2);
      variance += std::pow(a.truths[i][t] - sum / n, 2);
    }
    out.r2[t] = variance > 0 ? 1 - residual / variance : 0;
  }
  return out;
}

// One row's attention `probs_P` (over the prefix) split: on `target`
// (prefix positions), on `other_answers` (the cells of the other shapes the
// question asks for; of them on `answered`, those answered before), on the
// other positions of `shape_cells` (every shape's), on bos, on the rest of
// the image, and off the prefix (the text rows).
FeatureProbeReport::FocusMass RowFocusMass(const at::Tensor& probs_P,
                                           absl::Span<const int> target,
                                           absl::Span<const int> other_answers,
                                           absl::Span<const int> answered,
                                           absl::Span<const int> shape_cells) {
  FeatureProbeReport::FocusMass m;
  const at::Tensor p = probs_P.to(at::kDouble).contiguous();
  const double* mass = p.data_ptr<double>();
  const int64_t n = p.size(0);
  std::vector<bool> counted(static_cast<size_t>(n), false);
  double prefix = 0;
  for (int64_t i = 0; i < n; ++i) prefix += mass[i];
  for (int position : target) {
    m.shape += mass[position];
    counted[position] = true;
  }
  for (int position : answered) {
    if (!counted[position]) m.answered += mass[position];
  }
  for (int position : other_answers) {
    if (counted[position]) continue;
    m.other_answers += mass[position];
    counted[position] = true;
  }
  for (int position : shape_cells) {
    if (counted[position]) continue;
    m.other_shapes += mass[position];
    counted[position] = true;
  }
  m.bos += mass[0];
  counted[0] = true;
  for (int64_t i = 0; i < n; ++i) {
    if (!counted[i]) m.image_rest += mass[i];
  }
  m.text += 1 - prefix;
  return m;
}

// The focus positions of `seq`'s objects other than the one whose x row is
// `x_row` (with `before_only`, of those answered before it): the cells of
// the other shapes its question asks for.
std::vector<int> OtherAnswersCells(const Sequence& seq, int x_row,
                                   bool before_only = false) {
  std::vector<int> cells;
  for (size_t k = 0; k < seq.sizes.size(); ++k) {
    const int row = seq.coordinates[2 * k].row;
    if (row == x_row || (before_only && row > x_row)) continue;
    for (const FocusTarget& f : seq.focuses) {
      if (f.row == row)
        cells.insert(cells.end(), f.positions.begin(), f.positions.end());
    }
  }
  return cells;
}

// Every share of `m`, in one order.
std::array<double*, 7> Shares(FeatureProbeReport::FocusMass& m) {
  return {&m.shape, &m.other_answers, &m.other_shapes, &m.image_rest,
          &m.bos,   &m.text,          &m.answered};
}

// Adds one row's shares to `sum` and counts the row.
void AddRow(FeatureProbeReport::FocusMass row,
            FeatureProbeReport::FocusMass& sum, int& rows) {
  const std::array<double*, 7> from = Shares(row), to = Shares(sum);
  for (size_t i = 0; i < to.size(); ++i) *to[i] += *from[i];
  ++rows;
}

// The sums of `rows` rows' shares, as their means.
void MeanOver(int rows, FeatureProbeReport::FocusMass& m) {
  if (rows == 0) return;
  for (double* share : Shares(m)) *share /= rows;
}

// `probs_P` kept only on `positions` and scaled to sum to 1: what a head
// that attended as this one does within the shape, and nowhere else, would
// gather.
at::Tensor OnlyOn(const at::Tensor& probs_P, absl::Span<const int> positions) {
  const at::Tensor index = at::tensor(
      std::vector<int64_t>(positions.begin(), positions.end()), at::kLong);
  const at::Tensor kept_P = at::zeros_like(probs_P).index_copy_(
      0, index, probs_P.index_select(0, index));
  return kept_P / kept_P.sum().clamp_min(1e-30);
}

// The readouts of the detect rows, each answered object's: the residual
// streams at its size, x and y rows, what the focus head gathered on the size
// and x rows, and the region head's answers.
struct DetectReadouts {
  ProbeRows size_row{"detect size row"};
  ProbeRows size_gathered{"size row, head gathered"};
  ProbeRows x_gathered{"x row, head gathered"};
  ProbeRows x_gathered_shape{"x row, gathered on shape"};
  ProbeRows x_row{"detect x row"};
  ProbeRows y_row{"detect y row"};
  HeadAnswers answers;
  HeadAnswers later_answers;  // of the second and later objects alone
};

// Adds each answered object's rows in `detects` to `out`, with the object's
// box as the sequence's targets say it (bins to values), and where the focus
// head's attention goes on its x row to `report` (`shape_cells`: every
// shape's FocusPositions).
void AddDetectRows(absl::Span<const Sequence> detects,
                   const at::Tensor& out_BTC, const FocusTaps& taps,
                   const Model& model, bool fit_side,
                   absl::Span<const int> shape_cells, DetectReadouts& out,
                   FeatureProbeReport& report) {
  const MoondreamConfig& config = model.config();
  const RegionWeights& region = model.weights().region;
  const at::ScalarType dtype = region.coord_decoder.fc1.weight.scalar_type();
  const int coordinate_bins = config.region.coord_out_dim;
  const int size_bins = config.region.size_out_dim / 2;
  auto row_of = [&](int64_t b, int row) {
    return out_BTC[b][row].unsqueeze(0).to(dtype);
  };
  for (size_t i = 0; i < detects.size(); ++i) {
    const Sequence& seq = detects[i];
    for (size_t k = 0; k < seq.sizes.size(); ++k) {
      const SizeTarget& size = seq.sizes[k];
      const double w = BinValue(size.w_bin, size_bins);
      const double h = BinValue(size.h_bin, size_bins);
      const Targets t = {
          BinValue(seq.coordinates[2 * k].bin, coordinate_bins),
          BinValue(seq.coordinates[2 * k + 1].bin, coordinate_bins), w, h,
          std::log(w / h)};
      const int64_t b = static_cast<int64_t>(i);
      const int x_row = seq.coordinates[2 * k].row;
      const int y_row = seq.coordinates[2 * k + 1].row;
      const at::Tensor x_probs_P = taps.probs_BTP[b][x_row];
      for (const FocusTarget& f : seq.focuses) {
        if (f.row != x_row) continue;
        const FeatureProbeReport::FocusMass row =
            RowFocusMass(x_probs_P, f.positions, OtherAnswersCells(seq, x_row),
                         OtherAnswersCells(seq, x_row, true), shape_cells);
        AddRow(row, report.x_row_focus, report.focus_rows);
        if (k > 0) {
          AddRow(row, report.later_x_row_focus, report.later_focus_rows);
          if (taps.answered_probs_BTP.defined()) {
            // RowFocusMass's share on its target: the answered cells.
            report.later_x_row_before_last_on_answered +=
                RowFocusMass(
                    taps.answered_probs_BTP[b][x_row],
                    OtherAnswersCells(seq, x_row, /*before_only=*/true), {}, {},
                    {})
                    .shape;
          }
        }
        out.x_gathered_shape.Add(
            at::matmul(OnlyOn(x_probs_P, f.positions), taps.values_PD), t,
            fit_side);
      }
      out.size_row.Add(out_BTC[b][size.row], t, fit_side);
      out.size_gathered.Add(
          at::matmul(taps.probs_BTP[b][size.row], taps.values_PD), t, fit_side);
      out.x_gathered.Add(at::matmul(x_probs_P, taps.values_PD), t, fit_side);
      out.x_row.Add(out_BTC[b][x_row], t, fit_side);
      out.y_row.Add(out_BTC[b][y_row], t, fit_side);
      const at::Tensor x_X = DecodeCoordinate(row_of(b, x_row), region)[0];
      const at::Tensor y_X = DecodeCoordinate(row_of(b, y_row), region)[0];
      const at::Tensor size_2X =
          DecodeSize(row_of(b, size.row), region).view({2, -1});
      const double aw = BinValue(ArgmaxBin(size_2X[0]), size_bins);
      const double ah = BinValue(ArgmaxBin(size_2X[1]), size_bins);
      const Targets answer = {
          BinValue(ArgmaxBin(x_X), coordinate_bins),
          BinValue(ArgmaxBin(y_X), coordinate_bins), aw, ah,
          std::log(std::max(aw, 1e-3) / std::max(ah, 1e-3))};
      auto add_answer = [&](HeadAnswers& a) {
        a.answers.push_back(answer);
        a.truths.push_back(t);
        a.fit.push_back(fit_side);
      };
      add_answer(out.answers);
      if (k > 0) add_answer(out.later_answers);
    }
  }
}

FeatureReadout FitReadout(const ProbeRows& rows) {
  FeatureReadout out;
  out.name = rows.name;
  out.rows = static_cast<int>(rows.targets.size());
  if (rows.targets.empty()) return out;
  const at::Tensor x_NF = at::stack(rows.features_F).to(at::kDouble);
  std::vector<int64_t> fit, test;
  for (size_t i = 0; i < rows.fit.size(); ++i) {
    (rows.fit[i] ? fit : test).push_back(static_cast<int64_t>(i));
  }
  const at::Tensor fit_idx = at::tensor(fit, at::kLong);
  const at::Tensor test_idx = at::tensor(test, at::kLong);
  for (int t = 0; t < kProbeTargets; ++t) {
    std::vector<double> y(rows.targets.size());
    for (size_t i = 0; i < y.size(); ++i) y[i] = rows.targets[i][t];
    out.r2[t] = HeldOutR2(x_NF, at::tensor(y, at::kDouble), fit_idx, test_idx);
  }
  return out;
}

}  // namespace

absl::StatusOr<FeatureProbeReport> ProbeImageFeatures(
    const Model& model, const Tokenizer* tokenizer, uint64_t base_seed,
    int count) {
  const VisionConfig& v = model.config().vision;
  const int grid = static_cast<int>(v.grid());
  const RotaryTable rotary = MakeRotaryTable(model.config().text, at::kCPU);
  ProbeRows mask("cell mask (truth)"), cell("prefix, per cell"),
      mean("prefix, shape mean"), global("global crop, shape mean"),
      local("local crops, shape mean"), head_cell("focus head, per cell"),
      head_mean("focus head, shape mean");
  DetectReadouts detect_rows;
  FeatureProbeReport report;
  report.scenes = count;
  for (int i = 0; i < count; ++i) {
    const scenes::Scene scene = scenes::GenerateScene(
        scenes::SceneSeed(base_seed, static_cast<uint64_t>(i)));
    ASSIGN_OR_RETURN(ImageCrops crops, SceneCrops(scene, v));
    ASSIGN_OR_RETURN(ImageFeatures features, model.EncodeImageDetailed(crops));
    ASSIGN_OR_RETURN(const std::vector<Sequence> detects,
                     DetectSequences(scene, model, tokenizer));
    const bool fit_side = i % 2 == 0;
    RETURN_IF_ERROR(CatchTorchStatus("feature probe", [&] {
      at::NoGradGuard no_grad;
      const at::Tensor prefix_PC = features.embedding_PC.to(at::kFloat);
      const at::Tensor global_PE = features.global_PE.to(at::kFloat);
      const at::Tensor local_PE =
          features.pooled_GGE.to(at::kFloat).reshape({grid * grid, -1});
      // Without detect rows the decoder still needs one row after the
      // prefix; the head's values do not depend on it.
      const at::Tensor rows_BTC =
          detects.empty() ? at::zeros({1, 1, model.config().text.dim})
                          : EmbedSequences(detects, model.weights());
      FocusTaps taps;
      const at::Tensor out_BTC =
          DecoderRows(model, features.embedding_PC, rows_BTC, rotary, taps);
      std::vector<int> every_shape(scene.shapes.size());
      std::iota(every_shape.begin(), every_shape.end(), 0);
      AddDetectRows(detects, out_BTC, taps, model, fit_side,
                    FocusPositions(scene, every_shape, grid), detect_rows,
                    report);
      const at::Tensor& head_PD = taps.values_PD;
      for (const scenes::Shape& s : scene.shapes) {
        const std::vector<bool> covered = CoveredCells(scene, s, grid);
        std::vector<int64_t> cells;
        for (size_t c = 0; c < covered.size(); ++c) {
          if (covered[c]) cells.push_back(static_cast<int64_t>(c));
        }
        if (cells.empty()) {
          ++report.shapes_without_cells;
          continue;
        }
        ++report.shapes;
        report.shape_cells += static_cast<int>(cells.size());
        const Targets t = BoxTargets(scene, s);
        const at::Tensor idx = at::tensor(cells, at::kLong);
        const at::Tensor shape_PC = prefix_PC.index_select(0, idx);
        for (int64_t c = 0; c < shape_PC.size(0); ++c) {
          cell.Add(shape_PC[c], t, fit_side);
        }
        // The prefix's position 0 is bos; image token c is at c + 1.
        const at::Tensor shape_PD = head_PD.index_select(0, idx + 1);
        for (int64_t c = 0; c < shape_PD.size(0); ++c) {
          head_cell.Add(shape_PD[c], t, fit_side);
        }
        mask.Add(MaskFeatures(cells, grid), t, fit_side);
        mean.Add(shape_PC.mean(0), t, fit_side);
        head_mean.Add(shape_PD.mean(0), t, fit_side);
        global.Add(global_PE.index_select(0, idx).mean(0), t, fit_side);
        local.Add(local_PE.index_select(0, idx).mean(0), t, fit_side);
      }
    }));
  }
  RETURN_IF_ERROR(CatchTorchStatus("feature probe fit", [&] {
    for (const ProbeRows* rows :
         {&mask, &cell, &mean, &global, &local, &head_cell, &head_mean,
          &detect_rows.size_row, &detect_rows.size_gathered,
          &detect_rows.x_gathered, &detect_rows.x_gathered_shape,
          &detect_rows.x_row, &detect_rows.y_row}) {
      if (rows->targets.empty()) continue;
      report.readouts.push_back(FitReadout(*rows));
    }
    if (!detect_rows.answers.truths.empty()) {
      report.readouts.push_back(
          ScoreAnswers(detect_rows.answers, "region head's answers"));
    }
    if (!detect_rows.later_answers.truths.empty()) {
      report.readouts.push_back(
          ScoreAnswers(detect_rows.later_answers, "answers, 2nd+ objects"));
    }
  }));
  MeanOver(report.focus_rows, report.x_row_focus);
  MeanOver(report.later_focus_rows, report.later_x_row_focus);
  if (report.later_focus_rows > 0) {
    report.later_x_row_before_last_on_answered /= report.later_focus_rows;
  }
  return report;
}

namespace {

// One line of where the focus head's attention goes on `rows` rows.
void AppendFocusMass(std::string_view rows_name, int rows,
                     const FeatureProbeReport::FocusMass& m, std::string& out) {
  if (rows == 0) return;
  absl::StrAppendFormat(
      &out,
      "focus head's attention on %s (mean of %d rows): %.3f on the shape it "
      "answers, %.3f on the question's other answers (%.3f on those answered "
      "before), %.3f on the shapes it does not ask for, %.3f on the rest of "
      "the image, %.3f on bos, %.3f on the text rows\n",
      rows_name, rows, m.shape, m.other_answers, m.answered, m.other_shapes,
      m.image_rest, m.bos, m.text);
}

}  // namespace

std::string FormatFeatureProbe(const FeatureProbeReport& report) {
  std::string out = absl::StrFormat(
      "feature-probe: %d scenes, %d shapes (%d cover no cell centre, left "
      "out), %d shape cells; ridge fitted on even scenes, R² on odd\n",
      report.scenes, report.shapes, report.shapes_without_cells,
      report.shape_cells);
  absl::StrAppendFormat(&out, "%-26s", "readout");
  for (const char* name : kProbeTargetNames) {
    absl::StrAppendFormat(&out, " %10s", name);
  }
  absl::StrAppendFormat(&out, " %8s\n", "rows");
  for (const FeatureReadout& r : report.readouts) {
    absl::StrAppendFormat(&out, "%-26s", r.name);
    for (double r2 : r.r2) absl::StrAppendFormat(&out, " %10.3f", r2);
    absl::StrAppendFormat(&out, " %8d\n", r.rows);
  }
  AppendFocusMass("a detect x row", report.focus_rows, report.x_row_focus, out);
  AppendFocusMass("the x rows of second and later objects",
                  report.later_focus_rows, report.later_x_row_focus, out);
  if (report.later_focus_rows > 0) {
    absl::StrAppendFormat(
        &out,
        "layer before it, first head, on those rows: %.3f on the shapes "
        "answered before\n",
        report.later_x_row_before_last_on_answered);
  }
  return out;
}

}  // namespace md::train
