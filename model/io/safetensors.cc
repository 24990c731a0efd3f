#include "model/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <system_error>
#include <tuple>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace md {
namespace {

using json = nlohmann::json;

constexpr size_t kHeaderLengthBytes = 8;
constexpr size_t kMaxDims = 8;
constexpr char kMetadataKey[] = "__metadata__";

constexpr DType kAllDTypes[] = {
    DType::kBool, DType::kU8,  DType::kI8,   DType::kI16, DType::kI32,
    DType::kI64,  DType::kF16, DType::kBF16, DType::kF32, DType::kF64};

// This Abseil (Debian's 20220623) has its own absl::string_view, which
// StrCat does not take from a std::string_view.
absl::string_view AsAbsl(std::string_view s) {
  return absl::string_view(s.data(), s.size());
}

// Names and dtypes come from the file: keep them short and printable in
// messages.
std::string Printable(std::string_view s) {
  constexpr size_t kMaxShown = 200;
  if (s.size() <= kMaxShown) return absl::Utf8SafeCEscape(AsAbsl(s));
  return absl::StrCat(absl::Utf8SafeCEscape(AsAbsl(s.substr(0, kMaxShown))),
                      "...");
}

bool ParseDType(std::string_view name, DType* dtype) {
  for (DType d : kAllDTypes) {
    if (DTypeName(d) == name) {
      *dtype = d;
      return true;
    }
  }
  return false;
}

uint64_t ReadU64LittleEndian(const std::byte* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) {
    v = (v << 8) | static_cast<uint64_t>(std::to_integer<uint8_t>(p[i]));
  }
  return v;
}

std::string ErrnoMessage(int error_number) {
  return std::error_code(error_number, std::generic_category()).message();
}

// A validated entry before it becomes a TensorView.
struct Entry {
  std::string name;
  uint64_t begin = 0;
  uint64_t end = 0;
};

}  // namespace

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kBool:
    case DType::kU8:
    case DType::kI8:
      return 1;
    case DType::kI16:
    case DType::kF16:
    case DType::kBF16:
      return 2;
    case DType::kI32:
    case DType::kF32:
      return 4;
    case DType::kI64:
    case DType::kF64:
      return 8;
  }
  return 0;
}

std::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kBool:
      return "BOOL";
    case DType::kU8:
      return "U8";
    case DType::kI8:
      return "I8";
    case DType::kI16:
      return "I16";
    case DType::kI32:
      return "I32";
    case DType::kI64:
      return "I64";
    case DType::kF16:
      return "F16";
    case DType::kBF16:
      return "BF16";
    case DType::kF32:
      return "F32";
    case DType::kF64:
      return "F64";
  }
  return "?";
}

int64_t TensorView::NumElements() const {
  // Unsigned arithmetic: a view built by hand with absurd dims wraps instead
  // of invoking undefined behaviour. Views from SafetensorsFile never wrap.
  uint64_t n = 1;
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);
  return static_cast<int64_t>(n);
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(
    const std::string& path) {
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->display_name_ = path;

  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    return absl::Status(absl::ErrnoToStatusCode(err),
                        absl::StrCat("cannot open safetensors file '", path,
                                     "': ", ErrnoMessage(err)));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return absl::InternalError(
        absl::StrCat("cannot stat '", path, "': ", ErrnoMessage(err)));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a regular file"));
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < kHeaderLengthBytes) {
    // mmap rejects a zero length; Parse() reports the truncation without
    // reading any bytes.
    ::close(fd);
    file->n_bytes_ = static_cast<size_t>(size);
    absl::Status status = file->Parse();
    if (status.ok()) status = absl::InternalError("short file accepted");
    return status;
  }
  if (size > std::numeric_limits<size_t>::max()) {
    ::close(fd);
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": file of ", size, " bytes is too large to map"));
  }
  void* mapping =
      ::mmap(nullptr, static_cast<size_t>(size), PROT_READ, MAP_PRIVATE, fd, 0);
  const int mmap_errno = errno;
  ::close(fd);  // The mapping keeps its own reference to the file.
  if (mapping == MAP_FAILED) {
    return absl::InternalError(
        absl::StrCat("cannot mmap '", path, "' (", size,
                     " bytes): ", ErrnoMessage(mmap_errno)));
  }
  file->mapping_ = mapping;
  file->mapping_size_ = static_cast<size_t>(size);
  file->bytes_ = static_cast<const std::byte*>(mapping);
  file->n_bytes_ = static_cast<size_t>(size);

  if (absl::Status status = file->Parse(); !status.ok()) return status;
  return file;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::FromBytes(
    std::string bytes, std::string display_name) {
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->display_name_ = std::move(display_name);
  file->owned_ = std::move(bytes);
  file->bytes_ = reinterpret_cast<const std::byte*>(file->owned_.data());
  file->n_bytes_ = file->owned_.size();
  if (absl::Status status = file->Parse(); !status.ok()) return status;
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_ != nullptr) ::munmap(mapping_, mapping_size_);
}

absl::Status SafetensorsFile::Parse() {
  const std::string& file = display_name_;
  auto error = [&file](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": ", parts...));
  };

  // --- Header length. ---
  if (n_bytes_ < kHeaderLengthBytes) {
    if (n_bytes_ == 0) {
      return error("truncated: file is empty, fewer than the ",
                   kHeaderLengthBytes, "-byte header length");
    }
    return error("truncated: file has only ", n_bytes_,
                 " bytes, fewer than the ", kHeaderLengthBytes,
                 "-byte header length");
  }
  const uint64_t header_len = ReadU64LittleEndian(bytes_);
  if (header_len == 0) return error("header length is 0");
  if (header_len > kMaxHeaderBytes) {
    return error("header length ", header_len, " exceeds the maximum of ",
                 kMaxHeaderBytes, " bytes");
  }
  // header_len <= kMaxHeaderBytes, so the subtraction side cannot overflow.
  if (header_len > n_bytes_ - kHeaderLengthBytes) {
    return error("header length ", header_len,
                 " runs past the end of the file (size ", n_bytes_, ")");
  }
  const char* header_begin =
      reinterpret_cast<const char*>(bytes_ + kHeaderLengthBytes);
  const char* header_end = header_begin + header_len;
  const std::byte* data = bytes_ + kHeaderLengthBytes + header_len;
  const uint64_t data_size = n_bytes_ - kHeaderLengthBytes - header_len;

  // --- JSON. ---
  // nlohmann keeps the last of duplicate keys; a callback notes duplicates at
  // the top level so a tensor cannot be silently shadowed.
  std::set<std::string, std::less<>> top_keys;
  std::string duplicate_key;
  json header;
  try {
    header = json::parse(
        header_begin, header_end,
        [&](int depth, json::parse_event_t event, json& parsed) {
          if (event == json::parse_event_t::key && depth == 1 &&
              parsed.is_string() && duplicate_key.empty()) {
            const std::string& key = parsed.get_ref<const std::string&>();
            if (!top_keys.insert(key).second) duplicate_key = key;
          }
          return true;
        },
        /*allow_exceptions=*/false);
  } catch (const std::exception& e) {
    return error("header is not valid JSON (", e.what(), ")");
  }
  if (header.is_discarded()) return error("header is not valid JSON");
  if (!header.is_object()) {
    return error("header is not a JSON object (found ", header.type_name(),
                 ")");
  }
  if (!duplicate_key.empty()) {
    return error("header has duplicate key '", Printable(duplicate_key), "'");
  }

  std::vector<Entry> entries;
  std::map<std::string, TensorView, std::less<>> tensors;
  std::map<std::string, std::string> metadata;
  try {
    for (const auto& [name, value] : header.items()) {
      if (name == kMetadataKey) {
        if (!value.is_object()) {
          return error("'", kMetadataKey, "' is not an object (found ",
                       value.type_name(), ")");
        }
        for (const auto& [key, v] : value.items()) {
          if (!v.is_string()) {
            return error("'", kMetadataKey, "' entry '", Printable(key),
                         "' is not a string (found ", v.type_name(), ")");
          }
          metadata.emplace(key, v.get<std::string>());
        }
        continue;
      }

      const std::string shown = absl::StrCat("tensor '", Printable(name), "'");
      if (!value.is_object()) {
        return error(shown, ": entry is not an object (found ",
                     value.type_name(), ")");
      }

      // dtype
      auto it = value.find("dtype");
      if (it == value.end()) return error(shown, ": missing 'dtype'");
      if (!it->is_string()) {
        return error(shown, ": 'dtype' is not a string (found ",
                     it->type_name(), ")");
      }
      const std::string& dtype_name = it->get_ref<const std::string&>();
      DType dtype;
      if (!ParseDType(dtype_name, &dtype)) {
        return error(shown, ": unknown dtype '", Printable(dtype_name), "'");
      }

      // shape
      it = value.find("shape");
      if (it == value.end()) return error(shown, ": missing 'shape'");
      if (!it->is_array()) {
        return error(shown, ": 'shape' is not an array (found ",
                     it->type_name(), ")");
      }
      if (it->size() > kMaxDims) {
        return error(shown, ": 'shape' has ", it->size(),
                     " dimensions, more than the maximum of ", kMaxDims);
      }
      std::vector<int64_t> shape;
      shape.reserve(it->size());
      for (size_t i = 0; i < it->size(); ++i) {
        const json& dim = (*it)[i];
        if (!dim.is_number_unsigned()) {
          // nlohmann stores non-negative integer literals as unsigned.
          return error(
              shown, ": shape dimension ", i,
              " is not a non-negative integer (found ",
              dim.is_number_integer() ? "a negative integer" : dim.type_name(),
              ")");
        }
        const uint64_t d = dim.get<uint64_t>();
        if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
          return error(shown, ": shape dimension ", i, " (", d,
                       ") is too large");
        }
        shape.push_back(static_cast<int64_t>(d));
      }

      // data_offsets
      it = value.find("data_offsets");
      if (it == value.end()) return error(shown, ": missing 'data_offsets'");
      if (!it->is_array() || it->size() != 2 ||
          !(*it)[0].is_number_unsigned() || !(*it)[1].is_number_unsigned()) {
        return error(shown,
                     ": 'data_offsets' is not an array of exactly 2 "
                     "non-negative integers");
      }
      const uint64_t begin = (*it)[0].get<uint64_t>();
      const uint64_t end = (*it)[1].get<uint64_t>();
      if (begin > end) {
        return error(shown, ": data_offsets begin ", begin,
                     " is greater than end ", end);
      }
      if (end > data_size) {
        return error(shown, ": data_offsets [", begin, ", ", end,
                     "] run past the end of the data buffer (size ", data_size,
                     ")");
      }

      // Byte count, with overflow checks. A zero dimension makes the tensor
      // empty whatever the other dimensions are.
      const bool empty =
          std::find(shape.begin(), shape.end(), 0) != shape.end();
      uint64_t n_expected = 0;
      bool overflow = false;
      if (!empty) {
        uint64_t numel = 1;
        for (int64_t d : shape) {
          overflow = overflow || __builtin_mul_overflow(
                                     numel, static_cast<uint64_t>(d), &numel);
        }
        overflow = overflow ||
                   __builtin_mul_overflow(numel, DTypeSize(dtype), &n_expected);
      }
      const std::string shape_str =
          absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
      if (overflow) {
        return error(shown, ": shape ", shape_str, " with dtype ",
                     AsAbsl(DTypeName(dtype)), " overflows the byte count");
      }
      if (end - begin != n_expected) {
        return error(shown, ": shape ", shape_str, " with dtype ",
                     AsAbsl(DTypeName(dtype)), " needs ", n_expected,
                     " bytes but data_offsets [", begin, ", ", end, "] span ",
                     end - begin, " bytes");
      }

      TensorView view;
      view.name = name;
      view.dtype = dtype;
      view.shape = std::move(shape);
      view.data = data + begin;
      view.n_bytes = static_cast<size_t>(end - begin);
      tensors.emplace(name, std::move(view));
      entries.push_back(Entry{name, begin, end});
    }
  } catch (const std::exception& e) {
    // Every access above is type-checked first; this is a last guard.
    return error("malformed header (", e.what(), ")");
  }

  // --- Coverage: the data buffer is indexed exactly once, without gaps. ---
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  uint64_t covered = 0;  // Bytes [0, covered) are indexed.
  const Entry* previous = nullptr;
  for (const Entry& e : entries) {
    if (e.begin < covered) {
      return error("tensor '", Printable(e.name), "' (bytes [", e.begin, ", ",
                   e.end, ")) overlaps tensor '", Printable(previous->name),
                   "' (bytes [", previous->begin, ", ", previous->end, "))");
    }
    if (e.begin > covered) {
      return error("data buffer has a hole: bytes [", covered, ", ", e.begin,
                   ") before tensor '", Printable(e.name),
                   "' are not covered by any tensor");
    }
    covered = e.end;
    previous = &e;
  }
  if (covered != data_size) {
    return error("data buffer has a hole: trailing bytes [", covered, ", ",
                 data_size, ") are not covered by any tensor");
  }

  tensors_ = std::move(tensors);
  metadata_ = std::move(metadata);
  return absl::OkStatus();
}

absl::StatusOr<TensorView> SafetensorsFile::Get(std::string_view name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    return absl::NotFoundError(absl::StrCat("tensor '", Printable(name),
                                            "' not found in ", display_name_));
  }
  return it->second;
}

bool SafetensorsFile::Contains(std::string_view name) const {
  return tensors_.find(name) != tensors_.end();
}

std::vector<std::string> SafetensorsFile::Names() const {
  std::vector<std::string> names;
  names.reserve(tensors_.size());
  for (const auto& [name, view] : tensors_) names.push_back(name);
  return names;
}

}  // namespace md
