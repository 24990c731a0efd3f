#include "model/io/safetensors_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"

namespace md {
namespace {

// Element bytes go to the file as they lie in memory, and the format is
// little-endian.
static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian");

constexpr char kMetadataKey[] = "__metadata__";
constexpr size_t kHeaderAlignment = 8;
// One write(2) moves at most about 2 GiB; larger tensors go in pieces.
constexpr uint64_t kMaxWriteBytes = 1u << 30;

// Debian's Abseil 20220623 has its own absl::string_view, which StrCat does
// not take from a std::string_view.
absl::string_view AsAbsl(std::string_view s) {
  return absl::string_view(s.data(), s.size());
}

std::string ErrnoMessage(int error_number) {
  return std::error_code(error_number, std::generic_category()).message();
}

std::string U64LittleEndian(uint64_t v) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) {
    out[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  }
  return out;
}

absl::Status CheckNames(const std::vector<TensorHeader>& tensors) {
  std::set<std::string_view> seen;
  for (const TensorHeader& t : tensors) {
    if (t.name.empty()) {
      return absl::InvalidArgumentError("safetensors: empty tensor name");
    }
    if (t.name == kMetadataKey) {
      return absl::InvalidArgumentError(absl::StrCat(
          "safetensors: '", kMetadataKey, "' is reserved, not a tensor name"));
    }
    if (!seen.insert(t.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("safetensors: duplicate tensor '", t.name, "'"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<uint64_t> TensorDataBytes(const TensorHeader& tensor) {
  uint64_t n = DTypeSize(tensor.dtype);
  for (int64_t d : tensor.shape) {
    if (d < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "safetensors: tensor '", tensor.name, "' has a negative dimension"));
    }
    if (__builtin_mul_overflow(n, static_cast<uint64_t>(d), &n)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "safetensors: tensor '", tensor.name, "' overflows the byte count"));
    }
  }
  return n;
}

absl::StatusOr<std::string> EncodeSafetensorsHeader(
    const std::vector<TensorHeader>& tensors,
    const std::map<std::string, std::string>& metadata) {
  if (absl::Status names = CheckNames(tensors); !names.ok()) return names;
  // Ordered, so the header lists tensors in the order of their data.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header[kMetadataKey] = metadata;
  uint64_t offset = 0;
  for (const TensorHeader& t : tensors) {
    absl::StatusOr<uint64_t> n_bytes = TensorDataBytes(t);
    if (!n_bytes.ok()) return n_bytes.status();
    uint64_t end = 0;
    if (__builtin_add_overflow(offset, *n_bytes, &end)) {
      return absl::InvalidArgumentError(
          "safetensors: the tensors' total size overflows");
    }
    header[t.name] = {{"dtype", std::string(DTypeName(t.dtype))},
                      {"shape", t.shape},
                      {"data_offsets", {offset, end}}};
    offset = end;
  }
  std::string json = header.dump();
  // The spec allows trailing spaces; they keep the data buffer aligned.
  const size_t padded = (json.size() + kHeaderAlignment - 1) /
                        kHeaderAlignment * kHeaderAlignment;
  json.resize(std::max(padded, kHeaderAlignment), ' ');
  return absl::StrCat(U64LittleEndian(json.size()), json);
}

absl::StatusOr<std::unique_ptr<SafetensorsWriter>> SafetensorsWriter::Create(
    const std::string& path, std::vector<TensorHeader> tensors,
    const std::map<std::string, std::string>& metadata) {
  absl::StatusOr<std::string> header =
      EncodeSafetensorsHeader(tensors, metadata);
  if (!header.ok()) return header.status();
  std::unique_ptr<SafetensorsWriter> writer(
      new SafetensorsWriter(path, std::move(tensors)));
  writer->fd_ = ::open(writer->temp_path_.c_str(),
                       O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (writer->fd_ < 0) {
    const int err = errno;
    return absl::Status(absl::ErrnoToStatusCode(err),
                        absl::StrCat("cannot create '", writer->temp_path_,
                                     "': ", ErrnoMessage(err)));
  }
  if (absl::Status s = writer->WriteAll(header->data(), header->size());
      !s.ok()) {
    return s;
  }
  return writer;
}

SafetensorsWriter::SafetensorsWriter(std::string path,
                                     std::vector<TensorHeader> tensors)
    : path_(std::move(path)),
      temp_path_(path_ + ".partial"),
      tensors_(std::move(tensors)) {}

SafetensorsWriter::~SafetensorsWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!finished_) std::remove(temp_path_.c_str());
}

absl::Status SafetensorsWriter::WriteAll(const void* data, uint64_t n_bytes) {
  const char* p = static_cast<const char*>(data);
  while (n_bytes > 0) {
    const ssize_t n = ::write(fd_, p, std::min(n_bytes, kMaxWriteBytes));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = n < 0 ? errno : EIO;
      return absl::Status(
          absl::ErrnoToStatusCode(err),
          absl::StrCat("writing '", temp_path_, "': ", ErrnoMessage(err)));
    }
    p += n;
    n_bytes -= static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

absl::Status SafetensorsWriter::Write(std::string_view name, const void* data,
                                      uint64_t n_bytes) {
  if (broken_) {
    return absl::FailedPreconditionError(
        "safetensors: the file is incomplete after an earlier write error");
  }
  if (finished_ || next_ >= tensors_.size()) {
    return absl::FailedPreconditionError(
        absl::StrCat("safetensors: tensor '", AsAbsl(name),
                     "' written after every declared tensor"));
  }
  const TensorHeader& expected = tensors_[next_];
  if (name != expected.name) {
    return absl::FailedPreconditionError(
        absl::StrCat("safetensors: tensor '", AsAbsl(name), "' written where '",
                     expected.name, "' comes next"));
  }
  absl::StatusOr<uint64_t> expected_bytes = TensorDataBytes(expected);
  if (!expected_bytes.ok()) return expected_bytes.status();
  if (n_bytes != *expected_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("safetensors: tensor '", expected.name, "' needs ",
                     *expected_bytes, " bytes, got ", n_bytes));
  }
  if (absl::Status s = WriteAll(data, n_bytes); !s.ok()) {
    broken_ = true;  // part of the tensor may be in the file
    return s;
  }
  ++next_;
  return absl::OkStatus();
}

absl::Status SafetensorsWriter::Finish() {
  if (finished_) return absl::OkStatus();
  if (broken_) {
    return absl::FailedPreconditionError(
        "safetensors: the file is incomplete after an earlier write error");
  }
  if (next_ < tensors_.size()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "safetensors: ", tensors_.size() - next_, " of ", tensors_.size(),
        " tensors not written yet (next: '", tensors_[next_].name, "')"));
  }
  // Durable before it is visible under its real name.
  if (::fsync(fd_) != 0) {
    const int err = errno;
    return absl::InternalError(
        absl::StrCat("flushing '", temp_path_, "': ", ErrnoMessage(err)));
  }
  const int close_result = ::close(fd_);
  fd_ = -1;
  if (close_result != 0) {
    const int err = errno;
    return absl::InternalError(
        absl::StrCat("closing '", temp_path_, "': ", ErrnoMessage(err)));
  }
  if (std::rename(temp_path_.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    return absl::Status(absl::ErrnoToStatusCode(err),
                        absl::StrCat("renaming '", temp_path_, "' to '", path_,
                                     "': ", ErrnoMessage(err)));
  }
  finished_ = true;
  return absl::OkStatus();
}

}  // namespace md
