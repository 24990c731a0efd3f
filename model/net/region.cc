#include "model/net/region.h"

#include <ATen/ATen.h>

#include <cmath>
#include <numbers>

#include "model/net/layers.h"

namespace md {

at::Tensor FourierFeatures(const at::Tensor& x_BK, const at::Tensor& freqs_KF) {
  // The reference's `2 * math.pi * x @ w` scales x first, then multiplies.
  at::Tensor f_BF = at::matmul(x_BK * (2 * std::numbers::pi), freqs_KF);
  return at::cat({f_BF.cos(), f_BF.sin()}, -1);
}

at::Tensor EncodeCoordinate(const at::Tensor& coord_B, const RegionWeights& w) {
  at::Tensor x_B1 = coord_B.to(w.coord_features.options()).unsqueeze(1);
  return Linear(FourierFeatures(x_B1, w.coord_features), w.coord_encoder);
}

at::Tensor DecodeCoordinate(const at::Tensor& hidden_BC,
                            const RegionWeights& w) {
  return Mlp(hidden_BC, w.coord_decoder);
}

at::Tensor EncodeSize(const at::Tensor& size_B2, const RegionWeights& w) {
  return Linear(
      FourierFeatures(size_B2.to(w.size_features.options()), w.size_features),
      w.size_encoder);
}

at::Tensor DecodeSize(const at::Tensor& hidden_BC, const RegionWeights& w) {
  return Mlp(hidden_BC, w.size_decoder).view({hidden_BC.size(0), 2, -1});
}

}  // namespace md
