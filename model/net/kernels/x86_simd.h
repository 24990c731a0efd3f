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
// AVX512-BF16 plus the AMX tiles and their bf16 products.
#define MD_AMX_BF16      \
  __attribute__((target( \
      "avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,amx-tile,amx-bf16")))
#include <cpuid.h>
#endif
#if defined(__x86_64__) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include <cstdint>

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

// The above plus AMX tiles with bf16 products (tdpbf16ps), usable by this
// process: Linux hands a process the 8 KiB of tile state only when it asks
// (arch_prctl ARCH_REQ_XCOMP_PERM for XTILEDATA), which this does, once.
inline bool CpuHasAmxBf16() {
#if defined(__x86_64__) && defined(__linux__)
  static const bool has = [] {
    if (!CpuHasAvx512Bf16()) return false;
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) == 0) return false;
    constexpr unsigned kAmxBf16 = 1u << 22, kAmxTile = 1u << 24;
    if ((edx & kAmxBf16) == 0 || (edx & kAmxTile) == 0) return false;
    constexpr long kArchReqXcompPerm = 0x1023;
    constexpr long kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return has;
#else
  return false;
#endif
}

// ldtilecfg's 64-byte operand, palette 1: each tile register's rows and
// bytes per row (0 for a tile not used).
struct alignas(64) AmxTileConfig {
  uint8_t palette_id = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Tiles 0..n_tiles-1 as full 16 rows × 64 bytes (16 fp32 or 32 bf16 each).
inline AmxTileConfig FullTiles(int n_tiles) {
  AmxTileConfig c;
  for (int t = 0; t < n_tiles && t < 8; ++t) {
    c.rows[t] = 16;
    c.colsb[t] = 64;
  }
  return c;
}

}  // namespace md

#endif  // MOONDREAM_MODEL_NET_KERNELS_X86_SIMD_H_
