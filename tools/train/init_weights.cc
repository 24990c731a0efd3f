#include "tools/train/init_weights.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <numbers>
#include <utility>
#include <vector>

namespace md::train {

at::Tensor SinCosPositions(int64_t grid, int64_t dim) {
  const int64_t quarter = dim / 4;
  const at::Tensor omega_F =
      1.0 / at::pow(kPositionBase, at::arange(quarter, at::kDouble) / quarter);
  const at::Tensor coords = at::arange(grid, at::kDouble);
  // Patches are numbered row by row: p = y * grid + x.
  const at::Tensor y_P = coords.repeat_interleave(grid);
  const at::Tensor x_P = coords.repeat({grid});
  auto features = [&](const at::Tensor& c_P) {
    const at::Tensor angle_PF = c_P.unsqueeze(1) * omega_F.unsqueeze(0);
    return at::cat({angle_PF.sin(), angle_PF.cos()}, 1);
  };
  at::Tensor pos_PD = at::zeros({grid * grid, dim}, at::kDouble);
  pos_PD.narrow(1, 0, 4 * quarter)
      .copy_(at::cat({features(x_P), features(y_P)}, 1));
  return pos_PD.to(at::kFloat).unsqueeze(0);
}

namespace {

// {A, B} ([rank, n] each) with Aᵀ·B the best rank-`rank` approximation of
// `target_NN`: its SVD's leading terms, the singular values split evenly.
std::pair<at::Tensor, at::Tensor> LowRankFactors(const at::Tensor& target_NN,
                                                 int64_t rank) {
  auto [u, s, vh] = at::linalg_svd(target_NN.to(at::kDouble));
  const at::Tensor root = s.narrow(0, 0, rank).sqrt().unsqueeze(1);
  return {(u.narrow(1, 0, rank).t() * root).to(at::kFloat),
          (vh.narrow(0, 0, rank) * root).to(at::kFloat)};
}

}  // namespace

MimeticWeights MimeticAttention(int64_t dim, int64_t heads,
                                at::Generator& gen) {
  const int64_t head_dim = dim / heads;
  const at::Tensor eye = at::eye(dim, at::kFloat);
  auto noise = [&] {
    return at::randn({dim, dim}, gen) / std::sqrt(static_cast<double>(dim));
  };
  std::vector<at::Tensor> q, k, v, proj;
  for (int64_t h = 0; h < heads; ++h) {
    // score = x·Wq_hᵀ·Wk_h·x'  and  out = Wproj_h·Wv_h·x.
    auto [wq, wk] = LowRankFactors(kMimeticQk * (noise() + eye), head_dim);
    auto [wo_t, wv] = LowRankFactors(kMimeticVo * (noise() - eye), head_dim);
    q.push_back(wq);
    k.push_back(wk);
    v.push_back(wv);
    proj.push_back(wo_t.t());
  }
  return {at::cat({at::cat(q), at::cat(k), at::cat(v)}), at::cat(proj, 1)};
}

at::Tensor FourierBins(int64_t bins, int64_t dim) {
  const int64_t pairs = dim / 2;
  // Cycles over the whole range, geometric from 1/2 to bins / 16.
  const at::Tensor cycles_F =
      0.5 * at::pow(bins / 8.0, at::arange(pairs, at::kDouble) /
                                    std::max<int64_t>(1, pairs - 1));
  const at::Tensor angle_XF = 2 * std::numbers::pi *
                              at::arange(bins, at::kDouble).unsqueeze(1) /
                              static_cast<double>(bins) * cycles_F.unsqueeze(0);
  at::Tensor basis_XD = at::zeros({bins, dim}, at::kDouble);
  basis_XD.narrow(1, 0, 2 * pairs)
      .copy_(at::stack({angle_XF.cos(), angle_XF.sin()}, 2).view({bins, -1}));
  return basis_XD.to(at::kFloat);
}

}  // namespace md::train
