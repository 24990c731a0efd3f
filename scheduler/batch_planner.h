// The batch planner: what one engine step feeds, decided from a snapshot of
// the running sequences and the step's prefill budget. Pure: no model, no
// clock, so it is tested with step tables (tests/scheduler).
//
//   every decoding sequence ─► one row
//   prefilling sequences, first admitted first:
//     causal prompt ─► the next chunk, cut at fixed multiples of
//                      chunk_tokens (so a prompt's arithmetic never depends
//                      on the load)
//     whole prompt  ─► all of it at once (full-mask prompts: every token
//                      sees every other)
//     the first chunk always runs; later ones only while the budget lasts,
//     and a chunk that does not fit stops the prefills of this step (FIFO:
//     nobody overtakes the oldest prompt)
#ifndef MOONDREAM_SCHEDULER_BATCH_PLANNER_H_
#define MOONDREAM_SCHEDULER_BATCH_PLANNER_H_

#include <vector>

#include "absl/types/span.h"

namespace md::scheduler {

enum class SequencePhase { kPrefill, kDecode };

// One running sequence, as the planner sees it.
struct PlanSequence {
  int id = 0;  // The caller's; planned feeds refer to it.
  SequencePhase phase = SequencePhase::kDecode;
  // Prefill only: the prompt's length, how much was fed, and whether it must
  // be fed in one piece.
  int prompt_tokens = 0;
  int prompt_fed = 0;
  bool whole_prompt = false;
};

struct PlanLimits {
  int chunk_tokens = 128;
  int token_budget = 256;
};

struct PlannedFeed {
  int id = 0;
  bool prefill = false;
  // Prefill: rows [offset, offset + n_tokens) of the prompt. Decode: 1 row.
  int offset = 0;
  int n_tokens = 1;
  // The feed's last row ends the prompt (or is a decode row): its heads are
  // evaluated and the run consumes them.
  bool completes = true;
};

struct BatchPlan {
  std::vector<PlannedFeed> feeds;  // Decode rows first, then prefill chunks.
  int decode_rows = 0;
  int prefill_tokens = 0;
};

BatchPlan PlanBatch(absl::Span<const PlanSequence> sequences,
                    const PlanLimits& limits);

}  // namespace md::scheduler

#endif  // MOONDREAM_SCHEDULER_BATCH_PLANNER_H_
