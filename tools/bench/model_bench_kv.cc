#include "tools/bench/model_bench_kv.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdio>

#include "base/status_macros.h"
#include "model/io/tensor_io.h"
#include "model/net/kv_cache.h"

namespace md::bench {
namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

double SlotsPerGiB(int64_t bytes_per_slot) {
  return bytes_per_slot > 0 ? kGiB / static_cast<double>(bytes_per_slot) : 0;
}

// Sequence lengths to size slots for: a short answer, a long one, and the
// longest the model allows, each the prefix included.
std::vector<int> SequenceLengths(const Model& model) {
  const int q = model.prefix_len();
  const int max = model.config().text.max_context;
  std::vector<int> lengths;
  for (int n : {q + 50, q + 294, max}) {
    if (n <= max && (lengths.empty() || n > lengths.back())) {
      lengths.push_back(n);
    }
  }
  return lengths;
}

}  // namespace

absl::StatusOr<KvSlotsResult> BenchKvSlots(const Model& model, int n_reps) {
  KvSlotsResult result;
  result.prefix_len = model.prefix_len();
  result.bytes_per_position =
      KvBytesPerPosition(model.config().text, model.options().dtype);
  for (int positions : SequenceLengths(model)) {
    result.sizes.push_back(
        {positions, positions * result.bytes_per_position,
         (positions - result.prefix_len) * result.bytes_per_position});
  }

  // The copy an own-prefix cache makes when a request on a cached image
  // takes a slot: the whole prefix, every layer, into the slot.
  ASSIGN_OR_RETURN(KvCache cache,
                   model.NewKvCache(1, result.sizes.front().positions));
  ASSIGN_OR_RETURN(at::Tensor prefix_L2HQD, CatchTorch("a random prefix", [&] {
                     const TextConfig& t = model.config().text;
                     return at::randn({t.n_layers, 2, t.n_heads,
                                       result.prefix_len, t.head_dim()})
                         .to(model.options().dtype);
                   }));
  result.own_admission_copy_bytes = static_cast<int64_t>(prefix_L2HQD.nbytes());
  for (int rep = 0; rep <= n_reps; ++rep) {  // rep 0 warms up
    Stopwatch watch;
    RETURN_IF_ERROR(CatchTorchStatus("copying a prefix into a slot", [&] {
      WriteSlotPrefix(cache, 0, prefix_L2HQD);
    }));
    const double ms = watch.ElapsedMs();
    if (rep > 0) result.own_admission_copy.samples_ms.push_back(ms);
  }
  return result;
}

void PrintKvSlots(const KvSlotsResult& kv) {
  std::printf("KV slots (%.1f KiB per position; image prefix %d positions):\n",
              kv.bytes_per_position / 1024.0, kv.prefix_len);
  std::printf("  %-10s %14s %14s %14s %14s %8s\n", "positions", "own MB/slot",
              "own slots/GiB", "shared MB/slot", "shared sl/GiB", "ratio");
  for (const KvSlotSize& s : kv.sizes) {
    std::printf("  %-10d %14.1f %14.1f %14.1f %14.1f %7.2fx\n", s.positions,
                s.own_prefix_bytes / 1e6, SlotsPerGiB(s.own_prefix_bytes),
                s.shared_prefix_bytes / 1e6, SlotsPerGiB(s.shared_prefix_bytes),
                SlotsPerGiB(s.shared_prefix_bytes) /
                    std::max(SlotsPerGiB(s.own_prefix_bytes), 1e-9));
  }
  std::printf(
      "  admission on a cached image: the own-prefix layout copies %.1f MB "
      "into the slot in %.2f ms (median); the shared-prefix layout (the "
      "engine's) reads the cached tensor in place and copies nothing\n",
      kv.own_admission_copy_bytes / 1e6, kv.own_admission_copy.median_ms());
}

nlohmann::json KvSlotsJson(const KvSlotsResult& kv) {
  nlohmann::json sizes = nlohmann::json::array();
  for (const KvSlotSize& s : kv.sizes) {
    sizes.push_back(
        {{"positions", s.positions},
         {"own_prefix_bytes_per_slot", s.own_prefix_bytes},
         {"own_prefix_slots_per_gib", SlotsPerGiB(s.own_prefix_bytes)},
         {"shared_prefix_bytes_per_slot", s.shared_prefix_bytes},
         {"shared_prefix_slots_per_gib", SlotsPerGiB(s.shared_prefix_bytes)}});
  }
  return {{"prefix_len", kv.prefix_len},
          {"bytes_per_position", kv.bytes_per_position},
          {"slot_sizes", sizes},
          {"own_prefix_admission_copy_bytes", kv.own_admission_copy_bytes},
          {"own_prefix_admission_copy_ms", kv.own_admission_copy.median_ms()},
          {"own_prefix_admission_copy_samples_ms",
           kv.own_admission_copy.samples_ms}};
}

}  // namespace md::bench
