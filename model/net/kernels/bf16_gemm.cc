#include "model/net/kernels/bf16_gemm.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <vector>

#include "model/net/kernels/bf16_gemm_amx.h"
#include "model/net/kernels/bf16_gemm_parts.h"
#include "model/net/kernels/worker_pool.h"
#include "model/net/kernels/x86_simd.h"

namespace md {
namespace {

std::atomic<bool> g_force_aten{false};
std::atomic<bool> g_force_avx512{false};
std::atomic<int> g_threads{0};

// MD_BF16_LINEAR: "aten" (every linear through at::linear), "avx512" (the
// packed kernel without AMX), unset or anything else: the best this CPU has.
std::string_view LinearEnv() {
  static const std::string_view value = [] {
    const char* v = std::getenv("MD_BF16_LINEAR");
    return v == nullptr ? std::string_view() : std::string_view(v);
  }();
  return value;
}

bool EnvForcesAten() { return LinearEnv() == "aten"; }

using namespace gemm_parts;  // NOLINT: this file is their other half

#if defined(__x86_64__)

// Rows [m0, m0 + kRows) of the panel starting at output n0.
template <int kRows>
MD_AVX512_BF16 void RowBlock(const GemmArgs& a, const uint16_t* w_panel,
                             const PanelColumns& cols, const PanelPrefetch& pf,
                             int64_t m0, int64_t n0) {
  __m512 acc[kRows][4];
#pragma GCC unroll 6
  for (int i = 0; i < kRows; ++i) {
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) acc[i][j] = _mm512_setzero_ps();
  }
  AccumulatePanel<kRows>(a.x_MK + m0 * a.K, a.K, w_panel, /*p_begin=*/0,
                         a.k_pairs, pf, acc);
#pragma GCC unroll 6
  for (int i = 0; i < kRows; ++i) {
    StoreRow(acc[i], cols, a.act, a.y_MN + (m0 + i) * a.N + n0);
  }
}

// Every row of x against one panel. The panel is read from memory by the
// first row block and from cache by the rest; meanwhile the blocks prefetch
// next_panel (or null).
MD_AVX512_BF16 void Panel(const GemmArgs& a, int64_t panel,
                          const uint16_t* next_panel) {
  const int64_t n0 = panel * kPackedPanelCols;
  const uint16_t* w_panel = a.w_panels + panel * a.k_pairs * kPairRowElems;
  const PanelColumns cols = ColumnsOf(a, n0);
  const int64_t n_blocks = (a.M + kMaxRows - 1) / kMaxRows;
  int64_t m0 = 0;
  for (int64_t block = 0; m0 + kMaxRows <= a.M; m0 += kMaxRows, ++block) {
    RowBlock<kMaxRows>(a, w_panel, cols,
                       PrefetchShare(next_panel, a.k_pairs, block, n_blocks),
                       m0, n0);
  }
  const PanelPrefetch last =
      PrefetchShare(next_panel, a.k_pairs, n_blocks - 1, n_blocks);
  switch (a.M - m0) {
    case 1:
      RowBlock<1>(a, w_panel, cols, last, m0, n0);
      break;
    case 2:
      RowBlock<2>(a, w_panel, cols, last, m0, n0);
      break;
    case 3:
      RowBlock<3>(a, w_panel, cols, last, m0, n0);
      break;
    case 4:
      RowBlock<4>(a, w_panel, cols, last, m0, n0);
      break;
    case 5:
      RowBlock<5>(a, w_panel, cols, last, m0, n0);
      break;
    default:
      break;
  }
}

MD_AVX512_BF16 __attribute__((noinline)) void PanelTask(const void* context,
                                                        int64_t task) {
  const GemmArgs& a = *static_cast<const GemmArgs*>(context);
  ForEachPanelOfTask(a, task, [&](int64_t panel, const uint16_t* next) {
    Panel(a, panel, next);
  });
}

#endif  // defined(__x86_64__)

bool IsDenseCpuBf16(const at::Tensor& t) {
  return t.defined() && t.device().is_cpu() && t.layout() == at::kStrided &&
         t.scalar_type() == at::kBFloat16;
}

int ThreadsForCall() {
  const int n = g_threads.load(std::memory_order_relaxed);
  return n > 0 ? n : at::get_num_threads();
}

// Whether the call can be served: shapes, dtypes, no autograd graph wanted.
bool Applies(const at::Tensor& x, const at::Tensor& w_packed, int64_t n_out,
             const at::Tensor& b) {
  if (!PackedLinearBf16Enabled()) return false;
  if (!IsDenseCpuBf16(x) || x.dim() < 1 || !IsDenseCpuBf16(w_packed) ||
      w_packed.dim() != 4 || !w_packed.is_contiguous()) {
    return false;
  }
  const int64_t K = x.size(-1);
  if (n_out < 0 || w_packed.size(0) * kPackedPanelCols < n_out ||
      w_packed.size(0) * kPackedPanelCols >= n_out + kPackedPanelCols ||
      w_packed.size(1) != (K + 1) / 2 || w_packed.size(2) != kPackedPanelCols ||
      w_packed.size(3) != 2) {
    return false;
  }
  if (b.defined() && (!IsDenseCpuBf16(b) || b.dim() != 1 ||
                      b.size(0) != n_out || !b.is_contiguous())) {
    return false;
  }
  // No autograd graph is recorded here: leave training to at::linear.
  return !(at::GradMode::is_enabled() &&
           (x.requires_grad() || (b.defined() && b.requires_grad())));
}

}  // namespace

bool PackedLinearBf16Enabled() {
  return CpuHasAvx512Bf16() && !EnvForcesAten() &&
         !g_force_aten.load(std::memory_order_relaxed);
}

void ForceAtenLinear(bool force) { g_force_aten.store(force); }

PackedLinearIsa PackedLinearBf16Isa() {
  if (!PackedLinearBf16Enabled()) return PackedLinearIsa::kNone;
  if (CpuHasAmxBf16() && LinearEnv() != "avx512" &&
      !g_force_avx512.load(std::memory_order_relaxed)) {
    return PackedLinearIsa::kAmxBf16;
  }
  return PackedLinearIsa::kAvx512Bf16;
}

const char* PackedLinearIsaName(PackedLinearIsa isa) {
  switch (isa) {
    case PackedLinearIsa::kNone:
      return "none";
    case PackedLinearIsa::kAvx512Bf16:
      return "avx512-bf16";
    case PackedLinearIsa::kAmxBf16:
      return "amx-bf16";
  }
  return "none";
}

void ForceAvx512Linear(bool force) { g_force_avx512.store(force); }

void SetPackedLinearThreads(int n_threads) {
  g_threads.store(std::max(n_threads, 0));
}

at::Tensor PackLinearWeightBf16(const at::Tensor& w_NK) {
  if (!CpuHasAvx512Bf16() || !IsDenseCpuBf16(w_NK) || w_NK.dim() != 2) {
    return {};
  }
  const int64_t N = w_NK.size(0), K = w_NK.size(1);
  const int64_t n_panels = (N + kPackedPanelCols - 1) / kPackedPanelCols;
  const int64_t k_pairs = (K + 1) / 2;
  at::Tensor padded_NK =
      at::zeros({n_panels * kPackedPanelCols, 2 * k_pairs}, w_NK.options());
  padded_NK.narrow(0, 0, N).narrow(1, 0, K).copy_(w_NK);
  // [panel][col][pair][2] → [panel][pair][col][2].
  return padded_NK.view({n_panels, kPackedPanelCols, k_pairs, 2})
      .permute({0, 2, 1, 3})
      .contiguous();
}

at::Tensor PackedLinearBf16(const at::Tensor& x, const at::Tensor& w_packed,
                            int64_t n_out, const at::Tensor& b,
                            LinearActivation act) {
  if (!Applies(x, w_packed, n_out, b)) return {};
  const at::Tensor x_c = x.contiguous();
  std::vector<int64_t> y_sizes(x.sizes().begin(), x.sizes().end());
  y_sizes.back() = n_out;
  at::Tensor y = at::empty(y_sizes, x.options());
  const int64_t K = x.size(-1);
  int64_t M = 1;
  for (int64_t d = 0; d + 1 < x.dim(); ++d) M *= x.size(d);
  if (y.numel() == 0) return y;
  if (K == 0) {
    // An empty sum: only the bias and the activation remain.
    y.copy_(b.defined() ? b.expand_as(y) : at::zeros_like(y));
    return act == LinearActivation::kGeluTanh ? at::gelu(y, "tanh") : y;
  }
#if defined(__x86_64__)
  GemmArgs args;
  args.x_MK = static_cast<const uint16_t*>(x_c.data_ptr());
  args.w_panels = static_cast<const uint16_t*>(w_packed.data_ptr());
  args.b_N = b.defined() ? static_cast<const uint16_t*>(b.data_ptr()) : nullptr;
  args.y_MN = static_cast<uint16_t*>(y.data_ptr());
  args.M = M;
  args.N = n_out;
  args.K = K;
  args.n_panels = w_packed.size(0);
  args.k_pairs = w_packed.size(1);
  args.act = act;
  const int n_threads = std::max(1, ThreadsForCall());
  const int64_t target_tasks =
      std::min<int64_t>(args.n_panels, kTasksPerThread * n_threads);
  args.panels_per_task = (args.n_panels + target_tasks - 1) / target_tasks;
  const int64_t n_tasks =
      (args.n_panels + args.panels_per_task - 1) / args.panels_per_task;
  const bool amx = PackedLinearBf16Isa() == PackedLinearIsa::kAmxBf16;
  // AMX tiles load 16 whole rows: the last M % 16 go through a zero-padded
  // copy (a block's padding rows are computed and dropped).
  at::Tensor x_tail_16K;
  args.x_tail_16K = nullptr;
  if (amx && M % kAmxRows != 0) {
    const int64_t tail = M % kAmxRows;
    x_tail_16K = at::zeros({kAmxRows, K}, x.options());
    x_tail_16K.narrow(0, 0, tail)
        .copy_(x_c.view({M, K}).narrow(0, M - tail, tail));
    args.x_tail_16K = static_cast<const uint16_t*>(x_tail_16K.data_ptr());
  }
  const WorkerPool::TaskFn task = amx ? &AmxPanelTask : &PanelTask;
  // Rows are independent, so passes change no bit of any row.
  for (int64_t m0 = 0; m0 < M; m0 += kRowsPerPass) {
    GemmArgs pass = args;
    pass.M = std::min(kRowsPerPass, M - m0);
    pass.x_MK = args.x_MK + m0 * K;
    pass.y_MN = args.y_MN + m0 * n_out;
    WorkerPool::Shared().Run(n_threads, n_tasks, task, &pass);
  }
#endif
  return y;
}

at::Tensor LinearWithPacked(const at::Tensor& x, const at::Tensor& w_NK,
                            const at::Tensor& w_packed, const at::Tensor& b,
                            LinearActivation act) {
  // Named for op profiles (tools/bench/op_profile.h): the packed kernel is
  // not an ATen op, so it would otherwise show only as unaccounted time.
  RECORD_USER_SCOPE("md::linear");
  if (w_packed.defined()) {
    at::Tensor y = PackedLinearBf16(x, w_packed, w_NK.size(0), b, act);
    if (y.defined()) return y;
  }
  at::Tensor y = at::linear(x, w_NK, b);
  return act == LinearActivation::kGeluTanh ? at::gelu(y, "tanh") : y;
}

}  // namespace md
