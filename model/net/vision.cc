#include "model/net/vision.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "model/net/kernels/batched_matmul.h"
#include "model/net/kernels/softmax_bf16.h"
#include "model/net/layers.h"

namespace md {
namespace {

// [B, 3, H, W] → [B, (H/p)·(W/p), 3·p·p], each patch vector ordered
// (channel, row in patch, column in patch).
at::Tensor Patchify(const at::Tensor& x_BCHW, int patch) {
  const int64_t b = x_BCHW.size(0), c = x_BCHW.size(1);
  const int64_t gh = x_BCHW.size(2) / patch, gw = x_BCHW.size(3) / patch;
  return x_BCHW.reshape({b, c, gh, patch, gw, patch})
      .permute({0, 2, 4, 1, 3, 5})
      .reshape({b, gh * gw, c * patch * patch});
}

// Non-causal multi-head self-attention over the patches of each crop.
at::Tensor SelfAttention(const at::Tensor& x_BPE, const AttentionWeights& w,
                         int n_heads) {
  const int64_t b = x_BPE.size(0), p = x_BPE.size(1), e = x_BPE.size(2);
  const int64_t d = e / n_heads;
  std::vector<at::Tensor> qkv = Linear(x_BPE, w.qkv).chunk(3, -1);
  auto heads = [&](const at::Tensor& t) {
    return t.view({b, p, n_heads, d}).transpose(1, 2);  // [B, H, P, D]
  };
  at::Tensor q = heads(qkv[0]), k = heads(qkv[1]), v = heads(qkv[2]);
  const double scale = 1.0 / std::sqrt(d);
  at::Tensor scores_BHPP = BatchedMatmul(q, k.transpose(-2, -1));
  // bf16: the scale and the softmax in one fp32 pass, in place.
  at::Tensor probs_BHPP = ScaledSoftmaxBf16InPlace(scores_BHPP, scale)
                              ? scores_BHPP
                              : at::softmax(scores_BHPP * scale, -1);
  at::Tensor out_BHPD = BatchedMatmul(probs_BHPP, v);
  return Linear(out_BHPD.transpose(1, 2).reshape({b, p, e}), w.proj);
}

// Crops with the same pixels: the first crop of each kind (`distinct`), and
// for each crop the position of its kind in `distinct`. Only CPU crops are
// compared (preprocessing makes them there); others are each their own.
struct CropKinds {
  std::vector<int64_t> distinct;
  std::vector<int64_t> kind_B;
};

CropKinds FindCropKinds(const at::Tensor& crops_BHWC_u8) {
  CropKinds kinds;
  const int64_t n = crops_BHWC_u8.size(0);
  if (!crops_BHWC_u8.device().is_cpu() || n == 0) {
    for (int64_t b = 0; b < n; ++b) {
      kinds.distinct.push_back(b);
      kinds.kind_B.push_back(b);
    }
    return kinds;
  }
  const int64_t crop_bytes = crops_BHWC_u8.numel() / n;
  const uint8_t* pixels = crops_BHWC_u8.data_ptr<uint8_t>();
  auto same_pixels = [&](int64_t a, int64_t b) {
    return std::memcmp(pixels + a * crop_bytes, pixels + b * crop_bytes,
                       crop_bytes) == 0;
  };
  for (int64_t b = 0; b < n; ++b) {
    auto kind = std::find_if(kinds.distinct.begin(), kinds.distinct.end(),
                             [&](int64_t d) { return same_pixels(d, b); });
    kinds.kind_B.push_back(kind - kinds.distinct.begin());
    if (kind == kinds.distinct.end()) kinds.distinct.push_back(b);
  }
  return kinds;
}

}  // namespace

at::Tensor NormalizeCrops(const at::Tensor& crops_BHWC_u8, at::ScalarType dtype,
                          at::Device device) {
  at::Tensor x = crops_BHWC_u8.to(device).permute({0, 3, 1, 2}).to(at::kFloat);
  return x.div_(255.0).sub_(0.5).div_(0.5).to(dtype).contiguous();
}

at::Tensor EncodeCrops(const at::Tensor& crops_BCHW, const VisionWeights& w,
                       const VisionConfig& config) {
  at::Tensor x_BPE =
      Linear(Patchify(crops_BCHW, config.enc_patch_size), w.patch_emb);
  x_BPE = x_BPE + w.pos_emb;
  for (const VisionBlockWeights& block : w.blocks) {
    x_BPE = x_BPE + SelfAttention(LayerNorm(x_BPE, block.ln1), block.attn,
                                  config.enc_n_heads);
    x_BPE = x_BPE + Mlp(LayerNorm(x_BPE, block.ln2), block.mlp);
  }
  return LayerNorm(x_BPE, w.post_ln);
}

at::Tensor EncodeDistinctCrops(const at::Tensor& crops_BHWC_u8,
                               const VisionWeights& w,
                               const VisionConfig& config, at::ScalarType dtype,
                               at::Device device) {
  const at::Tensor crops = crops_BHWC_u8.contiguous();
  const CropKinds kinds = FindCropKinds(crops);
  if (kinds.distinct.size() == static_cast<size_t>(crops.size(0))) {
    return EncodeCrops(NormalizeCrops(crops, dtype, device), w, config);
  }
  auto index = [](const std::vector<int64_t>& v) {
    return at::tensor(v, at::kLong);
  };
  at::Tensor features_BPE =
      EncodeCrops(NormalizeCrops(crops.index_select(0, index(kinds.distinct)),
                                 dtype, device),
                  w, config);
  return features_BPE.index_select(
      0, index(kinds.kind_B).to(features_BPE.device()));
}

at::Tensor ReconstructFromCrops(const at::Tensor& local_NHWE, Tiling tiling,
                                int overlap_margin) {
  const int64_t crop = local_NHWE.size(1), e = local_NHWE.size(3);
  const int64_t step = crop - 2 * overlap_margin;
  at::Tensor out_HWE = at::zeros({step * tiling.rows + 2 * overlap_margin,
                                  step * tiling.cols + 2 * overlap_margin, e},
                                 local_NHWE.options());
  for (int ty = 0; ty < tiling.rows; ++ty) {
    for (int tx = 0; tx < tiling.cols; ++tx) {
      // Each tile keeps its outer margin only on the image border.
      const int64_t x0 = tx == 0 ? 0 : overlap_margin;
      const int64_t x1 = tx == tiling.cols - 1 ? crop : crop - overlap_margin;
      const int64_t y0 = ty == 0 ? 0 : overlap_margin;
      const int64_t y1 = ty == tiling.rows - 1 ? crop : crop - overlap_margin;
      const at::Tensor& tile = local_NHWE[ty * tiling.cols + tx];
      out_HWE.slice(0, ty * step + y0, ty * step + y1)
          .slice(1, tx * step + x0, tx * step + x1)
          .copy_(tile.slice(0, y0, y1).slice(1, x0, x1));
    }
  }
  return out_HWE;
}

at::Tensor PoolReconstructed(const at::Tensor& reconstructed_HWE,
                             const VisionConfig& config) {
  at::Tensor pooled_EGG = at::adaptive_avg_pool2d(
      reconstructed_HWE.permute({2, 0, 1}), {config.grid(), config.grid()});
  return pooled_EGG.permute({1, 2, 0}).contiguous();
}

at::Tensor ProjectImage(const at::Tensor& global_PE,
                        const at::Tensor& pooled_GGE, const VisionWeights& w,
                        const VisionConfig& config) {
  at::Tensor features_P2E = at::cat(
      {global_PE, pooled_GGE.reshape({config.n_patches(), config.enc_dim})},
      -1);
  return Mlp(features_P2E, w.proj_mlp);
}

}  // namespace md
