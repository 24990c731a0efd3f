// `--dtype=auto`: the compute dtype that is fast on this machine. On CPU,
// bf16 runs our packed AVX512-BF16 kernels (3-4x faster than fp32 here) but
// without AVX512-BF16 it goes through ATen's emulation, slower than fp32.
#ifndef MOONDREAM_MODEL_NET_DTYPE_CHOICE_H_
#define MOONDREAM_MODEL_NET_DTYPE_CHOICE_H_

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace md {

struct DTypeChoice {
  at::ScalarType dtype = at::kFloat;
  std::string reason;  // For the start-up line: what was picked and why.
};

// `name` is "auto" or a dtype ParseDType reads. auto: bf16 on a CPU with
// AVX512-BF16 and on CUDA, fp32 on other CPUs.
absl::StatusOr<DTypeChoice> ChooseDType(absl::string_view name,
                                        const at::Device& device);

}  // namespace md

#endif  // MOONDREAM_MODEL_NET_DTYPE_CHOICE_H_
