// The AMX microkernel of the packed bf16 linear (bf16_gemm.h): the same
// packed panels, the same epilogue, tiles instead of vdpbf16ps for the whole
// 32-k chunks of K. Internal: used by bf16_gemm.cc.
//
// Batch invariance holds as for the vdpbf16ps kernel: every row goes
// through the same sequence — tile products over K's whole chunks in order,
// then vdpbf16ps over the pairs after the last chunk, then the epilogue —
// whatever M and the thread count. A block of fewer than 16 rows is loaded
// from a zero-padded copy, never computed another way. The two kernels'
// results may differ in the last bit (each rounds its products its own
// way), so a process uses one of them throughout.
#ifndef MOONDREAM_MODEL_NET_KERNELS_BF16_GEMM_AMX_H_
#define MOONDREAM_MODEL_NET_KERNELS_BF16_GEMM_AMX_H_

#include <cstdint>

namespace md::gemm_parts {

// A WorkerPool task: panels [task · panels_per_task, …) of the GemmArgs at
// `context`, every row of the pass against each, on AMX tiles. Loads its
// tile configuration and releases the tiles at the end, so it does not
// depend on, or disturb, what else ran on the thread.
void AmxPanelTask(const void* context, int64_t task);

}  // namespace md::gemm_parts

#endif  // MOONDREAM_MODEL_NET_KERNELS_BF16_GEMM_AMX_H_
