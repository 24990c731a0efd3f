// One bf16 linear layer for every batch size, from a decode step of one
// sequence (M = 1, bound by streaming the weights) to prefill chunks and
// large decode batches (M in the hundreds, bound by arithmetic: AMX tiles
// where the CPU has them, vdpbf16ps otherwise; see bf16_gemm_amx.h).
//
// Batch invariance: each output row is computed by the same instruction
// sequence whatever M and the thread count: the rows are independent (rows
// are blocked MR at a time only to reuse each weight load), the whole K is
// summed in one fixed order (no split-K), and threads split the output
// columns. So a sequence's result is bit-identical alone or in any batch.
//
// Weights are packed once at load (PackLinearWeightBf16) into column panels
// of 64 outputs with consecutive k pairs interleaved, the layout vdpbf16ps
// reads: [⌈N/64⌉][⌈K/2⌉][64][2] bf16, zero padded, so the N and K tails run
// the same instructions on zeros.
#ifndef MOONDREAM_MODEL_NET_KERNELS_BF16_GEMM_H_
#define MOONDREAM_MODEL_NET_KERNELS_BF16_GEMM_H_

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace md {

// What is applied to x·wᵀ + b before the single rounding to bf16.
enum class LinearActivation {
  kNone,
  // GELU, tanh approximation. The pre-activation is first rounded to bf16,
  // as the unfused at::gelu(at::linear(x, w, b), "tanh") on bf16 tensors
  // sees it, so the two differ only by how each evaluates tanh in fp32.
  kGeluTanh,
};

// Output columns per packed panel.
inline constexpr int64_t kPackedPanelCols = 64;

// w [N, K] (bf16, CPU) → the packed panels [⌈N/64⌉, ⌈K/2⌉, 64, 2], or an
// undefined tensor when PackedLinearBf16 can never use it (w is not a 2-D
// CPU bf16 tensor, or this CPU lacks AVX512-BF16) — then nothing extra is
// kept in memory.
at::Tensor PackLinearWeightBf16(const at::Tensor& w_NK);

// y = act(x · wᵀ + b) rounded once to bf16 (round-to-nearest-even, as
// c10::BFloat16), accumulated in fp32 by AMX tiles or vdpbf16ps. x: CPU bf16
// with any leading dims (flattened to M rows; made contiguous if it is not);
// w_packed from PackLinearWeightBf16 of a weight with n_out rows and
// x.size(-1) columns; b: [n_out] bf16 or undefined. Returns an undefined
// tensor when the kernel does not apply (dtypes, shapes, autograd, no
// AVX512-BF16, or ForceAtenLinear) so the caller runs at::linear.
at::Tensor PackedLinearBf16(const at::Tensor& x, const at::Tensor& w_packed,
                            int64_t n_out, const at::Tensor& b,
                            LinearActivation act = LinearActivation::kNone);

// The layer as the model uses it: PackedLinearBf16 when it applies, else
// at::linear (then at::gelu(·, "tanh") for kGeluTanh). w_packed may be
// undefined (fp32 models, CPUs without AVX512-BF16).
at::Tensor LinearWithPacked(const at::Tensor& x, const at::Tensor& w_NK,
                            const at::Tensor& w_packed, const at::Tensor& b,
                            LinearActivation act = LinearActivation::kNone);

// Whether PackedLinearBf16 runs here: AVX512-BF16 is present and neither
// ForceAtenLinear(true) nor the environment variable MD_BF16_LINEAR=aten
// turned it off.
bool PackedLinearBf16Enabled();

// The instructions PackedLinearBf16 computes with: AMX tiles where the CPU
// (and the OS) offer them, else vdpbf16ps; kNone when it declines every call.
// Each is batch invariant on its own; the two may differ in the last bit of
// a result, so they are not mixed within a process's run of a model.
enum class PackedLinearIsa { kNone, kAvx512Bf16, kAmxBf16 };
PackedLinearIsa PackedLinearBf16Isa();
// "none", "avx512-bf16", "amx-bf16".
const char* PackedLinearIsaName(PackedLinearIsa isa);

// Makes PackedLinearBf16 use vdpbf16ps even where AMX is present (tests of
// that kernel, benchmarks); process-wide, as MD_BF16_LINEAR=avx512 does.
void ForceAvx512Linear(bool force);

// Makes PackedLinearBf16 decline every call (tests of the fallback,
// benchmarks against ATen); process-wide.
void ForceAtenLinear(bool force);

// Threads PackedLinearBf16 uses (the caller plus pool helpers); 0, the
// default, follows at::get_num_threads().
void SetPackedLinearThreads(int n_threads);

}  // namespace md

#endif  // MOONDREAM_MODEL_NET_KERNELS_BF16_GEMM_H_
