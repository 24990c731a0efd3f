// Bridges between our plain-C++ pieces and LibTorch: safetensors views to
// tensors, dtype/device names, and turning LibTorch exceptions into statuses
// where they arise (docs/DESIGN.md §4).
#ifndef MOONDREAM_MODEL_IO_TENSOR_IO_H_
#define MOONDREAM_MODEL_IO_TENSOR_IO_H_

#include <ATen/core/Tensor.h>

#include <exception>
#include <type_traits>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "model/io/safetensors.h"

namespace md {

// Copies a mapped tensor into an owned, aligned CPU tensor of the same dtype.
absl::StatusOr<at::Tensor> ToTensor(const TensorView& view);

// The safetensors dtype holding `dtype`'s elements bit for bit;
// InvalidArgument for types the format has no name for.
absl::StatusOr<DType> SafetensorsDType(at::ScalarType dtype);

// "fp32"/"float32", "bf16"/"bfloat16", "fp16"/"float16".
absl::StatusOr<at::ScalarType> ParseDType(absl::string_view name);
absl::string_view DTypeLabel(at::ScalarType dtype);
// "cpu", "cuda", "cuda:1"; refuses CUDA when this LibTorch has none.
absl::StatusOr<at::Device> ParseDevice(absl::string_view name);

absl::Status StatusFromException(absl::string_view what,
                                 const std::exception& e);
absl::Status UnknownExceptionStatus(absl::string_view what);

// Runs `fn`, turning any exception (c10::Error included, and anything not
// derived from std::exception) into an Internal
// status that says what was being done.
template <typename Fn>
auto CatchTorch(absl::string_view what, Fn&& fn)
    -> absl::StatusOr<std::invoke_result_t<Fn>> {
  try {
    return std::forward<Fn>(fn)();
  } catch (const std::exception& e) {
    return StatusFromException(what, e);
  } catch (...) {
    return UnknownExceptionStatus(what);
  }
}

// For `fn` that already returns a status or StatusOr: the same, flattened.
template <typename Fn>
auto CatchExceptions(absl::string_view what, Fn&& fn)
    -> std::invoke_result_t<Fn> {
  try {
    return std::forward<Fn>(fn)();
  } catch (const std::exception& e) {
    return StatusFromException(what, e);
  } catch (...) {
    return UnknownExceptionStatus(what);
  }
}

template <typename Fn>
absl::Status CatchTorchStatus(absl::string_view what, Fn&& fn) {
  try {
    std::forward<Fn>(fn)();
    return absl::OkStatus();
  } catch (const std::exception& e) {
    return StatusFromException(what, e);
  } catch (...) {
    return UnknownExceptionStatus(what);
  }
}

}  // namespace md

#endif  // MOONDREAM_MODEL_IO_TENSOR_IO_H_
