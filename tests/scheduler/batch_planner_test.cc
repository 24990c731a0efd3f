// The batch planner as step tables: each row is a step's snapshot and the
// feeds it must plan.
#include "scheduler/batch_planner.h"

#include <gtest/gtest.h>

#include <vector>

namespace md::scheduler {
namespace {

PlanSequence Decode(int id) {
  return {.id = id, .phase = SequencePhase::kDecode};
}

PlanSequence Prefill(int id, int tokens, int fed, bool whole = false) {
  return {.id = id,
          .phase = SequencePhase::kPrefill,
          .prompt_tokens = tokens,
          .prompt_fed = fed,
          .whole_prompt = whole};
}

// (id, offset, n_tokens, completes) per prefill feed.
struct Chunk {
  int id, offset, n, completes;
};

std::vector<Chunk> Chunks(const BatchPlan& plan) {
  std::vector<Chunk> chunks;
  for (const PlannedFeed& f : plan.feeds) {
    if (f.prefill) chunks.push_back({f.id, f.offset, f.n_tokens, f.completes});
  }
  return chunks;
}

void ExpectChunks(const BatchPlan& plan, const std::vector<Chunk>& expected) {
  const std::vector<Chunk> got = Chunks(plan);
  ASSERT_EQ(got.size(), expected.size());
  for (size_t i = 0; i < got.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(got[i].id, expected[i].id);
    EXPECT_EQ(got[i].offset, expected[i].offset);
    EXPECT_EQ(got[i].n, expected[i].n);
    EXPECT_EQ(got[i].completes, expected[i].completes);
  }
}

TEST(BatchPlannerTest, EveryDecodingSequenceGetsOneRowFirst) {
  const BatchPlan plan =
      PlanBatch({Prefill(0, 10, 0), Decode(1), Decode(2)}, {8, 256});
  ASSERT_EQ(plan.feeds.size(), 3u);
  EXPECT_EQ(plan.feeds[0].id, 1);
  EXPECT_EQ(plan.feeds[1].id, 2);
  EXPECT_FALSE(plan.feeds[0].prefill);
  EXPECT_EQ(plan.feeds[0].n_tokens, 1);
  EXPECT_TRUE(plan.feeds[0].completes);
  EXPECT_EQ(plan.decode_rows, 2);
  EXPECT_EQ(plan.prefill_tokens, 8);
}

// A 300-token prompt, chunks of 128, budget 256: the cuts fall at fixed
// multiples of 128 whatever else runs.
TEST(BatchPlannerTest, PromptsAreCutAtFixedOffsets) {
  const PlanLimits limits{.chunk_tokens = 128, .token_budget = 256};
  // Step table: prompt_fed before the step → the chunk it feeds.
  struct Row {
    int fed, offset, n, completes;
  };
  for (const Row& row : {Row{0, 0, 128, 0}, Row{128, 128, 128, 0},
                         Row{256, 256, 44, 1}, Row{100, 100, 28, 0}}) {
    SCOPED_TRACE(row.fed);
    ExpectChunks(PlanBatch({Prefill(0, 300, row.fed)}, limits),
                 {{0, row.offset, row.n, row.completes}});
  }
}

TEST(BatchPlannerTest, TheBudgetStopsLaterPromptsInOrder) {
  const PlanLimits limits{.chunk_tokens = 64, .token_budget = 100};
  // 64 fits, the next 64 would pass 100: the third (small) prompt must not
  // overtake the second.
  ExpectChunks(
      PlanBatch({Prefill(0, 64, 0), Prefill(1, 64, 0), Prefill(2, 8, 0)},
                limits),
      {{0, 0, 64, 1}});
  // Within the budget, several prompts share the step.
  ExpectChunks(
      PlanBatch({Prefill(0, 30, 0), Prefill(1, 30, 0), Prefill(2, 40, 0)},
                limits),
      {{0, 0, 30, 1}, {1, 0, 30, 1}, {2, 0, 40, 1}});
}

TEST(BatchPlannerTest, TheFirstChunkAlwaysRunsEvenOverBudget) {
  ExpectChunks(PlanBatch({Prefill(0, 500, 0, /*whole=*/true)},
                         {.chunk_tokens = 64, .token_budget = 16}),
               {{0, 0, 500, 1}});
}

TEST(BatchPlannerTest, WholePromptsAreNeverCut) {
  ExpectChunks(PlanBatch({Prefill(0, 20, 0), Prefill(1, 9, 0, true)},
                         {.chunk_tokens = 8, .token_budget = 64}),
               {{0, 0, 8, 0}, {1, 0, 9, 1}});
}

TEST(BatchPlannerTest, NothingToDoPlansNothing) {
  const BatchPlan plan = PlanBatch({}, {});
  EXPECT_TRUE(plan.feeds.empty());
  EXPECT_EQ(plan.decode_rows, 0);
  EXPECT_EQ(plan.prefill_tokens, 0);
}

}  // namespace
}  // namespace md::scheduler
