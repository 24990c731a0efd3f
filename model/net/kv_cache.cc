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
                                        at::Device device) {
  if (n_slots <= 0 || n_positions <= 0 || n_positions > config.max_context) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV cache: need 1+ slots and 1..", config.max_context,
        " positions per slot, got ", n_slots, " slots of ", n_positions));
  }
  return CatchTorch("allocating the KV cache", [&] {
    KvCache cache;
    cache.n_slots = n_slots;
    cache.n_positions = n_positions;
    auto options = at::TensorOptions().dtype(dtype).device(device);
    for (int l = 0; l < config.n_layers; ++l) {
      cache.k_SHPD.push_back(at::zeros(
          {n_slots, config.n_heads, n_positions, config.head_dim()}, options));
      cache.v_SHPD.push_back(at::zeros_like(cache.k_SHPD.back()));
    }
    return cache;
  });
}

at::Tensor ReadSlotPrefix(const KvCache& cache, int slot, int n_positions) {
  std::vector<at::Tensor> layers;
  for (size_t l = 0; l < cache.k_SHPD.size(); ++l) {
    layers.push_back(
        at::stack({cache.k_SHPD[l][slot].narrow(1, 0, n_positions),
                   cache.v_SHPD[l][slot].narrow(1, 0, n_positions)}));
  }
  return at::stack(layers);
}

void WriteSlotPrefix(KvCache& cache, int slot, const at::Tensor& prefix_L2HND) {
  const int64_t n = prefix_L2HND.size(3);
  for (size_t l = 0; l < cache.k_SHPD.size(); ++l) {
    cache.k_SHPD[l][slot].narrow(1, 0, n).copy_(prefix_L2HND[l][0]);
    cache.v_SHPD[l][slot].narrow(1, 0, n).copy_(prefix_L2HND[l][1]);
  }
}

}  // namespace md
