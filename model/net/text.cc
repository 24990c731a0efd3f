#include "model/net/text.h"

#include <ATen/ATen.h>

#include <cmath>
#include <set>

#include "absl/strings/str_cat.h"
#include "model/net/kernels/decode_attention.h"
#include "model/net/layers.h"

namespace md {
namespace {

constexpr int kRotaryDims = 32;  // of each head; 16 frequencies
constexpr double kRotaryTheta = 10000.0;

}  // namespace

at::Tensor ApplyRotary(const at::Tensor& x_NHD, const at::Tensor& cos_NF,
                       const at::Tensor& sin_NF) {
  const int64_t half = kRotaryDims / 2;
  at::Tensor rot = x_NHD.narrow(-1, 0, kRotaryDims).to(at::kFloat);
  at::Tensor re = rot.narrow(-1, 0, half), im = rot.narrow(-1, half, half);
  at::Tensor c = cos_NF.unsqueeze(1), s = sin_NF.unsqueeze(1);
  at::Tensor out_re = re * c - im * s;
  at::Tensor out_im = re * s + im * c;
  at::Tensor rotated = at::stack({out_re, out_im}, -1).flatten(-2);
  return at::cat({rotated.to(x_NHD.scalar_type()),
                  x_NHD.narrow(-1, kRotaryDims, x_NHD.size(-1) - kRotaryDims)},
                 -1);
}

namespace {

// Which keys each query of a chunk may see, or an undefined tensor when it
// may see all of them (a single token, or a kFull chunk).
at::Tensor HiddenKeys(const SequenceChunk& chunk, int prefix_len,
                      at::Device device) {
  if (chunk.mask == AttentionMask::kFull || chunk.n_tokens == 1) return {};
  const int64_t end = chunk.start_pos + chunk.n_tokens;
  auto opts = at::TensorOptions().dtype(at::kLong).device(device);
  at::Tensor q_T1 = at::arange(chunk.start_pos, end, opts).unsqueeze(1);
  at::Tensor k_1K = at::arange(end, opts).unsqueeze(0);
  at::Tensor visible =
      (k_1K <= q_T1)
          .logical_or((q_T1 < prefix_len).logical_and(k_1K < prefix_len));
  return visible.logical_not().unsqueeze(0);  // [1, T, K]: same for all heads
}

// What every layer needs to know about the batch, worked out once per
// forward.
struct BatchPlan {
  at::Tensor cos_NF, sin_NF;       // rotary angles of each row's position
  at::Tensor slot_N, position_N;   // where each row's K/V goes
  std::vector<int64_t> first_row;  // per chunk
  std::vector<at::Tensor> hidden_keys_1TK;  // per chunk; undefined: none
  // Chunks whose tokens run as decode queries (decode steps and prompt
  // chunks after the image prefix), attended by one fused kernel call.
  std::vector<size_t> decode_chunks;
  std::vector<int> decode_slots, decode_n_keys;
  // Where each decode row reads its image prefix (empty: its own slot).
  std::vector<int> decode_prefix_slots;
  int prefix_len = 0;
  at::Tensor decode_rows_B;
};

// Whether each token of the chunk attends exactly to the keys up to its own
// position, so it can run as a decode query: single tokens, and causal
// chunks after the image prefix (prompt prefill).
bool RunsAsDecodeQueries(const SequenceChunk& chunk, int prefix_len) {
  return chunk.n_tokens == 1 || (chunk.mask == AttentionMask::kCausal &&
                                 chunk.start_pos >= prefix_len);
}

BatchPlan MakeBatchPlan(absl::Span<const SequenceChunk> chunks,
                        const RotaryTable& rotary, int prefix_len,
                        at::Device device) {
  std::vector<int64_t> slots, positions, decode_rows;
  BatchPlan plan;
  plan.prefix_len = prefix_len;
  // Grouping pays when rows share prefix reads: several tokens of one
  // chunk, or decode rows pointed at another slot's copy of their prefix.
  bool any_shared_prefix = false;
  for (size_t i = 0; i < chunks.size(); ++i) {
    const SequenceChunk& chunk = chunks[i];
    if (RunsAsDecodeQueries(chunk, prefix_len)) {
      plan.decode_chunks.push_back(i);
      const int prefix_slot =
          chunk.prefix_slot >= 0 ? chunk.prefix_slot : chunk.slot;
      any_shared_prefix |= prefix_slot != chunk.slot || chunk.n_tokens > 1;
      for (int t = 0; t < chunk.n_tokens; ++t) {
        plan.decode_slots.push_back(chunk.slot);
        plan.decode_n_keys.push_back(chunk.start_pos + t + 1);
        plan.decode_prefix_slots.push_back(prefix_slot);
        decode_rows.push_back(static_cast<int64_t>(positions.size()) + t);
      }
    }
    plan.first_row.push_back(static_cast<int64_t>(positions.size()));
    // Chunks that run as decode queries need no mask unless the fused
    // kernel cannot run here; Attention builds it then.
    plan.hidden_keys_1TK.push_back(RunsAsDecodeQueries(chunk, prefix_len)
                                       ? at::Tensor()
                                       : HiddenKeys(chunk, prefix_len, device));
    for (int i = 0; i < chunk.n_tokens; ++i) {
      slots.push_back(chunk.slot);
      positions.push_back(chunk.start_pos + i);
    }
  }
  // Any decode row with fewer keys than the prefix (a model without an
  // image prefix, or a very short context) takes the ungrouped path.
  for (int n : plan.decode_n_keys) any_shared_prefix &= n >= prefix_len;
  if (!any_shared_prefix || prefix_len <= 0) plan.decode_prefix_slots.clear();
  plan.decode_rows_B = at::tensor(decode_rows, at::kLong).to(device);
  plan.slot_N = at::tensor(slots, at::kLong).to(device);
  plan.position_N = at::tensor(positions, at::kLong).to(device);
  plan.cos_NF = rotary.cos_PF.index_select(0, plan.position_N);
  plan.sin_NF = rotary.sin_PF.index_select(0, plan.position_N);
  return plan;
}

// Attention of one chunk against its slot (K/V for the chunk already
// written); q is pre-scaled by 1/√D. q [T, H, D] → [T, H·D].
at::Tensor ChunkAttention(const at::Tensor& q_THD, const at::Tensor& k_HPD,
                          const at::Tensor& v_HPD, const SequenceChunk& chunk,
                          const at::Tensor& hidden_keys_1TK) {
  const int64_t end = chunk.start_pos + chunk.n_tokens;
  at::Tensor keys_HKD = k_HPD.narrow(1, 0, end);
  at::Tensor values_HKD = v_HPD.narrow(1, 0, end);
  at::Tensor scores_HTK =
      at::matmul(q_THD.transpose(0, 1), keys_HKD.transpose(1, 2));
  if (hidden_keys_1TK.defined()) {
    scores_HTK.masked_fill_(hidden_keys_1TK,
                            -std::numeric_limits<double>::infinity());
  }
  // Softmax in float32 whatever the compute dtype, then back.
  at::Tensor probs_HTK =
      at::softmax(scores_HTK, -1, at::kFloat).to(q_THD.scalar_type());
  at::Tensor out_HTD = at::matmul(probs_HTK, values_HKD);
  return out_HTD.transpose(0, 1).reshape({chunk.n_tokens, -1});
}

at::Tensor Attention(const at::Tensor& x_NC, const AttentionWeights& w,
                     absl::Span<const SequenceChunk> chunks,
                     const BatchPlan& plan, at::Tensor& k_SHPD,
                     at::Tensor& v_SHPD, int n_heads) {
  const int64_t n = x_NC.size(0), c = x_NC.size(1), d = c / n_heads;
  std::vector<at::Tensor> qkv = Linear(x_NC, w.qkv).chunk(3, -1);
  // The reference scales the scores; scaling q instead is the same product
  // (exactly so for head_dim 64, where the scale is 1/8) and T·K cheaper.
  at::Tensor q_NHD =
      ApplyRotary(qkv[0].view({n, n_heads, d}), plan.cos_NF, plan.sin_NF) *
      (1.0 / std::sqrt(static_cast<double>(d)));
  at::Tensor k_NHD =
      ApplyRotary(qkv[1].view({n, n_heads, d}), plan.cos_NF, plan.sin_NF);
  at::Tensor v_NHD = qkv[2].view({n, n_heads, d});

  // Write every row's K/V into its slot at its position in one go: the
  // cache seen as [S, P, H, D] is indexed by (slot, position).
  k_SHPD.permute({0, 2, 1, 3})
      .index_put_({plan.slot_N, plan.position_N}, k_NHD);
  v_SHPD.permute({0, 2, 1, 3})
      .index_put_({plan.slot_N, plan.position_N}, v_NHD);

  at::Tensor out_NC = at::empty({n, c}, x_NC.options());
  std::vector<bool> done(chunks.size(), false);
  if (plan.decode_chunks.size() > 0) {
    // All decode steps of the batch in one pass over their slots' K/V.
    at::Tensor out_BHD = DecodeAttention(
        q_NHD.index_select(0, plan.decode_rows_B), k_SHPD, v_SHPD,
        plan.decode_slots, plan.decode_n_keys, /*scale=*/1.0,
        plan.decode_prefix_slots, plan.prefix_len);
    if (out_BHD.defined()) {
      out_NC.index_copy_(0, plan.decode_rows_B,
                         out_BHD.reshape({out_BHD.size(0), c}));
      for (size_t i : plan.decode_chunks) done[i] = true;
    }
  }
  for (size_t i = 0; i < chunks.size(); ++i) {
    if (done[i]) continue;
    const SequenceChunk& chunk = chunks[i];
    const int64_t row = plan.first_row[i], t = chunk.n_tokens;
    const at::Tensor hidden_keys_1TK =
        RunsAsDecodeQueries(chunk, plan.prefix_len)
            ? HiddenKeys(chunk, plan.prefix_len, x_NC.device())
            : plan.hidden_keys_1TK[i];
    out_NC.narrow(0, row, t).copy_(
        ChunkAttention(q_NHD.narrow(0, row, t), k_SHPD[chunk.slot],
                       v_SHPD[chunk.slot], chunk, hidden_keys_1TK));
  }
  return Linear(out_NC, w.proj);
}

}  // namespace

RotaryTable MakeRotaryTable(const TextConfig& config, at::Device device) {
  // As the reference: float32 frequencies, angles t·f in float32, then
  // exp(i·angle) in complex64.
  auto f32 = at::TensorOptions().dtype(at::kFloat);
  at::Tensor exponents = at::arange(0, kRotaryDims, 2, f32) / kRotaryDims;
  at::Tensor freqs_F = 1.0 / at::pow(kRotaryTheta, exponents);
  at::Tensor t_P1 = at::arange(config.max_context, f32).unsqueeze(1);
  at::Tensor angles_PF = t_P1 * freqs_F.unsqueeze(0);
  at::Tensor unit = at::exp(at::complex(at::zeros_like(angles_PF), angles_PF));
  return {at::real(unit).contiguous().to(device),
          at::imag(unit).contiguous().to(device)};
}

at::Tensor EmbedTokens(const at::Tensor& ids_N, const TextWeights& w) {
  return w.wte.index_select(0, ids_N.to(w.wte.device()));
}

absl::Status ValidateChunks(absl::Span<const SequenceChunk> chunks,
                            int64_t n_rows, const KvCache& cache) {
  int64_t total = 0;
  std::set<int> slots;
  for (const SequenceChunk& chunk : chunks) {
    if (chunk.slot < 0 || chunk.slot >= cache.n_slots) {
      return absl::InvalidArgumentError(absl::StrCat(
          "decoder: slot ", chunk.slot, " outside 0..", cache.n_slots - 1));
    }
    if (chunk.prefix_slot >= cache.n_slots) {
      return absl::InvalidArgumentError(
          absl::StrCat("decoder: prefix slot ", chunk.prefix_slot,
                       " outside 0..", cache.n_slots - 1));
    }
    if (!slots.insert(chunk.slot).second) {
      return absl::InvalidArgumentError(absl::StrCat(
          "decoder: slot ", chunk.slot, " appears twice in one batch"));
    }
    if (chunk.n_tokens <= 0 || chunk.start_pos < 0 ||
        chunk.start_pos + chunk.n_tokens > cache.n_positions) {
      return absl::OutOfRangeError(absl::StrCat(
          "decoder: slot ", chunk.slot, " positions ", chunk.start_pos, "..",
          chunk.start_pos + chunk.n_tokens - 1, " do not fit its ",
          cache.n_positions, " positions"));
    }
    total += chunk.n_tokens;
  }
  if (total != n_rows) {
    return absl::InvalidArgumentError(absl::StrCat(
        "decoder: chunks cover ", total, " tokens but the batch has ", n_rows));
  }
  return absl::OkStatus();
}

at::Tensor DecoderForward(const at::Tensor& embeds_NC,
                          absl::Span<const SequenceChunk> chunks,
                          KvCache& cache, const TextWeights& w,
                          const TextConfig& config, const RotaryTable& rotary,
                          int prefix_len) {
  const BatchPlan plan =
      MakeBatchPlan(chunks, rotary, prefix_len, embeds_NC.device());
  at::Tensor hidden_NC = embeds_NC;
  for (size_t l = 0; l < w.blocks.size(); ++l) {
    const TextBlockWeights& block = w.blocks[l];
    // Parallel residual: attention and MLP both read the same LN output.
    at::Tensor ln_NC = LayerNorm(hidden_NC, block.ln);
    at::Tensor attn_NC =
        Attention(ln_NC, block.attn, chunks, plan, cache.k_SHPD[l],
                  cache.v_SHPD[l], config.n_heads);
    hidden_NC = hidden_NC + attn_NC + Mlp(ln_NC, block.mlp);
  }
  return hidden_NC;
}

at::Tensor LmHead(const at::Tensor& hidden_BC, const TextWeights& w) {
  return Linear(LayerNorm(hidden_BC, w.post_ln), w.lm_head);
}

std::vector<int64_t> LastRowOfEachChunk(
    absl::Span<const SequenceChunk> chunks) {
  std::vector<int64_t> rows;
  int64_t row = 0;
  for (const SequenceChunk& chunk : chunks) {
    row += chunk.n_tokens;
    rows.push_back(row - 1);
  }
  return rows;
}

}  // namespace md
