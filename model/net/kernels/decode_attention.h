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
// of 16. Scores and softmax in fp32; output [B, H, D] contiguous in q's dtype.
// slots and n_keys have B entries, 0 <= slot < S and 1 <= n_keys <= P.
// Returns an undefined tensor when it does not apply (other dtype, device or
// layout, bad sizes or indices, or a CPU without AVX-512 F/BW/VL/DQ, plus
// AVX512-BF16 for bf16) so the caller falls back. Work is split over
// (sequence, head) pairs on LibTorch's intra-op threads.
//
// Shared prefixes: with prefix_slots (B entries) and prefix_len > 0,
// sequence i reads its positions below prefix_len from slot prefix_slots[i]
// instead of its own; the caller promises those positions hold the same bits
// in both slots (copies of one cached image prefix). Sequences with the same
// prefix slot are then computed together, each block of shared K/V rows read
// from memory once for all of them, while every output is bit-identical to
// computing each sequence alone (same operations in the same order).
at::Tensor DecodeAttention(const at::Tensor& q_BHD, const at::Tensor& k_SHPD,
                           const at::Tensor& v_SHPD,
                           absl::Span<const int> slots,
                           absl::Span<const int> n_keys, double scale,
                           absl::Span<const int> prefix_slots = {},
                           int prefix_len = 0);

}  // namespace md

#endif  // MOONDREAM_MODEL_NET_KERNELS_DECODE_ATTENTION_H_
