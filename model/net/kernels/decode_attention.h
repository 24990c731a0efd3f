// Fused single-query attention for decode steps (one new token per sequence),
// reading each sequence's keys and values in place from the slot cache.
//
// Letters as in model/net/kv_cache.h: B sequences, H heads, D head dim, S
// slots, P positions per slot. Per (sequence, head) it streams K once (scores
// into a small fp32 buffer), then V once, so the cost is reading the cache: on
// AVX-512 CPUs it runs close to memory bandwidth, where a per-sequence
// matmul → softmax → matmul loop reaches a fraction of it.
#ifndef MOONDREAM_MODEL_NET_KERNELS_DECODE_ATTENTION_H_
#define MOONDREAM_MODEL_NET_KERNELS_DECODE_ATTENTION_H_

#include <ATen/core/Tensor.h>

#include "absl/types/span.h"

namespace md {

// Single-query attention for a batch of decoding sequences. For each i in
// [0, B):
//   out[i, h] = softmax(q[i, h] · K[slot_i, h, :n_keys_i]ᵀ · scale)
//               · V[slot_i, h, :n_keys_i]
// q_BHD [B, H, D] (any strides with the last dim contiguous), k_SHPD / v_SHPD
// [S, H, P, D] contiguous, same dtype as q (fp32 or bf16), CPU; D a multiple
// of 16. (K[slot, h, p] is the key at position p; see below for a cache
// whose slots start after a shared prefix.) Scores and softmax in fp32; output
// [B, H, D] contiguous in q's dtype. slots and n_keys have B entries, 0 <= slot
// < S and 1 <= n_keys <= P. Returns an undefined tensor when it does not apply
// (other dtype, device or layout, bad sizes or indices, or a CPU without
// AVX-512 F/BW/VL/DQ, plus AVX512-BF16 for bf16) so the caller falls back. Work
// is split over (sequence, head) pairs on LibTorch's intra-op threads.
//
// Shared image prefixes (KvCache's shared-prefix layout): sequence i reads
// its keys and values at positions below `len` from prefix_L2HQD[i]
// ([L, 2, H, len, D], contiguous, q's dtype and device; layer `layer`), and
// those from len on from its slot, which stores position p at index p − len;
// n_keys_i >= len. Sequences on the same prefix tensor are computed
// together, each block of shared K/V rows read from memory once for all of
// them, while every output is bit-identical to computing each sequence alone
// with its prefix in its slot (same operations in the same order).
struct SharedPrefixes {
  absl::Span<const at::Tensor> prefix_L2HQD;  // B entries
  int layer = 0;
  int len = 0;
};

at::Tensor DecodeAttention(const at::Tensor& q_BHD, const at::Tensor& k_SHPD,
                           const at::Tensor& v_SHPD,
                           absl::Span<const int> slots,
                           absl::Span<const int> n_keys, double scale,
                           const SharedPrefixes* prefixes = nullptr);

}  // namespace md

#endif  // MOONDREAM_MODEL_NET_KERNELS_DECODE_ATTENTION_H_
