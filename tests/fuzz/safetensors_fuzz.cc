// Fuzzes the safetensors reader (model/io/safetensors.h) through its
// in-memory entry point, SafetensorsFile::FromBytes (Open maps a file and
// then runs the same Parse).
//
// What holds by design for a file that is accepted: the 8-byte header length
// and the header lie inside the input; every tensor's byte count is its
// element count times its dtype's size; the tensors cover the data buffer
// after the header exactly once, in some order, without gaps; each view
// shows the input's own bytes at its offset (read in full here, so ASan sees
// any view that reaches past the buffer). Everything refused is
// InvalidArgument.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "model/io/safetensors.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

uint64_t HeaderLength(const uint8_t* data) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | data[i];
  return v;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::StatusOr<std::unique_ptr<md::SafetensorsFile>> file =
      md::SafetensorsFile::FromBytes(
          std::string(reinterpret_cast<const char*>(data), size), "fuzz");
  if (!file.ok()) {
    FUZZ_CHECK_MSG(file.status().code() == absl::StatusCode::kInvalidArgument,
                   file.status().ToString());
    return 0;
  }

  FUZZ_CHECK(size >= 8);
  const uint64_t header_length = HeaderLength(data);
  FUZZ_CHECK(header_length > 0 && header_length <= size - 8);
  const uint8_t* buffer = data + 8 + header_length;
  const size_t buffer_size = size - 8 - header_length;

  const std::vector<std::string> names = (*file)->Names();
  FUZZ_CHECK(std::is_sorted(names.begin(), names.end()));
  FUZZ_CHECK(std::adjacent_find(names.begin(), names.end()) == names.end());
  FUZZ_CHECK(!(*file)->Contains("__metadata__"));

  std::vector<md::TensorView> views;
  for (const std::string& name : names) {
    FUZZ_CHECK((*file)->Contains(name));
    absl::StatusOr<md::TensorView> view = (*file)->Get(name);
    FUZZ_CHECK_MSG(view.ok(), view.status().ToString());
    FUZZ_CHECK(view->name == name);
    FUZZ_CHECK(view->data != nullptr);
    // A zero dimension makes a tensor empty whatever the others are; else
    // the byte count must not overflow.
    FUZZ_CHECK(md::DTypeSize(view->dtype) > 0);
    const bool empty = std::find(view->shape.begin(), view->shape.end(), 0) !=
                       view->shape.end();
    uint64_t n_bytes = empty ? 0 : md::DTypeSize(view->dtype);
    for (int64_t d : view->shape) {
      FUZZ_CHECK(d >= 0);
      if (!empty) {
        FUZZ_CHECK(!__builtin_mul_overflow(n_bytes, static_cast<uint64_t>(d),
                                           &n_bytes));
      }
    }
    if (!empty) {
      FUZZ_CHECK(static_cast<uint64_t>(view->NumElements()) *
                     md::DTypeSize(view->dtype) ==
                 n_bytes);
    }
    FUZZ_CHECK(view->n_bytes == n_bytes);
    views.push_back(*std::move(view));
  }

  if (constexpr char kAbsent[] = "\x01 absent"; !(*file)->Contains(kAbsent)) {
    const absl::StatusOr<md::TensorView> missing = (*file)->Get(kAbsent);
    FUZZ_CHECK(!missing.ok() &&
               missing.status().code() == absl::StatusCode::kNotFound);
  }

  if (views.empty()) {
    FUZZ_CHECK(buffer_size == 0);
    return 0;
  }
  // In order of position (empty tensors first where several start at one
  // byte), each tensor starts where the one before it ended.
  std::sort(views.begin(), views.end(),
            [](const md::TensorView& a, const md::TensorView& b) {
              return a.data != b.data ? a.data < b.data : a.n_bytes < b.n_bytes;
            });
  const std::byte* base = views.front().data;
  const std::byte* cursor = base;
  for (const md::TensorView& view : views) {
    FUZZ_CHECK(view.data == cursor);
    cursor += view.n_bytes;
    const size_t offset = static_cast<size_t>(view.data - base);
    FUZZ_CHECK(offset + view.n_bytes <= buffer_size);
    FUZZ_CHECK(std::memcmp(view.data, buffer + offset, view.n_bytes) == 0);
  }
  FUZZ_CHECK(static_cast<size_t>(cursor - base) == buffer_size);
  return 0;
}
