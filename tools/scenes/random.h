// The scene generator's randomness, the same on every platform: the standard
// fixes std::mt19937_64's output, but not what std::uniform_int_distribution
// or std::uniform_real_distribution make of it (libstdc++ and libc++
// differ), so the distributions are written out here.
#ifndef MOONDREAM_TOOLS_SCENES_RANDOM_H_
#define MOONDREAM_TOOLS_SCENES_RANDOM_H_

#include <cstdint>
#include <random>

namespace md::scenes {

class ScenePrng {
 public:
  explicit ScenePrng(uint64_t seed) : engine_(seed) {}

  // Uniform in [lo, hi] (both inclusive; lo <= hi). Rejection sampling, so
  // no value is favoured by the modulo.
  int64_t UniformInt(int64_t lo, int64_t hi) {
    const uint64_t span = static_cast<uint64_t>(hi - lo) + 1;
    if (span == 0) return static_cast<int64_t>(engine_());  // full range
    const uint64_t limit = UINT64_MAX - UINT64_MAX % span;
    uint64_t draw;
    do {
      draw = engine_();
    } while (draw >= limit);
    return lo + static_cast<int64_t>(draw % span);
  }

  // Uniform in [0, 1), from the top 53 bits (a double's mantissa).
  double UniformReal() {
    return static_cast<double>(engine_() >> 11) * 0x1.0p-53;
  }

  bool Coin() { return (engine_() >> 63) != 0; }

 private:
  std::mt19937_64 engine_;
};

// The seed of scene `index` in a set generated from `base_seed`: SplitMix64
// of both, so sets from neighbouring base seeds share no scene (base + index
// would make (s, i + 1) and (s + 1, i) the same scene).
inline uint64_t SceneSeed(uint64_t base_seed, uint64_t index) {
  uint64_t z =
      base_seed * 0x9E3779B97F4A7C15ull + index + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace md::scenes

#endif  // MOONDREAM_TOOLS_SCENES_RANDOM_H_
