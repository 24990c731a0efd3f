#include "tools/train/train_forward.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <limits>
#include <utility>

#include "model/net/layers.h"
#include "model/net/region.h"
#include "model/net/vision.h"

namespace md::train {
namespace {

struct HeadsOf {
  at::Tensor q, k, v;  // [..., N, H, D]; q pre-scaled, q and k rotated
};

// As the inference decoder: one qkv linear split q|k|v, rotary on q and k,
// q scaled by 1/√D (docs/DESIGN.md §2.4; model/net/text.cc).
HeadsOf QueryKeyValue(const at::Tensor& ln_NC, const AttentionWeights& w,
                      int n_heads, const at::Tensor& cos_NF,
                      const at::Tensor& sin_NF) {
  std::vector<at::Tensor> qkv = Linear(ln_NC, w.qkv).chunk(3, -1);
  std::vector<int64_t> shape = ln_NC.sizes().vec();
  const int64_t d = shape.back() / n_heads;
  shape.back() = n_heads;
  shape.push_back(d);
  return {ApplyRotary(qkv[0].view(shape), cos_NF, sin_NF) *
              (1.0 / std::sqrt(static_cast<double>(d))),
          ApplyRotary(qkv[1].view(shape), cos_NF, sin_NF), qkv[2].view(shape)};
}

// The prefix attends to itself, every position to every other: [P, C].
at::Tensor PrefixAttention(const HeadsOf& p, const AttentionWeights& w) {
  const at::Tensor q_HPD = p.q.transpose(0, 1), k_HPD = p.k.transpose(0, 1);
  const at::Tensor v_HPD = p.v.transpose(0, 1);
  at::Tensor scores_HPP = at::matmul(q_HPD, k_HPD.transpose(1, 2));
  at::Tensor probs_HPP = at::softmax(scores_HPP, -1, at::kFloat);
  at::Tensor out_HPD = at::matmul(probs_HPP, v_HPD);
  return Linear(out_HPD.transpose(0, 1).reshape({p.q.size(0), -1}), w.proj);
}

// Each sequence's rows attend to the whole prefix and to their own rows up
// to themselves: [B, T, C]. `focus_probs_BTP`, when given, receives the
// first head's attention to the prefix.
at::Tensor RowAttention(const HeadsOf& rows, const HeadsOf& prefix,
                        const at::Tensor& later_TT, const AttentionWeights& w,
                        at::Tensor* focus_probs_BTP) {
  const int64_t b = rows.q.size(0), t = rows.q.size(1);
  const int64_t p = prefix.k.size(0);
  const at::Tensor q_BHTD = rows.q.permute({0, 2, 1, 3});
  const at::Tensor k_BHTD = rows.k.permute({0, 2, 1, 3});
  const at::Tensor v_BHTD = rows.v.permute({0, 2, 1, 3});
  const at::Tensor k_1HPD = prefix.k.transpose(0, 1).unsqueeze(0);
  const at::Tensor v_1HPD = prefix.v.transpose(0, 1).unsqueeze(0);
  at::Tensor to_prefix_BHTP = at::matmul(q_BHTD, k_1HPD.transpose(-1, -2));
  at::Tensor to_own_BHTT =
      at::matmul(q_BHTD, k_BHTD.transpose(-1, -2))
          .masked_fill(later_TT, -std::numeric_limits<double>::infinity());
  at::Tensor probs_BHTK =
      at::softmax(at::cat({to_prefix_BHTP, to_own_BHTT}, -1), -1, at::kFloat);
  if (focus_probs_BTP != nullptr) {
    *focus_probs_BTP = probs_BHTK.select(1, 0).narrow(-1, 0, p);
  }
  at::Tensor out_BHTD = at::matmul(probs_BHTK.narrow(-1, 0, p), v_1HPD) +
                        at::matmul(probs_BHTK.narrow(-1, p, t), v_BHTD);
  return Linear(out_BHTD.permute({0, 2, 1, 3}).reshape({b, t, -1}), w.proj);
}

// The target distribution over n_bins of each row: an even mixture over
// its set of bins of a normalised Gaussian around each (sigma > 0) or the
// bin itself.
at::Tensor BinTargets(int64_t n_bins,
                      const std::vector<std::vector<int64_t>>& sets,
                      double sigma) {
  std::vector<int64_t> owner, centre;
  std::vector<float> weight;
  for (size_t i = 0; i < sets.size(); ++i) {
    for (int64_t bin : sets[i]) {
      owner.push_back(static_cast<int64_t>(i));
      centre.push_back(bin);
      weight.push_back(1.0f / static_cast<float>(sets[i].size()));
    }
  }
  at::Tensor x_1X = at::arange(n_bins, at::kFloat).unsqueeze(0);
  at::Tensor centre_M1 = at::tensor(centre, at::kLong).unsqueeze(1);
  at::Tensor each_MX = sigma > 0
                           ? at::exp(-(x_1X - centre_M1.to(at::kFloat)).pow(2) /
                                     (2 * sigma * sigma))
                           : (x_1X == centre_M1.to(at::kFloat)).to(at::kFloat);
  each_MX = each_MX / each_MX.sum(-1, true) * at::tensor(weight).unsqueeze(1);
  return at::zeros({static_cast<int64_t>(sets.size()), n_bins}, at::kFloat)
      .index_add_(0, at::tensor(owner, at::kLong), each_MX);
}

at::Tensor BinLoss(const at::Tensor& logits_NX,
                   const std::vector<int64_t>& bins, double sigma) {
  std::vector<std::vector<int64_t>> sets;
  for (int64_t bin : bins) sets.push_back({bin});
  return BinSetLoss(logits_NX, sets, sigma);
}

at::Tensor RowsOf(const at::Tensor& flat_NC, const std::vector<int64_t>& rows) {
  return flat_NC.index_select(0, at::tensor(rows, at::kLong));
}

std::vector<int64_t> UnionOf(
    std::initializer_list<const std::vector<int64_t>*> lists) {
  std::vector<int64_t> all;
  for (const std::vector<int64_t>* list : lists) {
    all.insert(all.end(), list->begin(), list->end());
  }
  std::sort(all.begin(), all.end());
  all.erase(std::unique(all.begin(), all.end()), all.end());
  return all;
}

double MeanOf(const at::Tensor& losses) {
  return losses.defined() && losses.numel() > 0 ? losses.mean().item<double>()
                                                : 0.0;
}

}  // namespace

at::Tensor BinSetLoss(const at::Tensor& logits_NX,
                      const std::vector<std::vector<int64_t>>& sets,
                      double sigma) {
  at::Tensor lp_NX = at::log_softmax(logits_NX, -1);
  at::Tensor target_NX = BinTargets(logits_NX.size(1), sets, sigma);
  // Cross-entropy less the target's entropy: the same gradient, and logs
  // that read alike for any sigma.
  return (target_NX * (target_NX.clamp_min(1e-30).log() - lp_NX)).sum(-1);
}

at::Tensor ImageEmbedding(const ImageCrops& image, const Weights& w,
                          const VisionConfig& config) {
  at::Tensor features_BPE = EncodeDistinctCrops(
      image.crops_u8, w.vision, config, at::kFloat, w.text.wte.device());
  const int64_t n_tiles = image.tiling.n_tiles();
  at::Tensor local_NGGE =
      features_BPE.narrow(0, 1, n_tiles)
          .view({n_tiles, config.grid(), config.grid(), config.enc_dim});
  at::Tensor pooled_GGE = PoolReconstructed(
      ReconstructFromCrops(local_NGGE, image.tiling, config.overlap_margin),
      config);
  return ProjectImage(features_BPE[0], pooled_GGE, w.vision, config);
}

at::Tensor PrefixEmbeddings(const at::Tensor& image_PC, const Weights& w,
                            const MoondreamConfig& config) {
  at::Tensor bos_1C = EmbedTokens(
      at::tensor({static_cast<int64_t>(config.tokenizer.bos_id)}, at::kLong),
      w.text);
  return at::cat({bos_1C, image_PC}, 0);
}

at::Tensor EmbedSequences(absl::Span<const Sequence> sequences,
                          const Weights& w) {
  int64_t t = 0;
  for (const Sequence& s : sequences) {
    t = std::max<int64_t>(t, static_cast<int64_t>(s.rows.size()));
  }
  const int64_t b = static_cast<int64_t>(sequences.size());
  std::vector<int64_t> ids(b * t, 0), coord_rows, size_rows;
  std::vector<float> coords, sizes;
  for (int64_t i = 0; i < b; ++i) {
    const std::vector<InputRow>& rows = sequences[i].rows;
    for (size_t r = 0; r < rows.size(); ++r) {
      const int64_t flat = i * t + static_cast<int64_t>(r);
      switch (rows[r].kind) {
        case RowKind::kToken:
          ids[flat] = rows[r].token;
          break;
        case RowKind::kCoordinate:
          coord_rows.push_back(flat);
          coords.push_back(rows[r].value[0]);
          break;
        case RowKind::kSize:
          size_rows.push_back(flat);
          sizes.insert(sizes.end(), rows[r].value.begin(), rows[r].value.end());
          break;
      }
    }
  }
  at::Tensor embeds_NC = EmbedTokens(at::tensor(ids, at::kLong), w.text);
  if (!coord_rows.empty()) {
    embeds_NC = embeds_NC.index_copy(
        0, at::tensor(coord_rows, at::kLong),
        EncodeCoordinate(at::tensor(coords, at::kFloat), w.region));
  }
  if (!size_rows.empty()) {
    embeds_NC = embeds_NC.index_copy(
        0, at::tensor(size_rows, at::kLong),
        EncodeSize(at::tensor(sizes, at::kFloat).view({-1, 2}), w.region));
  }
  return embeds_NC.view({b, t, -1});
}

at::Tensor DecoderForward(const at::Tensor& prefix_PC,
                          const at::Tensor& rows_BTC, const TextWeights& w,
                          const TextConfig& config, const RotaryTable& rotary,
                          FocusTaps* taps) {
  const int64_t p = prefix_PC.size(0), t = rows_BTC.size(1);
  const at::Tensor cos_PF = rotary.cos_PF.narrow(0, 0, p);
  const at::Tensor sin_PF = rotary.sin_PF.narrow(0, 0, p);
  const at::Tensor cos_TF = rotary.cos_PF.narrow(0, p, t);
  const at::Tensor sin_TF = rotary.sin_PF.narrow(0, p, t);
  // Keys after the query's own row.
  const at::Tensor later_TT =
      at::ones({t, t}, at::TensorOptions().dtype(at::kBool)).triu(1);
  at::Tensor prefix = prefix_PC, rows = rows_BTC;
  for (size_t l = 0; l < w.blocks.size(); ++l) {
    const TextBlockWeights& block = w.blocks[l];
    // Parallel residual, summed in the inference decoder's order.
    at::Tensor ln_PC = LayerNorm(prefix, block.ln);
    at::Tensor ln_BTC = LayerNorm(rows, block.ln);
    HeadsOf p_heads =
        QueryKeyValue(ln_PC, block.attn, config.n_heads, cos_PF, sin_PF);
    HeadsOf r_heads =
        QueryKeyValue(ln_BTC, block.attn, config.n_heads, cos_TF, sin_TF);
    const bool last = l + 1 == w.blocks.size();
    const bool before_last = l + 2 == w.blocks.size();
    at::Tensor* head_probs_BTP = nullptr;
    if (taps != nullptr && last) head_probs_BTP = &taps->probs_BTP;
    if (taps != nullptr && before_last) {
      head_probs_BTP = &taps->answered_probs_BTP;
    }
    at::Tensor rows_attn =
        RowAttention(r_heads, p_heads, later_TT, block.attn, head_probs_BTP);
    if (last && taps != nullptr) {
      taps->values_PD = p_heads.v.select(1, 0);
      taps->last_input_PC = ln_PC;
    }
    rows = rows + rows_attn + Mlp(ln_BTC, block.mlp);
    if (!last) {
      prefix =
          prefix + PrefixAttention(p_heads, block.attn) + Mlp(ln_PC, block.mlp);
    }
  }
  return rows;
}

// Per focus row (the targets in `targets` of each sequence): −log of the
// attention mass on its positions, or with `spread` the KL from the
// target's spread over them (even unless it gives shares).
at::Tensor FocusLoss(
    const at::Tensor& probs_BTP, absl::Span<const Sequence> sequences,
    bool spread,
    std::vector<FocusTarget> Sequence::*targets = &Sequence::focuses) {
  const int64_t t = probs_BTP.size(1), p = probs_BTP.size(2);
  std::vector<int64_t> rows;
  std::vector<float> mask, cells;
  for (size_t i = 0; i < sequences.size(); ++i) {
    for (const FocusTarget& f : sequences[i].*targets) {
      rows.push_back(static_cast<int64_t>(i) * t + f.row);
      cells.push_back(static_cast<float>(f.positions.size()));
      const size_t start = mask.size();
      mask.resize(start + p, 0.0f);
      if (spread && !f.shares.empty()) {
        // The target's entropy enters as log(exp(H)), so that an even
        // spread keeps exactly the arithmetic it always had.
        double entropy = 0;
        for (size_t j = 0; j < f.positions.size(); ++j) {
          mask[start + f.positions[j]] += f.shares[j];
          entropy -= f.shares[j] * std::log(static_cast<double>(f.shares[j]));
        }
        cells.back() = static_cast<float>(std::exp(entropy));
        continue;
      }
      const float share = spread ? 1.0f / f.positions.size() : 1.0f;
      for (int position : f.positions) mask[start + position] = share;
    }
  }
  if (rows.empty()) return at::Tensor();
  const int64_t n = static_cast<int64_t>(rows.size());
  const at::Tensor probs_NP = RowsOf(probs_BTP.reshape({-1, p}), rows);
  const at::Tensor mask_NP =
      at::from_blob(mask.data(), {n, p}, at::kFloat).clone();
  if (!spread) return -at::log((probs_NP * mask_NP).sum(-1) + 1e-6);
  // KL(target ‖ probs) = −Σ target·log probs − H(target): 0 only when the
  // mass is all there and spread as the target is; for an even target never
  // below the mass's −log.
  return -(mask_NP * at::log(probs_NP + 1e-6)).sum(-1) -
         at::log(at::tensor(cells));
}

// 1 − R² of the probe's reading of each image token's grid position (the
// centre of its cell, in [0, 1]) from its value.
at::Tensor PositionLoss(const at::Tensor& values_PD, const LinearWeights& probe,
                        int64_t grid) {
  const at::Tensor centre_G =
      (at::arange(grid, values_PD.options()) + 0.5) / static_cast<double>(grid);
  const at::Tensor xy_N2 =
      at::stack({centre_G.repeat({grid}), centre_G.repeat_interleave(grid)}, 1);
  const at::Tensor read_N2 = Linear(values_PD.narrow(0, 1, grid * grid), probe);
  return (read_N2 - xy_N2).pow(2).mean() * 12.0;  // variance of U(0,1): 1/12
}

at::Tensor HeadInput(const at::Tensor& rows_NC, const LossOptions& options) {
  if (!options.centre_gradient || rows_NC.size(0) == 0) return rows_NC;
  const at::Tensor mean_C = rows_NC.mean(0);
  return rows_NC - (mean_C - mean_C.detach());
}

at::Tensor StopNll(const at::Tensor& logits_NV, absl::Span<const uint8_t> eos,
                   int eos_id) {
  std::vector<int64_t> targets;
  for (uint8_t stop : eos) targets.push_back(stop ? eos_id : kGoOnToken);
  return at::cross_entropy_loss(logits_NV, at::tensor(targets, at::kLong),
                                /*weight=*/{}, at::Reduction::None);
}

at::Tensor BalanceStops(const at::Tensor& nll_N,
                        absl::Span<const uint8_t> eos) {
  const double n = static_cast<double>(eos.size());
  const double n_eos =
      static_cast<double>(std::count(eos.begin(), eos.end(), 1));
  if (n_eos == 0 || n_eos == n) return nll_N;
  std::vector<float> scale;
  for (uint8_t stop : eos) {
    scale.push_back(static_cast<float>(n / (2 * (stop ? n_eos : n - n_eos))));
  }
  return nll_N * at::tensor(scale);
}

Losses SequenceLosses(const at::Tensor& rows_BTC,
                      absl::Span<const Sequence> sequences, const Weights& w,
                      const MoondreamConfig& config, const LossOptions& options,
                      const FocusTaps* taps, const LinearWeights* probe) {
  const int64_t t = rows_BTC.size(1);
  const at::Tensor flat_NC = rows_BTC.reshape({-1, rows_BTC.size(2)});
  std::vector<int64_t> token_rows, token_ids, stop_rows, coord_rows, size_rows,
      size_bins;
  std::vector<std::vector<int64_t>> coord_sets;
  std::vector<uint8_t> stop_eos;
  for (size_t i = 0; i < sequences.size(); ++i) {
    const Sequence& s = sequences[i];
    const int64_t base = static_cast<int64_t>(i) * t;
    for (const TokenTarget& x : s.tokens) {
      token_rows.push_back(base + x.row);
      token_ids.push_back(x.token);
    }
    for (const StopTarget& x : s.stops) {
      stop_rows.push_back(base + x.row);
      stop_eos.push_back(x.eos);
    }
    for (const CoordinateTarget& x : s.coordinates) {
      coord_rows.push_back(base + x.row);
      coord_sets.push_back({x.bin});
      coord_sets.back().insert(coord_sets.back().end(), x.also.begin(),
                               x.also.end());
    }
    for (const SizeTarget& x : s.sizes) {
      size_rows.push_back(base + x.row);
      size_bins.push_back(x.w_bin);
      size_bins.push_back(x.h_bin);
    }
  }
  Losses out;
  std::vector<at::Tensor> all;
  if (!token_rows.empty()) {
    at::Tensor lp_NV =
        at::log_softmax(LmHead(RowsOf(flat_NC, token_rows), w.text), -1);
    at::Tensor nll_N =
        -lp_NV.gather(1, at::tensor(token_ids, at::kLong).unsqueeze(1))
             .squeeze(1);
    out.token = MeanOf(nll_N.detach());
    out.n_token = static_cast<int>(token_rows.size());
    all.push_back(nll_N);
  }
  if (!stop_rows.empty()) {
    const at::Tensor nll_N = StopNll(LmHead(RowsOf(flat_NC, stop_rows), w.text),
                                     stop_eos, config.tokenizer.eos_id);
    out.stop = MeanOf(nll_N.detach());
    out.n_stop = static_cast<int>(stop_rows.size());
    all.push_back(options.stop_weight * (options.balance_stops
                                             ? BalanceStops(nll_N, stop_eos)
                                             : nll_N));
  }
  if (!coord_rows.empty()) {
    at::Tensor nll_N = BinSetLoss(
        DecodeCoordinate(HeadInput(RowsOf(flat_NC, coord_rows), options),
                         w.region),
        coord_sets, options.bin_sigma);
    out.coordinate = MeanOf(nll_N.detach());
    out.n_coordinate = static_cast<int>(coord_rows.size());
    all.push_back(nll_N);
  }
  if (!size_rows.empty()) {
    at::Tensor logits_N2X =
        DecodeSize(HeadInput(RowsOf(flat_NC, size_rows), options), w.region);
    at::Tensor nll_N = BinLoss(logits_N2X.reshape({-1, logits_N2X.size(2)}),
                               size_bins, options.bin_sigma);
    out.size = MeanOf(nll_N.detach());
    out.n_size = static_cast<int>(size_bins.size());
    all.push_back(nll_N);
  }
  out.total = at::cat(all).mean();
  {
    // A stop row is also a coordinate row: each row once.
    const at::Tensor rms_N =
        RowsOf(flat_NC,
               UnionOf({&token_rows, &stop_rows, &coord_rows, &size_rows}))
            .pow(2)
            .mean(-1)
            .sqrt();
    const at::Tensor penalty_N =
        at::relu(at::log(rms_N / options.row_norm_limit));
    out.row_norm = MeanOf(penalty_N.detach());
    out.row_rms_max = rms_N.max().item<double>();
    if (options.row_norm_weight > 0) {
      out.total = out.total + options.row_norm_weight * penalty_N.mean();
    }
  }
  if (taps != nullptr && taps->probs_BTP.defined() &&
      options.focus_weight > 0) {
    at::Tensor nll_N =
        FocusLoss(taps->probs_BTP, sequences, options.focus_spread);
    if (nll_N.defined()) {
      out.focus = MeanOf(nll_N.detach());
      out.n_focus = static_cast<int>(nll_N.size(0));
      // The same, over the rows that answer a region (FocusLoss's order).
      std::vector<float> region;
      for (const Sequence& s : sequences) {
        const bool is_region = s.kind == scenes::TaskKind::kDetect ||
                               s.kind == scenes::TaskKind::kPoint;
        region.insert(region.end(), s.focuses.size(), is_region ? 1.0f : 0.0f);
      }
      const at::Tensor region_N = at::tensor(region);
      out.n_focus_region = static_cast<int>(region_N.sum().item<float>());
      if (out.n_focus_region > 0) {
        out.focus_region = (nll_N.detach() * region_N).sum().item<double>() /
                           out.n_focus_region;
      }
      out.total = out.total + options.focus_weight * nll_N.mean();
    }
  }
  if (taps != nullptr && taps->answered_probs_BTP.defined() &&
      options.answered_weight > 0) {
    at::Tensor nll_N = FocusLoss(taps->answered_probs_BTP, sequences,
                                 /*spread=*/true, &Sequence::answered);
    if (nll_N.defined()) {
      out.answered = MeanOf(nll_N.detach());
      out.n_answered = static_cast<int>(nll_N.size(0));
      out.total = out.total + options.answered_weight * nll_N.mean();
    }
  }
  if (taps != nullptr && taps->values_PD.defined() && probe != nullptr &&
      options.position_weight > 0) {
    at::Tensor position =
        PositionLoss(taps->values_PD, *probe, config.vision.grid());
    out.position = position.item<double>();
    out.total = out.total + options.position_weight * position;
  }
  return out;
}

at::Tensor PatchClassLoss(const at::Tensor& image_PC,
                          absl::Span<const int> patch_labels,
                          const LinearWeights& probe) {
  const at::Tensor kinds_P =
      at::tensor(std::vector<int64_t>(patch_labels.begin(), patch_labels.end()),
                 at::kLong);
  const at::Tensor nll_P =
      at::cross_entropy_loss(Linear(image_PC, probe), kinds_P,
                             /*weight=*/{}, at::Reduction::None);
  const at::Tensor shape_P = (kinds_P > 0).to(nll_P.scalar_type());
  const at::Tensor background_P = 1 - shape_P;
  auto mean_over = [&](const at::Tensor& mask_P) {
    return (nll_P * mask_P).sum() / mask_P.sum().clamp_min(1);
  };
  return 0.5 * (mean_over(shape_P) + mean_over(background_P));
}

namespace {

// The image tokens of the cells a shape covers [N, C] and, per such cell,
// its shape's box [N, 4] (cx, cy, w, h); N is 0 when no shape covers a cell.
std::pair<at::Tensor, at::Tensor> ShapeCellBoxes(
    const at::Tensor& image_PC, absl::Span<const int> patch_kinds,
    absl::Span<const PatchBox> patch_boxes) {
  std::vector<int64_t> cells;
  std::vector<float> boxes;
  for (size_t p = 0; p < patch_kinds.size(); ++p) {
    if (patch_kinds[p] == 0) continue;
    cells.push_back(static_cast<int64_t>(p));
    for (float v : patch_boxes[p].cx_cy_w_h) boxes.push_back(v);
  }
  const int64_t n = static_cast<int64_t>(cells.size());
  return {image_PC.index_select(0, at::tensor(cells, at::kLong)),
          at::tensor(boxes, at::kFloat).view({n, 4})};
}

}  // namespace

at::Tensor PatchBoxLoss(const at::Tensor& image_PC,
                        absl::Span<const int> patch_kinds,
                        absl::Span<const PatchBox> patch_boxes,
                        const LinearWeights& probe) {
  const auto [cells_NC, box_N4] =
      ShapeCellBoxes(image_PC, patch_kinds, patch_boxes);
  if (box_N4.size(0) == 0) return at::zeros({}, image_PC.options());
  return 12 * (Linear(cells_NC, probe) - box_N4).pow(2).mean();
}

// The variance of log(w) over scenes: sides of 15–35% of the shorter side,
// over image sides whose ratio is up to 3. The extent losses divide by it,
// so that guessing the typical size scores about 1.
constexpr double kLogExtentVariance = 0.1;
// A shape centre's variance in the image's fractions (RowCentreLoss's
// scale): centres spread over ~[0.1, 0.9], 0.8² / 12 (0.056 over 1,013
// shapes of 400 scenes; guessing 0.5 scores 1.11).
constexpr double kCentreVariance = 0.05;

at::Tensor PatchExtentLoss(const at::Tensor& image_PC,
                           absl::Span<const int> patch_kinds,
                           absl::Span<const PatchBox> patch_boxes,
                           const LinearWeights& probe) {
  const auto [cells_NC, box_N4] =
      ShapeCellBoxes(image_PC, patch_kinds, patch_boxes);
  if (box_N4.size(0) == 0) return at::zeros({}, image_PC.options());
  const at::Tensor log_size_N2 = box_N4.narrow(1, 2, 2).log();
  return (Linear(cells_NC, probe) - log_size_N2).pow(2).mean() /
         kLogExtentVariance;
}

namespace {

// What a row probe reads: (flat row, probe output, target) per value.
struct RowReads {
  std::vector<int64_t> rows, outputs;
  std::vector<float> targets;

  void Add(int64_t row, int64_t output, float target) {
    rows.push_back(row);
    outputs.push_back(output);
    targets.push_back(target);
  }
};

// The probe's squared error on each read value, its rows layer-normed
// first; mean over the values.
at::Tensor RowReadError(const at::Tensor& rows_BTC, const RowReads& reads,
                        const LinearWeights& probe) {
  if (reads.rows.empty()) return at::zeros({}, rows_BTC.options());
  const int64_t c = rows_BTC.size(2);
  const at::Tensor rows_NC =
      at::layer_norm(RowsOf(rows_BTC.reshape({-1, c}), reads.rows), {c});
  const at::Tensor read_N =
      Linear(rows_NC, probe)
          .gather(1, at::tensor(reads.outputs, at::kLong).unsqueeze(1))
          .squeeze(1);
  return (read_N - at::tensor(reads.targets)).pow(2).mean();
}

// A sequence's coordinate rows (flat rows from `base`): x (probe output 0)
// or y (1), as they come, x then y.
void AddCentreReads(const Sequence& sequence, int64_t base, int coordinate_bins,
                    RowReads& reads) {
  const std::vector<CoordinateTarget>& coords = sequence.coordinates;
  for (size_t k = 0; k < coords.size(); ++k) {
    // A row that may answer several shapes has no one centre to read.
    if (!coords[k].also.empty()) continue;
    reads.Add(base + coords[k].row, static_cast<int64_t>(k % 2),
              BinValue(coords[k].bin, coordinate_bins));
  }
}

}  // namespace

at::Tensor RowExtentLoss(const at::Tensor& rows_BTC,
                         absl::Span<const Sequence> sequences, int size_bins,
                         const LinearWeights& probe) {
  const int64_t t = rows_BTC.size(1);
  RowReads reads;
  for (size_t i = 0; i < sequences.size(); ++i) {
    const int64_t base = static_cast<int64_t>(i) * t;
    for (const SizeTarget& x : sequences[i].sizes) {
      reads.Add(base + x.row, 0, std::log(BinValue(x.w_bin, size_bins)));
      reads.Add(base + x.row, 1, std::log(BinValue(x.h_bin, size_bins)));
    }
  }
  return RowReadError(rows_BTC, reads, probe) / kLogExtentVariance;
}

at::Tensor RowCentreLoss(const at::Tensor& rows_BTC,
                         absl::Span<const Sequence> sequences,
                         int coordinate_bins, const LinearWeights& probe) {
  const int64_t t = rows_BTC.size(1);
  RowReads reads;
  for (size_t i = 0; i < sequences.size(); ++i) {
    AddCentreReads(sequences[i], static_cast<int64_t>(i) * t, coordinate_bins,
                   reads);
  }
  return RowReadError(rows_BTC, reads, probe) / kCentreVariance;
}

at::Tensor RowBoxLoss(const at::Tensor& rows_BTC,
                      absl::Span<const Sequence> sequences, int coordinate_bins,
                      int size_bins, const LinearWeights& probe) {
  const int64_t t = rows_BTC.size(1);
  RowReads reads;
  for (size_t i = 0; i < sequences.size(); ++i) {
    const int64_t base = static_cast<int64_t>(i) * t;
    AddCentreReads(sequences[i], base, coordinate_bins, reads);
    for (const SizeTarget& x : sequences[i].sizes) {
      reads.Add(base + x.row, 2, BinValue(x.w_bin, size_bins));
      reads.Add(base + x.row, 3, BinValue(x.h_bin, size_bins));
    }
  }
  return 12 * RowReadError(rows_BTC, reads, probe);
}

Losses SceneLosses(const SceneExample& example,
                   absl::Span<const Sequence> sequences, const Weights& w,
                   const MoondreamConfig& config, const RotaryTable& rotary,
                   const LossOptions& options, const LinearWeights* probe) {
  at::Tensor image_PC = ImageEmbedding(example.crops, w, config.vision);
  FocusTaps taps;
  at::Tensor rows_BTC = DecoderForward(
      PrefixEmbeddings(image_PC, w, config), EmbedSequences(sequences, w),
      w.text, config.text, rotary, options.Taps() ? &taps : nullptr);
  return SequenceLosses(rows_BTC, sequences, w, config, options, &taps, probe);
}

}  // namespace md::train
