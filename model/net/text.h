// The Phi-1.5-style text decoder (docs/DESIGN.md §2.4), shaped for the engine:
// one call runs a batch of sequences, each a chunk of consecutive positions in
// its own KV cache slot. Prefill is a chunk of many tokens, a decode step a
// chunk of one; the single-request path is the batch of one.
//
// Letters: N tokens in the flat batch (all chunks, in order), C model dim,
// H heads, D head dim, V vocab, B rows picked for a head.
#ifndef MOONDREAM_MODEL_NET_TEXT_H_
#define MOONDREAM_MODEL_NET_TEXT_H_

#include <ATen/core/Tensor.h>

#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "model/config/config.h"
#include "model/io/weights.h"
#include "model/net/kv_cache.h"

namespace md {

enum class AttentionMask {
  // Causal, except that positions below the image prefix (730) see each
  // other: the reference's mask for the image prefix and for prompts.
  kCausal,
  // Every token of the chunk sees every position up to the chunk's end: the
  // reference prefills the gaze prompt this way.
  kFull,
};

struct SequenceChunk {
  int slot = 0;
  int start_pos = 0;  // position of the chunk's first token in the slot
  int n_tokens = 0;   // rows of the flat batch that belong to this chunk
  AttentionMask mask = AttentionMask::kCausal;
  // The image prefix K/V [L, 2, H, Q, D] this sequence reads for its
  // positions below Q, in a cache whose slots start after the prefix
  // (KvCache::shares_prefixes; there every chunk starts at or after Q).
  // Undefined for a cache whose slots hold their own prefix. Sequences on
  // the same tensor read it from memory once per decode step.
  at::Tensor prefix_L2HQD{};
};

// cos/sin of position × frequency for the 16 rotary frequencies,
// [max_context, 16] each, float32, computed as the reference does.
struct RotaryTable {
  at::Tensor cos_PF;
  at::Tensor sin_PF;
};
RotaryTable MakeRotaryTable(const TextConfig& config, at::Device device);

// Rotates the first 32 dims of each head, read as [real | imag] halves and
// written back interleaved (real, imag, real, imag, ...) as the reference
// does; x is [..., N, H, D], cos/sin [N, 16]. Public for the trainer's
// cache-free forward (tools/train), which must rotate exactly as this does.
at::Tensor ApplyRotary(const at::Tensor& x_NHD, const at::Tensor& cos_NF,
                       const at::Tensor& sin_NF);

// Token ids [N] → embeddings [N, C].
at::Tensor EmbedTokens(const at::Tensor& ids_N, const TextWeights& w);

// Checks chunk bounds (and prefixes) against the cache and the batch before a
// forward.
absl::Status ValidateChunks(absl::Span<const SequenceChunk> chunks,
                            int64_t n_rows, const KvCache& cache);

// Runs all layers over embeds [N, C]; writes each chunk's K/V into its slot
// and returns the last layer's residual stream [N, C] (before post LN: the
// region heads read it there).
at::Tensor DecoderForward(const at::Tensor& embeds_NC,
                          absl::Span<const SequenceChunk> chunks,
                          KvCache& cache, const TextWeights& w,
                          const TextConfig& config, const RotaryTable& rotary,
                          int prefix_len);

// Post LN → lm_head on picked rows [B, C] → logits [B, V].
at::Tensor LmHead(const at::Tensor& hidden_BC, const TextWeights& w);

// Row index (into the flat batch) of each chunk's last token.
std::vector<int64_t> LastRowOfEachChunk(absl::Span<const SequenceChunk> chunks);

}  // namespace md

#endif  // MOONDREAM_MODEL_NET_TEXT_H_
