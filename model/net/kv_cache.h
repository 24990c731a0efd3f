// Key/value storage for the text decoder, indexed by slot.
//
// Letters: L layers, S slots, H heads, P positions per slot, D head dim,
// Q image prefix positions (730).
// One K and one V tensor per layer, each [S, H, P, D], allocated once. A slot
// holds one sequence. Its logical positions are
//
//   position: 0     1 ........ 729 | 730 ...... 730+n_prompt | ... generated
//             BOS   image tokens   | prompt (template + text) | tokens/coords
//             \__ image prefix: 730 positions, all see each other __/
//
// and a cache stores them in one of two layouts:
//
//   own prefix (slot_offset 0): the slot holds every position from 0, the
//     image prefix included (the single-request skills, the golden tests).
//   shared prefix (slot_offset Q): the slot holds positions Q.. only, at
//     index position − Q; every sequence reads its positions below Q from
//     its image's prefix tensor [L, 2, H, Q, D], which any number of
//     sequences (and the engine's image prefix cache) hold at once.
//
// K is stored after rotary in the reference's interleaved layout
// (docs/DESIGN.md §2.4).
#ifndef MOONDREAM_MODEL_NET_KV_CACHE_H_
#define MOONDREAM_MODEL_NET_KV_CACHE_H_

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "model/config/config.h"

namespace md {

struct KvCache {
  std::vector<at::Tensor> k_SHPD;  // one per layer
  std::vector<at::Tensor> v_SHPD;
  int n_slots = 0;
  // Logical positions per sequence, the image prefix included.
  int n_positions = 0;
  // The first position the slots store (see above): 0, or the image prefix
  // length when sequences read their prefix from a shared tensor.
  int slot_offset = 0;

  bool shares_prefixes() const { return slot_offset > 0; }
  // Positions each slot stores: n_positions − slot_offset.
  int stored_positions() const { return n_positions - slot_offset; }
  int64_t bytes() const;
};

// A cache of n_slots × n_positions logical positions; with slot_offset > 0
// (the image prefix length) the slots store positions slot_offset.. only.
absl::StatusOr<KvCache> AllocateKvCache(const TextConfig& config, int n_slots,
                                        int n_positions, at::ScalarType dtype,
                                        at::Device device, int slot_offset = 0);

// Bytes of K and V for one position of one sequence, all layers.
int64_t KvBytesPerPosition(const TextConfig& config, at::ScalarType dtype);

// The first n positions of a slot, all layers: [L, 2 (k, v), H, n, D], the
// layout of the reference's EncodedImage.kv_cache and of the golden files.
// Own-prefix caches only.
at::Tensor ReadSlotPrefix(const KvCache& cache, int slot, int n_positions);

// Writes a [L, 2, H, n, D] prefix into positions 0..n−1 of `slot`.
// Own-prefix caches only.
void WriteSlotPrefix(KvCache& cache, int slot, const at::Tensor& prefix_L2HND);

// Writes [L, 2, H, n, D] into logical positions first_pos..first_pos+n−1 of
// `slot` (first_pos >= slot_offset: positions the slots store).
void WriteSlotPositions(KvCache& cache, int slot, int first_pos,
                        const at::Tensor& kv_L2HND);

}  // namespace md

#endif  // MOONDREAM_MODEL_NET_KV_CACHE_H_
