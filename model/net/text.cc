#include "model/net/text.h"

#include <ATen/ATen.h>
#include <ATen/record_function.h>

#include <cmath>
#include <cstring>
#include <set>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "model/net/kernels/batched_matmul.h"
#include "model/net/kernels/decode_attention.h"
#include "model/net/kernels/softmax_bf16.h"
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

// Rotary on q (then scaled) and k of every row, read straight from the qkv
// linear's output [N, 3·H·D] into q_NHD and k_NHD: ApplyRotary's arithmetic
// (float32 products, each rounded, then their sum: this file is built for
// baseline x86-64, so there is no fused multiply-add; the rotated values
// rounded to T, then q times the scale in T, as ATen's ops round them)
// without its dozen tensor ops per layer, which cost more than the math at
// decode batch sizes.
template <typename T>
void RotateQk(const T* qkv, int64_t n, int64_t n_heads, int64_t d,
              const float* cos_PF, const float* sin_PF,
              const std::vector<int64_t>& positions, double scale, T* q_NHD,
              T* k_NHD) {
  constexpr int64_t half = kRotaryDims / 2;
  const int64_t c = n_heads * d;
  const float scale_t = static_cast<float>(static_cast<T>(scale));
  auto rotate = [&](const T* x, const float* cos_F, const float* sin_F,
                    bool scaled, T* out) {
    auto store = [&](int64_t i, T v) {
      out[i] = scaled ? static_cast<T>(static_cast<float>(v) * scale_t) : v;
    };
    for (int64_t f = 0; f < half; ++f) {
      const float re = static_cast<float>(x[f]);
      const float im = static_cast<float>(x[half + f]);
      const float re_c = re * cos_F[f], im_s = im * sin_F[f];
      const float re_s = re * sin_F[f], im_c = im * cos_F[f];
      store(2 * f, static_cast<T>(re_c - im_s));
      store(2 * f + 1, static_cast<T>(re_s + im_c));
    }
    for (int64_t i = kRotaryDims; i < d; ++i) store(i, x[i]);
  };
  for (int64_t row = 0; row < n; ++row) {
    const float* cos_F = cos_PF + positions[row] * half;
    const float* sin_F = sin_PF + positions[row] * half;
    for (int64_t h = 0; h < n_heads; ++h) {
      const int64_t at = row * n_heads * d + h * d;
      rotate(qkv + row * 3 * c + h * d, cos_F, sin_F, true, q_NHD + at);
      rotate(qkv + row * 3 * c + c + h * d, cos_F, sin_F, false, k_NHD + at);
    }
  }
}

// Whether RotateQk and WriteKvRows run on these tensors: dense CPU fp32 or
// bf16 outside autograd, head dims that hold the rotary dims.
bool FastRowsApply(const at::Tensor& qkv_N3C, const at::Tensor& cos_PF,
                   const at::Tensor& k_SHPD, const at::Tensor& v_SHPD,
                   int64_t d) {
  const at::ScalarType t = qkv_N3C.scalar_type();
  return (t == at::kFloat || t == at::kBFloat16) && qkv_N3C.is_cpu() &&
         qkv_N3C.dim() == 2 && qkv_N3C.is_contiguous() &&
         !qkv_N3C.requires_grad() && d >= kRotaryDims && cos_PF.is_cpu() &&
         cos_PF.scalar_type() == at::kFloat && cos_PF.is_contiguous() &&
         cos_PF.size(1) == kRotaryDims / 2 && k_SHPD.is_cpu() &&
         v_SHPD.is_cpu() && k_SHPD.scalar_type() == t &&
         v_SHPD.scalar_type() == t && k_SHPD.is_contiguous() &&
         v_SHPD.is_contiguous();
}

// Copies each row's [H, D] into cache[slot, :, stored, :]: H memcpys of D
// elements per row, where index_put_ over 32 rows took ~0.2 ms per tensor.
// src rows are src_row_stride elements apart, heads D apart.
void WriteKvRows(const at::Tensor& src, int64_t src_row_stride,
                 const std::vector<int64_t>& slots,
                 const std::vector<int64_t>& stored, at::Tensor& cache_SHPD) {
  const int64_t n_heads = cache_SHPD.size(1), n_pos = cache_SHPD.size(2),
                d = cache_SHPD.size(3), elem = cache_SHPD.element_size();
  const char* from = static_cast<const char*>(src.data_ptr());
  char* to = static_cast<char*>(cache_SHPD.data_ptr());
  for (size_t row = 0; row < slots.size(); ++row) {
    for (int64_t h = 0; h < n_heads; ++h) {
      std::memcpy(
          to + ((slots[row] * n_heads + h) * n_pos + stored[row]) * d * elem,
          from + (static_cast<int64_t>(row) * src_row_stride + h * d) * elem,
          d * elem);
    }
  }
}

at::Tensor DecoderLayerNorm(const at::Tensor& x_NC, const LayerNormWeights& w) {
  RECORD_USER_SCOPE("md::layer_norm");
  return LayerNorm(x_NC, w);
}

// Which keys each query of a chunk may see, or an undefined tensor when it
// may see all of them (a single token, or a kFull chunk).
at::Tensor HiddenKeys(const SequenceChunk& chunk, int prefix_len,
                      at::Device device) {
  const int64_t end = chunk.start_pos + chunk.n_tokens;
  // Within the image prefix every query sees every key up to `end`.
  if (chunk.mask == AttentionMask::kFull || chunk.n_tokens == 1 ||
      end <= prefix_len) {
    return {};
  }
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
  at::Tensor cos_NF, sin_NF;  // rotary angles of each row's position
  // Where each row's K/V goes: its slot, and its index there (the position
  // less the cache's slot offset).
  at::Tensor slot_N, stored_N;
  std::vector<int64_t> slots, stored;       // the same, for the fast paths
  std::vector<int64_t> positions;           // each row's position
  int slot_offset = 0;                      // the cache's
  at::Tensor cos_PF, sin_PF;                // the whole table, ditto
  std::vector<int64_t> first_row;           // per chunk
  std::vector<at::Tensor> hidden_keys_1TK;  // per chunk; undefined: none
  // Chunks whose tokens run as decode queries (decode steps and prompt
  // chunks after the image prefix), attended by one fused kernel call.
  std::vector<size_t> decode_chunks;
  std::vector<int> decode_slots, decode_n_keys;
  // The shared image prefix each decode row reads (empty: its slot holds
  // its own).
  std::vector<at::Tensor> decode_prefixes;
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
                        int slot_offset, at::Device device) {
  std::vector<int64_t> slots, positions, decode_rows;
  BatchPlan plan;
  plan.prefix_len = prefix_len;
  plan.slot_offset = slot_offset;
  for (size_t i = 0; i < chunks.size(); ++i) {
    const SequenceChunk& chunk = chunks[i];
    if (RunsAsDecodeQueries(chunk, prefix_len)) {
      plan.decode_chunks.push_back(i);
      for (int t = 0; t < chunk.n_tokens; ++t) {
        plan.decode_slots.push_back(chunk.slot);
        plan.decode_n_keys.push_back(chunk.start_pos + t + 1);
        if (slot_offset > 0) plan.decode_prefixes.push_back(chunk.prefix_L2HQD);
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
      plan.stored.push_back(chunk.start_pos + i - slot_offset);
    }
  }
  plan.decode_rows_B = at::tensor(decode_rows, at::kLong).to(device);
  plan.slot_N = at::tensor(slots, at::kLong).to(device);
  plan.stored_N = at::tensor(plan.stored, at::kLong).to(device);
  at::Tensor position_N = at::tensor(positions, at::kLong).to(device);
  plan.cos_NF = rotary.cos_PF.index_select(0, position_N);
  plan.sin_NF = rotary.sin_PF.index_select(0, position_N);
  plan.cos_PF = rotary.cos_PF;
  plan.sin_PF = rotary.sin_PF;
  plan.slots = std::move(slots);
  plan.positions = std::move(positions);
  return plan;
}

// A chunk's keys (or values) at positions 0..end−1 of one layer, [H, end,
// D]: a view of its slot, or its shared prefix followed by its slot.
at::Tensor KeysUpTo(const at::Tensor& slot_HPD, const SequenceChunk& chunk,
                    const BatchPlan& plan, int64_t layer, int kv, int64_t end) {
  if (plan.slot_offset == 0) return slot_HPD.narrow(1, 0, end);
  return at::cat({chunk.prefix_L2HQD[layer][kv],
                  slot_HPD.narrow(1, 0, end - plan.slot_offset)},
                 1);
}

// Attention of one chunk against its keys and values up to its last
// position (K/V for the chunk already written); q is pre-scaled by 1/√D.
// q [T, H, D] → [T, H·D].
at::Tensor ChunkAttention(const at::Tensor& q_THD, const at::Tensor& keys_HKD,
                          const at::Tensor& values_HKD,
                          const SequenceChunk& chunk,
                          const at::Tensor& hidden_keys_1TK) {
  at::Tensor scores_HTK =
      BatchedMatmul(q_THD.transpose(0, 1), keys_HKD.transpose(1, 2));
  if (hidden_keys_1TK.defined()) {
    scores_HTK.masked_fill_(hidden_keys_1TK,
                            -std::numeric_limits<double>::infinity());
  }
  // Softmax in float32 whatever the compute dtype, then back (bf16: in one
  // pass, in place).
  at::Tensor probs_HTK =
      ScaledSoftmaxBf16InPlace(scores_HTK, /*scale=*/1.0)
          ? scores_HTK
          : at::softmax(scores_HTK, -1, at::kFloat).to(q_THD.scalar_type());
  at::Tensor out_HTD = BatchedMatmul(probs_HTK, values_HKD);
  return out_HTD.transpose(0, 1).reshape({chunk.n_tokens, -1});
}

// Rotary and the K/V write with ATen ops, for what the fast path does not
// take (CUDA, fp16, autograd).
void AttentionRowsSlow(const at::Tensor& qkv_N3C, const BatchPlan& plan,
                       at::Tensor& k_SHPD, at::Tensor& v_SHPD, int n_heads,
                       at::Tensor& q_NHD) {
  const int64_t n = qkv_N3C.size(0), c = qkv_N3C.size(1) / 3, d = c / n_heads;
  std::vector<at::Tensor> qkv = qkv_N3C.chunk(3, -1);
  at::Tensor k_NHD;
  {
    RECORD_USER_SCOPE("md::rotary");  // op profiles: the step's parts
    // The reference scales the scores; scaling q instead is the same product
    // (exactly so for head_dim 64, where the scale is 1/8) and T·K cheaper.
    q_NHD =
        ApplyRotary(qkv[0].view({n, n_heads, d}), plan.cos_NF, plan.sin_NF) *
        (1.0 / std::sqrt(static_cast<double>(d)));
    k_NHD = ApplyRotary(qkv[1].view({n, n_heads, d}), plan.cos_NF, plan.sin_NF);
  }
  at::Tensor v_NHD = qkv[2].view({n, n_heads, d});
  {
    RECORD_USER_SCOPE("md::kv_write");
    // Write every row's K/V into its slot at its position in one go: the
    // cache seen as [S, P, H, D] is indexed by (slot, stored position).
    k_SHPD.permute({0, 2, 1, 3})
        .index_put_({plan.slot_N, plan.stored_N}, k_NHD);
    v_SHPD.permute({0, 2, 1, 3})
        .index_put_({plan.slot_N, plan.stored_N}, v_NHD);
  }
}

// Attention of every row against its slot, K/V of the rows already written.
// q [N, H, D] (pre-scaled) → [N, H·D].
at::Tensor AttendRows(const at::Tensor& q_NHD,
                      absl::Span<const SequenceChunk> chunks,
                      const BatchPlan& plan, int64_t layer,
                      const at::Tensor& k_SHPD, const at::Tensor& v_SHPD,
                      const at::Tensor& x_NC) {
  const int64_t n = q_NHD.size(0), c = q_NHD.size(1) * q_NHD.size(2);
  RECORD_USER_SCOPE("md::attention");
  at::Tensor out_NC = at::empty({n, c}, x_NC.options());
  std::vector<bool> done(chunks.size(), false);
  if (plan.decode_chunks.size() > 0) {
    // All decode steps of the batch in one pass over their slots' K/V (and
    // their shared prefixes, each read once).
    const SharedPrefixes prefixes{.prefix_L2HQD = plan.decode_prefixes,
                                  .layer = static_cast<int>(layer),
                                  .len = plan.slot_offset};
    at::Tensor out_BHD = DecodeAttention(
        q_NHD.index_select(0, plan.decode_rows_B), k_SHPD, v_SHPD,
        plan.decode_slots, plan.decode_n_keys, /*scale=*/1.0,
        plan.slot_offset > 0 ? &prefixes : nullptr);
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
    const int64_t end = chunk.start_pos + t;
    out_NC.narrow(0, row, t).copy_(
        ChunkAttention(q_NHD.narrow(0, row, t),
                       KeysUpTo(k_SHPD[chunk.slot], chunk, plan, layer, 0, end),
                       KeysUpTo(v_SHPD[chunk.slot], chunk, plan, layer, 1, end),
                       chunk, hidden_keys_1TK));
  }
  return out_NC;
}

at::Tensor Attention(const at::Tensor& x_NC, const AttentionWeights& w,
                     absl::Span<const SequenceChunk> chunks,
                     const BatchPlan& plan, int64_t layer, at::Tensor& k_SHPD,
                     at::Tensor& v_SHPD, int n_heads) {
  const int64_t n = x_NC.size(0), c = x_NC.size(1), d = c / n_heads;
  at::Tensor qkv_N3C = Linear(x_NC, w.qkv);
  at::Tensor q_NHD, k_NHD;
  if (FastRowsApply(qkv_N3C, plan.cos_PF, k_SHPD, v_SHPD, d)) {
    {
      RECORD_USER_SCOPE("md::rotary");
      q_NHD = at::empty({n, n_heads, d}, qkv_N3C.options());
      k_NHD = at::empty({n, n_heads, d}, qkv_N3C.options());
      const double scale = 1.0 / std::sqrt(static_cast<double>(d));
      if (qkv_N3C.scalar_type() == at::kFloat) {
        RotateQk(qkv_N3C.data_ptr<float>(), n, n_heads, d,
                 plan.cos_PF.data_ptr<float>(), plan.sin_PF.data_ptr<float>(),
                 plan.positions, scale, q_NHD.data_ptr<float>(),
                 k_NHD.data_ptr<float>());
      } else {
        RotateQk(qkv_N3C.data_ptr<at::BFloat16>(), n, n_heads, d,
                 plan.cos_PF.data_ptr<float>(), plan.sin_PF.data_ptr<float>(),
                 plan.positions, scale, q_NHD.data_ptr<at::BFloat16>(),
                 k_NHD.data_ptr<at::BFloat16>());
      }
    }
    RECORD_USER_SCOPE("md::kv_write");
    WriteKvRows(k_NHD, c, plan.slots, plan.stored, k_SHPD);
    WriteKvRows(qkv_N3C.narrow(1, 2 * c, c), 3 * c, plan.slots, plan.stored,
                v_SHPD);
  } else {
    AttentionRowsSlow(qkv_N3C, plan, k_SHPD, v_SHPD, n_heads, q_NHD);
  }
  return AttendRows(q_NHD, chunks, plan, layer, k_SHPD, v_SHPD, x_NC);
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

namespace {

// A chunk's shared prefix matches the cache's layout: present, [L, 2, H, Q,
// D] in the cache's dtype and device, and the chunk after it; or absent.
absl::Status ValidatePrefix(const SequenceChunk& chunk, const KvCache& cache) {
  const at::Tensor& p = chunk.prefix_L2HQD;
  if (!cache.shares_prefixes()) {
    if (p.defined()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "decoder: slot ", chunk.slot,
          " got a shared prefix, but this cache's slots hold their own"));
    }
    return absl::OkStatus();
  }
  if (!p.defined()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "decoder: slot ", chunk.slot, " has no image prefix to read"));
  }
  const at::Tensor& k = cache.k_SHPD.at(0);
  if (p.dim() != 5 || p.size(0) != static_cast<int64_t>(cache.k_SHPD.size()) ||
      p.size(1) != 2 || p.size(2) != k.size(1) ||
      p.size(3) != cache.slot_offset || p.size(4) != k.size(3) ||
      p.scalar_type() != k.scalar_type() || p.device() != k.device() ||
      !p.is_contiguous()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "decoder: slot ", chunk.slot, "'s image prefix is not a contiguous [",
        cache.k_SHPD.size(), ", 2, ", k.size(1), ", ", cache.slot_offset, ", ",
        k.size(3), "] tensor of the cache's dtype and device"));
  }
  if (chunk.start_pos < cache.slot_offset) {
    return absl::InvalidArgumentError(
        absl::StrCat("decoder: slot ", chunk.slot, " writes position ",
                     chunk.start_pos, ", inside its shared image prefix (",
                     cache.slot_offset, " positions)"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateChunks(absl::Span<const SequenceChunk> chunks,
                            int64_t n_rows, const KvCache& cache) {
  int64_t total = 0;
  std::set<int> slots;
  for (const SequenceChunk& chunk : chunks) {
    if (chunk.slot < 0 || chunk.slot >= cache.n_slots) {
      return absl::InvalidArgumentError(absl::StrCat(
          "decoder: slot ", chunk.slot, " outside 0..", cache.n_slots - 1));
    }
    RETURN_IF_ERROR(ValidatePrefix(chunk, cache));
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
  const BatchPlan plan = [&] {
    RECORD_USER_SCOPE("md::batch_plan");
    return MakeBatchPlan(chunks, rotary, prefix_len, cache.slot_offset,
                         embeds_NC.device());
  }();
  at::Tensor hidden_NC = embeds_NC;
  for (size_t l = 0; l < w.blocks.size(); ++l) {
    const TextBlockWeights& block = w.blocks[l];
    // Parallel residual: attention and MLP both read the same LN output.
    at::Tensor ln_NC = DecoderLayerNorm(hidden_NC, block.ln);
    at::Tensor attn_NC = Linear(
        Attention(ln_NC, block.attn, chunks, plan, static_cast<int64_t>(l),
                  cache.k_SHPD[l], cache.v_SHPD[l], config.n_heads),
        block.attn.proj);
    at::Tensor mlp_NC = Mlp(ln_NC, block.mlp);
    RECORD_USER_SCOPE("md::residual");
    hidden_NC = hidden_NC + attn_NC + mlp_NC;
  }
  return hidden_NC;
}

at::Tensor LmHead(const at::Tensor& hidden_BC, const TextWeights& w) {
  RECORD_USER_SCOPE("md::lm_head");  // its linear included
  return Linear(DecoderLayerNorm(hidden_BC, w.post_ln), w.lm_head);
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
