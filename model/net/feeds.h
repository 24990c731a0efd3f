// One batched forward over "feeds": each feed is one sequence's rows written
// into its KV slot, plus the heads to evaluate on its last row. The skills
// (one request) and the engine (many) both drive the network through it.
#ifndef MOONDREAM_MODEL_NET_FEEDS_H_
#define MOONDREAM_MODEL_NET_FEEDS_H_

#include <ATen/core/Tensor.h>

#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "model/net/kv_cache.h"
#include "model/net/moondream.h"
#include "model/net/text.h"

namespace md {

struct HeadRequest {
  bool logits = false;      // next-token logits (post LN → lm_head)
  bool coordinate = false;  // coordinate logits [1024] (pre-LN hidden)
  bool size = false;        // size logits [2, 1024] (pre-LN hidden)
};

// The requested head outputs for one feed's last row.
struct StepOutput {
  at::Tensor logits_V;
  at::Tensor coordinate_X;
  at::Tensor size_2X;
};

// One sequence's rows in a batched forward: `embeds_TC` written at positions
// pos..pos+T−1 of `slot`, and the heads to evaluate on its last row (none for
// a prefill chunk that is not the prompt's last).
struct Feed {
  int slot = 0;
  int pos = 0;
  at::Tensor embeds_TC;
  AttentionMask mask = AttentionMask::kCausal;
  HeadRequest heads;
  at::Tensor prefix_L2HQD{};  // See SequenceChunk::prefix_L2HQD.
};

// One forward over every feed, then each head once over the rows that asked
// for it. Returns one StepOutput per feed (empty tensors for heads not
// asked). Fails without touching the cache when a feed would overflow its
// slot. Never throws.
absl::StatusOr<std::vector<StepOutput>> ForwardFeeds(
    const Model& model, KvCache& cache, absl::Span<const Feed> feeds);

}  // namespace md

#endif  // MOONDREAM_MODEL_NET_FEEDS_H_
