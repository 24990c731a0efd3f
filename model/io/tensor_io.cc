#include "model/io/tensor_io.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>

#include <cstring>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace md {
namespace {

absl::StatusOr<at::ScalarType> ScalarTypeOf(DType dtype) {
  switch (dtype) {
    case DType::kBool:
      return at::kBool;
    case DType::kU8:
      return at::kByte;
    case DType::kI8:
      return at::kChar;
    case DType::kI16:
      return at::kShort;
    case DType::kI32:
      return at::kInt;
    case DType::kI64:
      return at::kLong;
    case DType::kF16:
      return at::kHalf;
    case DType::kBF16:
      return at::kBFloat16;
    case DType::kF32:
      return at::kFloat;
    case DType::kF64:
      return at::kDouble;
  }
  return absl::InvalidArgumentError("unknown dtype");
}

}  // namespace

absl::StatusOr<at::Tensor> ToTensor(const TensorView& view) {
  absl::StatusOr<at::ScalarType> type = ScalarTypeOf(view.dtype);
  if (!type.ok()) return type.status();
  return CatchTorch(absl::StrCat("reading tensor '", view.name, "'"), [&] {
    at::Tensor out = at::empty(view.shape, at::TensorOptions().dtype(*type));
    if (view.n_bytes > 0) std::memcpy(out.data_ptr(), view.data, view.n_bytes);
    return out;
  });
}

absl::StatusOr<DType> SafetensorsDType(at::ScalarType dtype) {
  switch (dtype) {
    case at::kBool:
      return DType::kBool;
    case at::kByte:
      return DType::kU8;
    case at::kChar:
      return DType::kI8;
    case at::kShort:
      return DType::kI16;
    case at::kInt:
      return DType::kI32;
    case at::kLong:
      return DType::kI64;
    case at::kHalf:
      return DType::kF16;
    case at::kBFloat16:
      return DType::kBF16;
    case at::kFloat:
      return DType::kF32;
    case at::kDouble:
      return DType::kF64;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("no safetensors dtype for ", c10::toString(dtype)));
  }
}

absl::StatusOr<at::ScalarType> ParseDType(absl::string_view name) {
  std::string n = absl::AsciiStrToLower(name);
  if (n == "fp32" || n == "float32" || n == "f32") return at::kFloat;
  if (n == "bf16" || n == "bfloat16") return at::kBFloat16;
  if (n == "fp16" || n == "float16" || n == "f16") return at::kHalf;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown dtype '", name, "' (use fp32, bf16 or fp16)"));
}

absl::string_view DTypeLabel(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat:
      return "fp32";
    case at::kBFloat16:
      return "bf16";
    case at::kHalf:
      return "fp16";
    default:
      return "other";
  }
}

absl::StatusOr<at::Device> ParseDevice(absl::string_view name) {
  absl::StatusOr<at::Device> device = CatchTorch(
      "parsing device", [&] { return at::Device(std::string(name)); });
  if (!device.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown device '", name, "' (use cpu, cuda or cuda:N)"));
  }
  if (device->is_cuda() && !at::hasCUDA()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "device '", name, "' requested but this LibTorch build has no CUDA"));
  }
  if (!device->is_cuda() && !device->is_cpu()) {
    return absl::InvalidArgumentError(
        absl::StrCat("device '", name, "' is not supported (cpu or cuda)"));
  }
  return device;
}

absl::Status StatusFromException(absl::string_view what,
                                 const std::exception& e) {
  // c10::Error messages carry a long backtrace after the first line.
  absl::string_view message = e.what();
  if (size_t eol = message.find('\n'); eol != absl::string_view::npos) {
    message = message.substr(0, eol);
  }
  return absl::InternalError(absl::StrCat(what, ": ", message));
}

absl::Status UnknownExceptionStatus(absl::string_view what) {
  return absl::InternalError(
      absl::StrCat(what, ": an exception of unknown type"));
}

}  // namespace md
