#include "model/skills/python_random.h"

#include <algorithm>
#include <vector>

namespace md {
namespace {
constexpr int kN = 624;
constexpr int kM = 397;
}  // namespace

void PythonRandom::InitGenrand(uint32_t s) {
  state_[0] = s;
  for (int i = 1; i < kN; ++i) {
    state_[i] = 1812433253u * (state_[i - 1] ^ (state_[i - 1] >> 30)) + i;
  }
  index_ = kN;
}

PythonRandom::PythonRandom(uint64_t seed) {
  // Python splits the seed's absolute value into 32-bit words, low first.
  std::vector<uint32_t> key;
  for (uint64_t s = seed; s != 0; s >>= 32)
    key.push_back(static_cast<uint32_t>(s));
  if (key.empty()) key.push_back(0);

  InitGenrand(19650218u);
  int i = 1, j = 0;
  const int n_key = static_cast<int>(key.size());
  for (int k = std::max(kN, n_key); k > 0; --k) {
    state_[i] =
        (state_[i] ^ ((state_[i - 1] ^ (state_[i - 1] >> 30)) * 1664525u)) +
        key[j] + j;
    ++i;
    ++j;
    if (i >= kN) {
      state_[0] = state_[kN - 1];
      i = 1;
    }
    if (j >= n_key) j = 0;
  }
  for (int k = kN - 1; k > 0; --k) {
    state_[i] =
        (state_[i] ^ ((state_[i - 1] ^ (state_[i - 1] >> 30)) * 1566083941u)) -
        i;
    ++i;
    if (i >= kN) {
      state_[0] = state_[kN - 1];
      i = 1;
    }
  }
  state_[0] = 0x80000000u;
  index_ = kN;
}

uint32_t PythonRandom::Next32() {
  if (index_ >= kN) {
    for (int k = 0; k < kN; ++k) {
      const uint32_t y =
          (state_[k] & 0x80000000u) | (state_[(k + 1) % kN] & 0x7fffffffu);
      state_[k] =
          state_[(k + kM) % kN] ^ (y >> 1) ^ ((y & 1u) ? 0x9908b0dfu : 0u);
    }
    index_ = 0;
  }
  uint32_t y = state_[index_++];
  y ^= y >> 11;
  y ^= (y << 7) & 0x9d2c5680u;
  y ^= (y << 15) & 0xefc60000u;
  y ^= y >> 18;
  return y;
}

double PythonRandom::Random() {
  const uint32_t a = Next32() >> 5, b = Next32() >> 6;
  return (a * 67108864.0 + b) * (1.0 / 9007199254740992.0);
}

}  // namespace md
