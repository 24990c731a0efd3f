// Bridges between our plain-C++ pieces and LibTorch: safetensors views to
// tensors, dtype/device names, and turning LibTorch exceptions into statuses
// where they arise (DESIGN.md §4).
#ifndef MOONDREAM_MODEL_TENSOR_IO_H_
#define MOONDREAM_MODEL_TENSOR_IO_H_

#include <ATen/core/Tensor.h>

#include <exception>
#include <type_traits>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "model/safetensors.h"

namespace md {

// Copies a mapped tensor into an owned, aligned CPU tensor of the same dtype.
absl::StatusOr<at::Tensor> ToTensor(const TensorView& view);

// "fp32"/"float32", "bf16"/"bfloat16", "fp16"/"float16".
absl::StatusOr<at::ScalarType> ParseDType(absl::string_view name);
absl::string_view DTypeLabel(at::ScalarType dtype);
// "cpu", "cuda", "cuda:1"; refuses CUDA when this LibTorch has none.
absl::StatusOr<at::Device> ParseDevice(absl::string_view name);

absl::Status StatusFromException(absl::string_view what,
                                 const std::exception& e);

// Runs `fn`, turning any exception (c10::Error included) into an Internal
// status that says what was being done.
template <typename Fn>
auto CatchTorch(absl::string_view what, Fn&& fn)
    -> absl::StatusOr<std::invoke_result_t<Fn>> {
  try {
    return std::forward<Fn>(fn)();
  } catch (const std::exception& e) {
    return StatusFromException(what, e);
  }
}

template <typename Fn>
absl::Status CatchTorchStatus(absl::string_view what, Fn&& fn) {
  try {
    std::forward<Fn>(fn)();
    return absl::OkStatus();
  } catch (const std::exception& e) {
    return StatusFromException(what, e);
  }
}

}  // namespace md

#endif  // MOONDREAM_MODEL_TENSOR_IO_H_
