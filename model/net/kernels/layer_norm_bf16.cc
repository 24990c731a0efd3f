#include "model/net/kernels/layer_norm_bf16.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "model/net/kernels/worker_pool.h"

namespace md {
namespace {

// Rows per parallel block: a decode batch (≤ 64 rows) stays on the calling
// thread, where a parallel region would cost more than it saves.
constexpr int64_t kRowGrain = 64;

bool DenseCpuBf16(const at::Tensor& t) {
  return t.defined() && t.is_cpu() && t.scalar_type() == at::kBFloat16 &&
         t.is_contiguous() && !t.requires_grad();
}

void NormalizeRow(const at::BFloat16* x, const at::BFloat16* gamma,
                  const at::BFloat16* beta, int64_t c, float eps, float* row,
                  at::BFloat16* y) {
  float sum = 0;
  for (int64_t i = 0; i < c; ++i) {
    row[i] = static_cast<float>(x[i]);
    sum += row[i];
  }
  const float mean = sum / static_cast<float>(c);
  float squares = 0;
  for (int64_t i = 0; i < c; ++i) {
    row[i] -= mean;
    squares += row[i] * row[i];
  }
  const float rstd = 1.0f / std::sqrt(squares / static_cast<float>(c) + eps);
  for (int64_t i = 0; i < c; ++i) {
    y[i] =
        static_cast<at::BFloat16>(row[i] * rstd * static_cast<float>(gamma[i]) +
                                  static_cast<float>(beta[i]));
  }
}

}  // namespace

at::Tensor LayerNormBf16Rows(const at::Tensor& x, const at::Tensor& gamma,
                             const at::Tensor& beta, double eps) {
  if (!DenseCpuBf16(x) || !DenseCpuBf16(gamma) || !DenseCpuBf16(beta) ||
      x.dim() < 1 || gamma.dim() != 1 || beta.dim() != 1) {
    return {};
  }
  const int64_t c = x.size(-1);
  if (c == 0 || gamma.size(0) != c || beta.size(0) != c) return {};
  at::Tensor y = at::empty_like(x);
  const int64_t rows = x.numel() / c;
  const at::BFloat16* x_data = x.data_ptr<at::BFloat16>();
  const at::BFloat16* g = gamma.data_ptr<at::BFloat16>();
  const at::BFloat16* b = beta.data_ptr<at::BFloat16>();
  at::BFloat16* y_data = y.data_ptr<at::BFloat16>();
  const float eps_f = static_cast<float>(eps);
  ParallelFor(rows, kRowGrain, at::get_num_threads(),
              [&](int64_t begin, int64_t end) {
                std::vector<float> row(c);
                for (int64_t r = begin; r < end; ++r) {
                  NormalizeRow(x_data + r * c, g, b, c, eps_f, row.data(),
                               y_data + r * c);
                }
              });
  return y;
}

}  // namespace md
