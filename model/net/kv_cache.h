// Key/value storage for the text decoder, indexed by slot.
//
// Letters: L layers, S slots, H heads, P positions per slot, D head dim.
// One K and one V tensor per layer, each [S, H, P, D], allocated once. A slot
// holds one sequence; its positions are laid out as
//
//   position: 0     1 ........ 729 | 730 ...... 730+n_prompt | ... generated
//             BOS   image tokens   | prompt (template + text) | tokens/coords
//             \__ image prefix: 730 positions, all see each other __/
//
// The prefix is identical for every request on the same image, so it can be
// copied in from (and out to) an image prefix cache. K is stored after rotary
// in the reference's interleaved layout (docs/DESIGN.md §2.4).
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
  int n_positions = 0;

  int64_t bytes() const;
};

absl::StatusOr<KvCache> AllocateKvCache(const TextConfig& config, int n_slots,
                                        int n_positions, at::ScalarType dtype,
                                        at::Device device);

// The first n positions of a slot, all layers: [L, 2 (k, v), H, n, D], the
// layout of the reference's EncodedImage.kv_cache and of the golden files.
at::Tensor ReadSlotPrefix(const KvCache& cache, int slot, int n_positions);

// Writes a [L, 2, H, n, D] prefix into positions 0..n−1 of `slot`.
void WriteSlotPrefix(KvCache& cache, int slot, const at::Tensor& prefix_L2HND);

}  // namespace md

#endif  // MOONDREAM_MODEL_NET_KV_CACHE_H_
