#include "model/net/feeds.h"

#include <ATen/ATen.h>

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "model/io/tensor_io.h"

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
        {feed.slot, feed.pos, n_tokens, feed.mask, feed.prefix_L2HQD});
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
  // Each head once, over the rows that asked for it.
  for (auto [group, head] : {std::pair{&logits, &Model::Logits},
                             std::pair{&coordinate, &Model::CoordinateLogits},
                             std::pair{&size, &Model::SizeLogits}}) {
    if (group->rows.empty()) continue;
    ASSIGN_OR_RETURN(at::Tensor rows_BC, CatchTorch("picking head rows", [&] {
                       return RowsOf(hidden_NC, group->rows);
                     }));
    ASSIGN_OR_RETURN(at::Tensor out, (model.*head)(rows_BC));
    RETURN_IF_ERROR(CatchTorchStatus("splitting head outputs", [&] {
      for (size_t j = 0; j < group->runs.size(); ++j) {
        StepOutput& o = outputs[group->runs[j]];
        at::Tensor& slot = group == &logits       ? o.logits_V
                           : group == &coordinate ? o.coordinate_X
                                                  : o.size_2X;
        slot = out[static_cast<int64_t>(j)];
      }
    }));
  }
  return outputs;
}

}  // namespace md
