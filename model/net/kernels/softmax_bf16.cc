#include "model/net/kernels/softmax_bf16.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstdint>
#include <limits>
#include <vector>

#include "model/net/kernels/simd_math.h"
#include "model/net/kernels/worker_pool.h"
#include "model/net/kernels/x86_simd.h"

namespace md {
namespace {

#if defined(__x86_64__)

constexpr int kLanes = 16;
// Rows per parallel task: a few hundred KB of scores at the prefix's 730
// keys, enough to amortise the task, small enough to balance two cores.
constexpr int64_t kRowGrain = 32;

MD_AVX512 inline __mmask16 LanesBelow(int64_t m) {
  return m >= kLanes ? __mmask16{0xFFFF}
                     : static_cast<__mmask16>((1u << m) - 1u);
}

MD_AVX512 inline __m512 LoadBf16(const uint16_t* p, __mmask16 mask) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(
      _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, p)), 16));
}

// One row of n scores: x = scale · s in fp32 (kept in `scaled`), then
// e^(x − max x) / Σ, rounded to bf16 over s.
MD_AVX512_BF16 void SoftmaxRow(uint16_t* s, int64_t n, float scale,
                               float* scaled) {
  const __m512 vscale = _mm512_set1_ps(scale);
  __m512 vmax = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t k = 0; k < n; k += kLanes) {
    const __mmask16 mask = LanesBelow(n - k);
    const __m512 x = _mm512_mul_ps(LoadBf16(s + k, mask), vscale);
    _mm512_mask_storeu_ps(scaled + k, mask, x);
    vmax = _mm512_mask_max_ps(vmax, mask, vmax, x);
  }
  const __m512 row_max = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
  __m512 vsum = _mm512_setzero_ps();
  for (int64_t k = 0; k < n; k += kLanes) {
    const __mmask16 mask = LanesBelow(n - k);
    const __m512 e =
        Exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, scaled + k), row_max));
    _mm512_mask_storeu_ps(scaled + k, mask, e);
    vsum = _mm512_mask_add_ps(vsum, mask, vsum, e);
  }
  const __m512 inv_sum = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(vsum));
  for (int64_t k = 0; k < n; k += kLanes) {
    const __mmask16 mask = LanesBelow(n - k);
    const __m512 p =
        _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, scaled + k), inv_sum);
    _mm256_mask_storeu_epi16(s + k, mask, (__m256i)_mm512_cvtneps_pbh(p));
  }
}

#endif  // defined(__x86_64__)

}  // namespace

bool ScaledSoftmaxBf16InPlace(at::Tensor& scores, double scale) {
#if defined(__x86_64__)
  if (!CpuHasAvx512Bf16() || !scores.defined() || !scores.device().is_cpu() ||
      scores.scalar_type() != at::kBFloat16 || !scores.is_contiguous() ||
      scores.dim() < 1 || scores.requires_grad()) {
    return false;
  }
  const int64_t n = scores.size(-1);
  if (n == 0 || scores.numel() == 0) return true;
  const int64_t rows = scores.numel() / n;
  uint16_t* s = static_cast<uint16_t*>(scores.data_ptr());
  const float scale_f = static_cast<float>(scale);
  ParallelFor(rows, kRowGrain, at::get_num_threads(),
              [&](int64_t begin, int64_t end) {
                std::vector<float> scaled(n);
                for (int64_t r = begin; r < end; ++r) {
                  SoftmaxRow(s + r * n, n, scale_f, scaled.data());
                }
              });
  return true;
#else
  (void)scores;
  (void)scale;
  return false;
#endif
}

}  // namespace md
