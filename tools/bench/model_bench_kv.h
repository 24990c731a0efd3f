// `moondream-bench model --parts=kv`: what a KV cache slot costs in the two
// layouts of model/net/kv_cache.h. Own prefix: every slot holds its 730
// image prefix positions too, copied in at admission. Shared prefix (the
// engine's): a slot holds only the positions after the prefix, and a
// sequence on a cached image reads the cached tensor in place, so admission
// copies nothing.
#ifndef MOONDREAM_TOOLS_BENCH_MODEL_BENCH_KV_H_
#define MOONDREAM_TOOLS_BENCH_MODEL_BENCH_KV_H_

#include <cstdint>
#include <nlohmann/json.hpp>
#include <vector>

#include "absl/status/statusor.h"
#include "model/net/moondream.h"
#include "tools/bench/stats.h"

namespace md::bench {

// Slot sizes for sequences of `positions` positions, the prefix included.
struct KvSlotSize {
  int positions = 0;
  int64_t own_prefix_bytes = 0;     // per slot
  int64_t shared_prefix_bytes = 0;  // per slot
};

struct KvSlotsResult {
  int prefix_len = 0;
  int64_t bytes_per_position = 0;
  std::vector<KvSlotSize> sizes;
  // Own-prefix admission on a cache hit: the prefix copied into the slot.
  int64_t own_admission_copy_bytes = 0;
  Timing own_admission_copy;
};

// Slot sizes at a few sequence lengths (prefix + 50, + 294, the model's
// maximum), and the own-prefix admission copy timed `n_reps` times.
absl::StatusOr<KvSlotsResult> BenchKvSlots(const Model& model, int n_reps);

void PrintKvSlots(const KvSlotsResult& kv);
nlohmann::json KvSlotsJson(const KvSlotsResult& kv);

}  // namespace md::bench

#endif  // MOONDREAM_TOOLS_BENCH_MODEL_BENCH_KV_H_
