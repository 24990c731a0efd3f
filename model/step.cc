#include "model/step.h"

#include <ATen/ATen.h>

#include <vector>

#include "absl/strings/str_cat.h"
#include "model/status_macros.h"
#include "model/tensor_io.h"

namespace md {
namespace {

// Rows of the hidden batch that need one head, and which run each serves.
struct HeadGroup {
  std::vector<int64_t> rows;
  std::vector<size_t> runs;
};

at::Tensor RowsOf(const at::Tensor& hidden_NC,
                  const std::vector<int64_t>& rows) {
  return hidden_NC.index_select(
      0, at::tensor(rows, at::kLong).to(hidden_NC.device()));
}

}  // namespace

absl::StatusOr<std::vector<StepOutput>> ForwardFeeds(
    const Model& model, KvCache& cache, absl::Span<const Feed> feeds) {
  std::vector<StepOutput> outputs(feeds.size());
  if (feeds.empty()) return outputs;
  std::vector<SequenceChunk> chunks;
  std::vector<at::Tensor> embeds;
  for (const Feed& feed : feeds) {
    const int n_tokens = static_cast<int>(feed.embeds_TC.size(0));
    if (feed.pos + n_tokens > cache.n_positions) {
      return absl::OutOfRangeError(absl::StrCat(
          "context overflow: slot ", feed.slot, " needs position ",
          feed.pos + n_tokens - 1, " but holds ", cache.n_positions));
    }
    chunks.push_back(
        {feed.slot, feed.pos, n_tokens, feed.mask, feed.prefix_slot});
    embeds.push_back(feed.embeds_TC);
  }
  ASSIGN_OR_RETURN(
      at::Tensor embeds_NC,
      CatchTorch("batching step inputs", [&] { return at::cat(embeds); }));
  ASSIGN_OR_RETURN(at::Tensor hidden_NC,
                   model.Forward(embeds_NC, chunks, cache));

  const std::vector<int64_t> last_rows = LastRowOfEachChunk(chunks);
  HeadGroup logits, coordinate, size;
  for (size_t k = 0; k < feeds.size(); ++k) {
    const HeadRequest& h = feeds[k].heads;
    for (auto [wanted, group] :
         {std::pair{h.logits, &logits}, std::pair{h.coordinate, &coordinate},
          std::pair{h.size, &size}}) {
      if (!wanted) continue;
      group->rows.push_back(last_rows[k]);
      group->runs.push_back(k);
    }
  }
  RETURN_IF_ERROR(CatchTorchStatus("evaluating heads", [&] {
    if (!logits.rows.empty()) {
      at::Tensor out = model.Logits(RowsOf(hidden_NC, logits.rows));
      for (size_t j = 0; j < logits.runs.size(); ++j)
        outputs[logits.runs[j]].logits_V = out[j];
    }
    if (!coordinate.rows.empty()) {
      at::Tensor out =
          model.CoordinateLogits(RowsOf(hidden_NC, coordinate.rows));
      for (size_t j = 0; j < coordinate.runs.size(); ++j) {
        outputs[coordinate.runs[j]].coordinate_X = out[j];
      }
    }
    if (!size.rows.empty()) {
      at::Tensor out = model.SizeLogits(RowsOf(hidden_NC, size.rows));
      for (size_t j = 0; j < size.runs.size(); ++j)
        outputs[size.runs[j]].size_2X = out[j];
    }
  }));
  return outputs;
}

absl::Status StepRuns(const Model& model, KvCache& cache,
                      absl::Span<ActiveRun> runs, const StepObserver& observe) {
  std::vector<size_t> stepping;
  std::vector<Feed> feeds;
  for (size_t i = 0; i < runs.size(); ++i) {
    if (runs[i].run->done()) continue;
    ASSIGN_OR_RETURN(StepInput in, runs[i].run->Next(model));
    feeds.push_back({runs[i].slot, runs[i].pos, std::move(in.embeds_TC),
                     in.mask, in.heads});
    stepping.push_back(i);
  }
  if (stepping.empty()) return absl::OkStatus();
  ASSIGN_OR_RETURN(std::vector<StepOutput> outputs,
                   ForwardFeeds(model, cache, feeds));
  return CatchTorchStatus("accepting step outputs", [&] {
    for (size_t k = 0; k < stepping.size(); ++k) {
      ActiveRun& active = runs[stepping[k]];
      active.pos += static_cast<int>(feeds[k].embeds_TC.size(0));
      if (observe) observe(stepping[k], outputs[k]);
      active.run->Accept(outputs[k]);
    }
  });
}

absl::Status RunToCompletion(const Model& model, KvCache& cache,
                             absl::Span<ActiveRun> runs,
                             const StepObserver& observe) {
  auto any_running = [&] {
    for (const ActiveRun& r : runs) {
      if (!r.run->done()) return true;
    }
    return false;
  };
  while (any_running()) RETURN_IF_ERROR(StepRuns(model, cache, runs, observe));
  return absl::OkStatus();
}

}  // namespace md
