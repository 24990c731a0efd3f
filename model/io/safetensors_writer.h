// Writer for the safetensors format (the reader is safetensors.h).
//
// The header, which names every tensor with its dtype, shape and byte range,
// comes before the data, so all tensors are declared up front and their
// bytes then follow one tensor at a time: a caller can produce each tensor,
// write it and drop it, and a multi-gigabyte checkpoint never needs a second
// copy in memory. Plain C++ (no LibTorch), like the reader.
#ifndef MOONDREAM_MODEL_IO_SAFETENSORS_WRITER_H_
#define MOONDREAM_MODEL_IO_SAFETENSORS_WRITER_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "model/io/safetensors.h"

namespace md {

// One tensor as the header declares it.
struct TensorHeader {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
};

// The bytes before the data buffer: the u64 little-endian header length and
// the JSON header, padded with spaces to a multiple of 8 bytes so the data
// starts 8-byte aligned. Tensors are laid out back to back in the order
// given. InvalidArgument for an empty, duplicate or reserved name
// ("__metadata__"), a negative dimension or a byte count that overflows.
absl::StatusOr<std::string> EncodeSafetensorsHeader(
    const std::vector<TensorHeader>& tensors,
    const std::map<std::string, std::string>& metadata = {});

// Bytes of a tensor's data: its element count times its dtype's size.
absl::StatusOr<uint64_t> TensorDataBytes(const TensorHeader& tensor);

class SafetensorsWriter {
 public:
  // Writes the header for `tensors` to a temporary file next to `path`; the
  // file appears under `path` only once Finish succeeds, so a run that stops
  // halfway never leaves a truncated checkpoint behind.
  static absl::StatusOr<std::unique_ptr<SafetensorsWriter>> Create(
      const std::string& path, std::vector<TensorHeader> tensors,
      const std::map<std::string, std::string>& metadata = {});

  // Removes the temporary file unless Finish succeeded.
  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  // Appends the data of the next declared tensor, which must be `name` and
  // exactly its declared size (little-endian elements, row-major).
  absl::Status Write(std::string_view name, const void* data, uint64_t n_bytes);

  // After every tensor is written: flushes the file to disk and renames it
  // to `path`. FailedPrecondition while tensors are still missing.
  absl::Status Finish();

  const std::string& path() const { return path_; }

 private:
  SafetensorsWriter(std::string path, std::vector<TensorHeader> tensors);
  absl::Status WriteAll(const void* data, uint64_t n_bytes);

  std::string path_;
  std::string temp_path_;
  std::vector<TensorHeader> tensors_;
  size_t next_ = 0;  // index of the next tensor to write
  int fd_ = -1;
  bool finished_ = false;
  bool broken_ = false;  // a write failed: the file cannot be completed
};

}  // namespace md

#endif  // MOONDREAM_MODEL_IO_SAFETENSORS_WRITER_H_
