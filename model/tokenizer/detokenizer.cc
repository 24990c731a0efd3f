#include "model/tokenizer/detokenizer.h"

#include "model/tokenizer/pretokenize.h"

namespace md {
namespace {

constexpr absl::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

}  // namespace

void Utf8Repairer::Append(absl::string_view bytes, std::string* out) {
  size_t i = 0;
  while (i < bytes.size()) {
    const uint8_t byte = static_cast<uint8_t>(bytes[i]);
    if (n_pending_ == 0) {
      // Copy the run of ASCII at once.
      if (byte < 0x80) {
        size_t end = i + 1;
        while (end < bytes.size() && static_cast<uint8_t>(bytes[end]) < 0x80) {
          ++end;
        }
        out->append(bytes.data() + i, end - i);
        i = end;
        continue;
      }
      const Utf8Lead lead = Utf8LeadOf(byte);
      ++i;
      if (lead.n_continuation < 0) {
        out->append(kReplacement.data(), kReplacement.size());
        continue;
      }
      pending_[0] = static_cast<char>(byte);
      n_pending_ = 1;
      n_missing_ = lead.n_continuation;
      lo_ = lead.lo;
      hi_ = lead.hi;
      continue;
    }
    if (byte < lo_ || byte > hi_) {
      // The partial character is ill-formed; `byte` starts afresh.
      out->append(kReplacement.data(), kReplacement.size());
      n_pending_ = 0;
      continue;
    }
    pending_[n_pending_++] = static_cast<char>(byte);
    lo_ = 0x80;
    hi_ = 0xBF;
    ++i;
    if (--n_missing_ == 0) {
      out->append(pending_, n_pending_);
      n_pending_ = 0;
    }
  }
}

void Utf8Repairer::Flush(std::string* out) {
  if (n_pending_ > 0) out->append(kReplacement.data(), kReplacement.size());
  n_pending_ = 0;
  n_missing_ = 0;
}

std::string ToValidUtf8(absl::string_view bytes) {
  if (ValidateUtf8(bytes).ok()) return std::string(bytes);
  std::string out;
  out.reserve(bytes.size() + 8);
  Utf8Repairer repairer;
  repairer.Append(bytes, &out);
  repairer.Flush(&out);
  return out;
}

absl::StatusOr<std::string> StreamingDetokenizer::Push(int id) {
  absl::StatusOr<absl::string_view> bytes = tokenizer_->TokenBytes(id);
  if (!bytes.ok()) return bytes.status();
  std::string out;
  repairer_.Append(*bytes, &out);
  return out;
}

std::string StreamingDetokenizer::Flush() {
  std::string out;
  repairer_.Flush(&out);
  return out;
}

}  // namespace md
