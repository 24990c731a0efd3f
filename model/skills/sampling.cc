#include "model/skills/sampling.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>
#include <vector>

namespace md {
namespace {

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t RotateLeft(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

// Token probabilities after temperature, in float64 so that the cut-offs do
// not depend on summation order.
std::vector<double> Probabilities(const at::Tensor& logits_V,
                                  float temperature) {
  at::Tensor logits = logits_V.to(at::kCPU, at::kDouble).contiguous();
  const double* data = logits.data_ptr<double>();
  const int64_t n = logits.numel();
  double max_logit = -INFINITY;
  for (int64_t i = 0; i < n; ++i) max_logit = std::max(max_logit, data[i]);
  std::vector<double> p(n);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    p[i] = std::exp((data[i] - max_logit) / temperature);
    sum += p[i];
  }
  for (double& v : p) v /= sum;
  return p;
}

}  // namespace

SamplingRandom::SamplingRandom(uint64_t seed) {
  for (uint64_t& s : s_) s = SplitMix64(seed);
}

uint64_t SamplingRandom::NextU64() {
  const uint64_t result = RotateLeft(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = RotateLeft(s_[3], 45);
  return result;
}

double SamplingRandom::NextDouble() {
  return static_cast<double>(NextU64() >> 11) * 0x1.0p-53;
}

int SampleToken(const at::Tensor& logits_V, const SamplingParams& params,
                double u) {
  std::vector<double> p = Probabilities(logits_V, params.temperature);
  // Most likely first; ties by token id, so the order is fully determined.
  std::vector<int> order(p.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&p](int a, int b) { return p[a] > p[b]; });

  const double floor = params.min_p * p[order[0]];
  size_t n_kept = 0;
  double mass = 0;
  for (int token : order) {
    if (n_kept > 0 && p[token] < floor) break;
    if (n_kept > 0 && mass >= params.top_p) break;
    mass += p[token];
    ++n_kept;
  }
  const double target = u * mass;
  double cumulative = 0;
  for (size_t i = 0; i < n_kept; ++i) {
    cumulative += p[order[i]];
    if (target < cumulative) return order[i];
  }
  return order[n_kept - 1];
}

TokenChooser MakeTokenChooser(const SamplingParams& params) {
  if (params.temperature == 0) return GreedyToken;
  auto random = std::make_shared<SamplingRandom>(params.seed);
  return [params, random](const at::Tensor& logits_V) {
    return SampleToken(logits_V, params, random->NextDouble());
  };
}

}  // namespace md
