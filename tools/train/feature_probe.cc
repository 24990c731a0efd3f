#include "tools/train/feature_probe.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "model/io/tensor_io.h"
#include "model/net/moondream.h"
#include "tools/scenes/metrics.h"
#include "tools/scenes/random.h"
#include "tools/scenes/scene.h"
#include "tools/train/examples.h"
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

absl::StatusOr<FeatureProbeReport> ProbeImageFeatures(const Model& model,
                                                      uint64_t base_seed,
                                                      int count) {
  const VisionConfig& v = model.config().vision;
  const int grid = static_cast<int>(v.grid());
  ProbeRows mask("cell mask (truth)"), cell("prefix, per cell"),
      mean("prefix, shape mean"), global("global crop, shape mean"),
      local("local crops, shape mean");
  FeatureProbeReport report;
  report.scenes = count;
  for (int i = 0; i < count; ++i) {
    const scenes::Scene scene = scenes::GenerateScene(
        scenes::SceneSeed(base_seed, static_cast<uint64_t>(i)));
    ASSIGN_OR_RETURN(ImageCrops crops, SceneCrops(scene, v));
    ASSIGN_OR_RETURN(ImageFeatures features, model.EncodeImageDetailed(crops));
    const bool fit_side = i % 2 == 0;
    RETURN_IF_ERROR(CatchTorchStatus("feature probe", [&] {
      at::NoGradGuard no_grad;
      const at::Tensor prefix_PC = features.embedding_PC.to(at::kFloat);
      const at::Tensor global_PE = features.global_PE.to(at::kFloat);
      const at::Tensor local_PE =
          features.pooled_GGE.to(at::kFloat).reshape({grid * grid, -1});
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
        mask.Add(MaskFeatures(cells, grid), t, fit_side);
        mean.Add(shape_PC.mean(0), t, fit_side);
        global.Add(global_PE.index_select(0, idx).mean(0), t, fit_side);
        local.Add(local_PE.index_select(0, idx).mean(0), t, fit_side);
      }
    }));
  }
  RETURN_IF_ERROR(CatchTorchStatus("feature probe fit", [&] {
    for (const ProbeRows* rows : {&mask, &cell, &mean, &global, &local}) {
      report.readouts.push_back(FitReadout(*rows));
    }
  }));
  return report;
}

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
  return out;
}

}  // namespace md::train
