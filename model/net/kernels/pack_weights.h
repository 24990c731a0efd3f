// Load-time packing of a model's linear layers for the packed bf16 kernel.
#ifndef MOONDREAM_MODEL_NET_KERNELS_PACK_WEIGHTS_H_
#define MOONDREAM_MODEL_NET_KERNELS_PACK_WEIGHTS_H_

#include <cstdint>

#include "model/io/weights.h"

namespace md {

// Sets LinearWeights::packed of every linear layer in `weights` (vision,
// text, region) whose weight is a CPU bf16 tensor, where this CPU runs the
// packed kernel; leaves the others undefined. Returns the bytes the packed
// copies take (the plain weights are kept).
int64_t PackLinearWeights(Weights* weights);

}  // namespace md

#endif  // MOONDREAM_MODEL_NET_KERNELS_PACK_WEIGHTS_H_
