#include "model/net/kv_cache.h"

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "model/io/tensor_io.h"

namespace md {

int64_t KvCache::bytes() const {
  int64_t total = 0;
  for (const at::Tensor& t : k_SHPD) total += t.nbytes();
  for (const at::Tensor& t : v_SHPD) total += t.nbytes();
  return total;
}

absl::StatusOr<KvCache> AllocateKvCache(const TextConfig& config, int n_slots,
                                        int n_positions, at::ScalarType dtype,
                                        at::Device device, int slot_offset) {
  if (n_slots <= 0 || n_positions <= 0 || n_positions > config.max_context) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV cache: need 1+ slots and 1..", config.max_context,
        " positions per slot, got ", n_slots, " slots of ", n_positions));
  }
  if (slot_offset < 0 || slot_offset >= n_positions) {
    return absl::InvalidArgumentError(
        absl::StrCat("KV cache: the slots must store some positions after the "
                     "shared prefix (",
                     slot_offset, " of ", n_positions, ")"));
  }
  return CatchTorch("allocating the KV cache", [&] {
    KvCache cache;
    cache.n_slots = n_slots;
    cache.n_positions = n_positions;
    cache.slot_offset = slot_offset;
    auto options = at::TensorOptions().dtype(dtype).device(device);
    for (int l = 0; l < config.n_layers; ++l) {
      cache.k_SHPD.push_back(
          at::zeros({n_slots, config.n_heads, cache.stored_positions(),
                     config.head_dim()},
                    options));
      cache.v_SHPD.push_back(at::zeros_like(cache.k_SHPD.back()));
    }
    return cache;
  });
}

int64_t KvBytesPerPosition(const TextConfig& config, at::ScalarType dtype) {
  return int64_t{2} * config.n_layers * config.n_heads * config.head_dim() *
         static_cast<int64_t>(c10::elementSize(dtype));
}

at::Tensor ReadSlotPrefix(const KvCache& cache, int slot, int n_positions) {
  TORCH_CHECK(!cache.shares_prefixes(), "this KV cache stores no prefixes");
  std::vector<at::Tensor> layers;
  for (size_t l = 0; l < cache.k_SHPD.size(); ++l) {
    layers.push_back(
        at::stack({cache.k_SHPD[l][slot].narrow(1, 0, n_positions),
                   cache.v_SHPD[l][slot].narrow(1, 0, n_positions)}));
  }
  return at::stack(layers);
}

void WriteSlotPrefix(KvCache& cache, int slot, const at::Tensor& prefix_L2HND) {
  TORCH_CHECK(!cache.shares_prefixes(), "this KV cache stores no prefixes");
  WriteSlotPositions(cache, slot, 0, prefix_L2HND);
}

void WriteSlotPositions(KvCache& cache, int slot, int first_pos,
                        const at::Tensor& kv_L2HND) {
  TORCH_CHECK(first_pos >= cache.slot_offset, "position ", first_pos,
              " is not stored in the slots");
  const int64_t n = kv_L2HND.size(3);
  const int64_t index = first_pos - cache.slot_offset;
  for (size_t l = 0; l < cache.k_SHPD.size(); ++l) {
    cache.k_SHPD[l][slot].narrow(1, index, n).copy_(kv_L2HND[l][0]);
    cache.v_SHPD[l][slot].narrow(1, index, n).copy_(kv_L2HND[l][1]);
  }
}

}  // namespace md
