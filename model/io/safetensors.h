// Memory-mapped reader for the safetensors format.
//
// A safetensors file is: u64 little-endian header length N, N bytes of JSON
// ({name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}),
// then the data buffer that the offsets index. The file is untrusted input:
// every header field is validated before any tensor is exposed, and every
// failure is a status that names the file and, where there is one, the tensor.
// This library has no LibTorch dependency so it can run under sanitizers.
#ifndef MOONDREAM_MODEL_IO_SAFETENSORS_H_
#define MOONDREAM_MODEL_IO_SAFETENSORS_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace md {

enum class DType { kBool, kU8, kI8, kI16, kI32, kI64, kF16, kBF16, kF32, kF64 };

// Bytes per element.
size_t DTypeSize(DType dtype);
// The safetensors spelling: "F16", "BF16", "F32", "I64", "U8", ...
std::string_view DTypeName(DType dtype);

// A tensor inside a mapped file. `data` stays valid while the file lives and
// is not necessarily aligned to the element size.
struct TensorView {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const std::byte* data = nullptr;
  size_t n_bytes = 0;

  int64_t NumElements() const;
};

class SafetensorsFile {
 public:
  // Largest JSON header accepted; real checkpoints use well under 1 MiB.
  static constexpr uint64_t kMaxHeaderBytes = 100u << 20;

  // Maps `path` read-only and validates the header.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(
      const std::string& path);
  // Validates an in-memory file (used by tests and fuzzing); takes ownership.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> FromBytes(
      std::string bytes, std::string display_name = "<memory>");

  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  // NotFound error naming the tensor and the file when absent.
  absl::StatusOr<TensorView> Get(std::string_view name) const;
  bool Contains(std::string_view name) const;
  // Tensor names in sorted order.
  std::vector<std::string> Names() const;
  // The optional "__metadata__" string map.
  const std::map<std::string, std::string>& metadata() const {
    return metadata_;
  }
  const std::string& display_name() const { return display_name_; }

 private:
  SafetensorsFile() = default;
  absl::Status Parse();

  std::string display_name_;
  // Exactly one of these backs `bytes_`.
  void* mapping_ = nullptr;
  size_t mapping_size_ = 0;
  std::string owned_;

  const std::byte* bytes_ = nullptr;
  size_t n_bytes_ = 0;
  std::map<std::string, TensorView, std::less<>> tensors_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace md

#endif  // MOONDREAM_MODEL_IO_SAFETENSORS_H_
