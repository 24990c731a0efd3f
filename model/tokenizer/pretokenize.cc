#include "model/tokenizer/pretokenize.h"

#include <unicode/uchar.h>

#include <array>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"

namespace md {
namespace {

using Bytes = const unsigned char*;

std::string HexByte(uint8_t byte) {
  constexpr char kDigits[] = "0123456789ABCDEF";
  return {'0', 'x', kDigits[byte >> 4], kDigits[byte & 15]};
}

absl::Status Utf8Error(size_t offset, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(
      "text is not valid UTF-8: ", what, " at byte offset ", offset));
}

// True when none of the 8 bytes at `s` has its top bit set.
inline bool EightAscii(Bytes s) {
  uint64_t word;
  std::memcpy(&word, s, sizeof(word));
  return (word & 0x8080808080808080ull) == 0;
}

constexpr std::array<CharClass, 128> BuildAsciiClasses() {
  std::array<CharClass, 128> classes{};
  for (int c = 0; c < 128; ++c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
      classes[c] = CharClass::kLetter;
    } else if (c >= '0' && c <= '9') {
      classes[c] = CharClass::kNumber;
    } else if (c == ' ' || (c >= '\t' && c <= '\r')) {
      classes[c] = CharClass::kSpace;  // White_Space: TAB LF VT FF CR SPACE
    } else {
      classes[c] = CharClass::kOther;  // 0x1C..0x1F are not White_Space
    }
  }
  return classes;
}

constexpr std::array<CharClass, 128> kAsciiClasses = BuildAsciiClasses();

// Length after the apostrophe of a contraction at `s` ('s 't 're 've 'm 'll
// 'd, lower case only, as in GPT-2's pattern); 0 when there is none.
inline size_t ContractionLength(Bytes s, size_t n) {
  if (n == 0) return 0;
  switch (s[0]) {
    case 's':
    case 't':
    case 'm':
    case 'd':
      return 1;
    case 'r':
    case 'v':
      return n >= 2 && s[1] == 'e' ? 2 : 0;
    case 'l':
      return n >= 2 && s[1] == 'l' ? 2 : 0;
    default:
      return 0;
  }
}

}  // namespace

absl::Status ValidateUtf8(absl::string_view text) {
  const Bytes s = reinterpret_cast<Bytes>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    while (i + 8 <= n && EightAscii(s + i)) i += 8;
    if (i >= n) break;
    const uint8_t byte = s[i];
    const Utf8Lead lead = Utf8LeadOf(byte);
    if (lead.n_continuation == 0) {
      ++i;
      continue;
    }
    if (lead.n_continuation < 0) {
      return Utf8Error(
          i, absl::StrCat(
                 "byte ", HexByte(byte),
                 byte >= 0x80 && byte <= 0xBF ? " (a continuation byte)" : "",
                 " cannot start a character"));
    }
    for (int k = 1; k <= lead.n_continuation; ++k) {
      if (i + k >= n) {
        return Utf8Error(i, absl::StrCat("the text ends inside the ",
                                         lead.n_continuation + 1,
                                         "-byte character starting"));
      }
      const uint8_t next = s[i + k];
      const uint8_t lo = k == 1 ? lead.lo : 0x80;
      const uint8_t hi = k == 1 ? lead.hi : 0xBF;
      if (next < lo || next > hi) {
        return Utf8Error(
            i, absl::StrCat("byte ", HexByte(next), " cannot follow ",
                            k == 1 ? "lead byte " : "the bytes from ",
                            HexByte(byte), " (an ill-formed sequence)"));
      }
    }
    i += 1 + lead.n_continuation;
  }
  return absl::OkStatus();
}

CharClass ClassifyCodePoint(char32_t c) {
  if (c < 128) return kAsciiClasses[c];
  const UChar32 u = static_cast<UChar32>(c);
  if (u_isUWhiteSpace(u)) return CharClass::kSpace;
  const uint32_t mask = U_GET_GC_MASK(u);
  if (mask & U_GC_L_MASK) return CharClass::kLetter;
  if (mask & U_GC_N_MASK) return CharClass::kNumber;
  return CharClass::kOther;
}

void ForEachGpt2Pretoken(absl::string_view text,
                         absl::FunctionRef<void(absl::string_view)> piece) {
  const Bytes s = reinterpret_cast<Bytes>(text.data());
  const size_t n = text.size();
  // The class of the code point at `at`, its length in `*len`.
  auto class_at = [&](size_t at, size_t* len) {
    if (s[at] < 0x80) {
      *len = 1;
      return kAsciiClasses[s[at]];
    }
    return ClassifyCodePoint(DecodeUtf8(s + at, len));
  };

  size_t p = 0;
  while (p < n) {
    // 's|'t|'re|'ve|'m|'ll|'d
    if (s[p] == '\'') {
      const size_t m = ContractionLength(s + p + 1, n - p - 1);
      if (m > 0) {
        piece(text.substr(p, 1 + m));
        p += 1 + m;
        continue;
      }
    }
    size_t len = 0;
    CharClass cls = class_at(p, &len);
    size_t q = p + len;
    // ` ?X+`: one ASCII space joins a following run of letters, numbers or
    // others.
    if (s[p] == ' ' && q < n) {
      size_t next_len = 0;
      const CharClass next = class_at(q, &next_len);
      if (next != CharClass::kSpace) {
        cls = next;
        q += next_len;
      }
    }
    if (cls != CharClass::kSpace) {
      while (q < n) {
        if (class_at(q, &len) != cls) break;
        q += len;
      }
      piece(text.substr(p, q - p));
      p = q;
      continue;
    }
    // `\s+(?!\S)|\s+`: a run of whitespace followed by a non-space leaves its
    // last character to start the next piece (so " word" keeps its space),
    // unless that would leave the run empty.
    size_t last = p;
    while (q < n) {
      if (class_at(q, &len) != CharClass::kSpace) break;
      last = q;
      q += len;
    }
    if (q < n && last > p) q = last;
    piece(text.substr(p, q - p));
    p = q;
  }
}

absl::StatusOr<std::vector<absl::string_view>> Gpt2Pretokenize(
    absl::string_view text) {
  absl::Status valid = ValidateUtf8(text);
  if (!valid.ok()) return valid;
  std::vector<absl::string_view> pieces;
  ForEachGpt2Pretoken(text, [&](absl::string_view p) { pieces.push_back(p); });
  return pieces;
}

}  // namespace md
