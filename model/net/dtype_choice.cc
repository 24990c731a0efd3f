#include "model/net/dtype_choice.h"

#include "absl/strings/ascii.h"
#include "base/status_macros.h"
#include "model/io/tensor_io.h"
#include "model/net/kernels/x86_simd.h"

namespace md {

absl::StatusOr<DTypeChoice> ChooseDType(absl::string_view name,
                                        const at::Device& device) {
  if (absl::AsciiStrToLower(name) != "auto") {
    ASSIGN_OR_RETURN(at::ScalarType dtype, ParseDType(name));
    return DTypeChoice{dtype, "as --dtype asked"};
  }
  if (device.is_cuda()) {
    return DTypeChoice{at::kBFloat16,
                       "auto: a CUDA device (bf16 needs compute capability "
                       "8.0+; use --dtype=fp16 on older GPUs)"};
  }
  if (CpuHasAmxBf16()) {
    return DTypeChoice{at::kBFloat16,
                       "auto: this CPU has AVX512-BF16 and AMX tiles, where "
                       "bf16 is several times faster than fp32"};
  }
  if (CpuHasAvx512Bf16()) {
    return DTypeChoice{at::kBFloat16,
                       "auto: this CPU has AVX512-BF16, where bf16 is "
                       "several times faster than fp32"};
  }
  return DTypeChoice{at::kFloat,
                     "auto: this CPU lacks AVX512-BF16, where bf16 would be "
                     "emulated and slower than fp32"};
}

}  // namespace md
