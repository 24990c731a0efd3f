// What our AVX-512 kernels share: the intrinsics header, the target
// attributes that let only the kernels use AVX-512 (the rest of the library
// builds for baseline x86-64), and the run-time CPU checks guarding them.
// Include from kernel .cc files only.
#ifndef MOONDREAM_MODEL_NET_KERNELS_X86_SIMD_H_
#define MOONDREAM_MODEL_NET_KERNELS_X86_SIMD_H_

#if defined(__x86_64__)
// GCC 12's AVX-512 intrinsics start from _mm512_undefined_*(), which
// -W(maybe-)uninitialized reports once inlined (GCC PR 105593).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#define MD_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
#define MD_AVX512_BF16 \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))
#endif

namespace md {

// AVX-512 F/BW/VL/DQ, checked once (libgcc also checks that the OS saves the
// AVX-512 register state).
inline bool CpuHasAvx512() {
#if defined(__x86_64__)
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512dq");
  }();
  return has;
#else
  return false;
#endif
}

// The above plus AVX512-BF16 (vdpbf16ps).
inline bool CpuHasAvx512Bf16() {
#if defined(__x86_64__)
  static const bool has =
      CpuHasAvx512() && __builtin_cpu_supports("avx512bf16");
  return has;
#else
  return false;
#endif
}

}  // namespace md

#endif  // MOONDREAM_MODEL_NET_KERNELS_X86_SIMD_H_
