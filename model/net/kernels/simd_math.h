// Vector math our AVX-512 kernels share. Include from kernel .cc files only.
#ifndef MOONDREAM_MODEL_NET_KERNELS_SIMD_MATH_H_
#define MOONDREAM_MODEL_NET_KERNELS_SIMD_MATH_H_

#include "model/net/kernels/x86_simd.h"

namespace md {

#if defined(__x86_64__)

// e^x within 1.3 ulp for x in [-87, 88] (Cephes expf: x = n·ln2 + r,
// |r| <= ln2/2, degree-5 polynomial, scaled by 2^n with vscalefps); 0 below
// -104, NaN stays NaN. Softmax only calls it with x <= 0.
MD_AVX512 inline __m512 Exp(__m512 x) {
  // max/min return their second operand when one is NaN: keep x there.
  x = _mm512_max_ps(_mm512_set1_ps(-104.0f), x);
  x = _mm512_min_ps(_mm512_set1_ps(88.7f), x);
  const __m512 n = _mm512_roundscale_ps(
      _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  const __m512 y = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r),
                                   _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(y, n);
}

#endif  // defined(__x86_64__)

}  // namespace md

#endif  // MOONDREAM_MODEL_NET_KERNELS_SIMD_MATH_H_
