#include "scheduler/batch_planner.h"

#include <algorithm>

namespace md::scheduler {
namespace {

void PlanDecodeRows(absl::Span<const PlanSequence> sequences, BatchPlan& plan) {
  for (const PlanSequence& s : sequences) {
    if (s.phase != SequencePhase::kDecode) continue;
    plan.feeds.push_back({.id = s.id});
    ++plan.decode_rows;
  }
}

// The next chunk of a prompt: whole prompts at once; causal ones up to the
// next multiple of chunk_tokens.
int NextChunk(const PlanSequence& s, int chunk_tokens) {
  const int remaining = s.prompt_tokens - s.prompt_fed;
  if (s.whole_prompt) return remaining;
  return std::min(remaining, chunk_tokens - s.prompt_fed % chunk_tokens);
}

void PlanPrefillChunks(absl::Span<const PlanSequence> sequences,
                       const PlanLimits& limits, BatchPlan& plan) {
  const int chunk_tokens = std::max(1, limits.chunk_tokens);
  int budget = limits.token_budget;
  bool any = false;
  for (const PlanSequence& s : sequences) {
    if (s.phase != SequencePhase::kPrefill) continue;
    const int chunk = NextChunk(s, chunk_tokens);
    if (chunk <= 0) continue;
    if (any && chunk > budget) return;
    budget -= chunk;
    any = true;
    plan.feeds.push_back(
        {.id = s.id,
         .prefill = true,
         .offset = s.prompt_fed,
         .n_tokens = chunk,
         .completes = s.prompt_fed + chunk == s.prompt_tokens});
    plan.prefill_tokens += chunk;
  }
}

}  // namespace

BatchPlan PlanBatch(absl::Span<const PlanSequence> sequences,
                    const PlanLimits& limits) {
  BatchPlan plan;
  PlanDecodeRows(sequences, plan);
  PlanPrefillChunks(sequences, limits, plan);
  return plan;
}

}  // namespace md::scheduler
