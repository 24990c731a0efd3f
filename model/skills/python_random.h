// Python's `random` module generator (MT19937 seeded by init_by_array), so
// that detect_gaze's probe positions for a seed are the ones the reference
// draws after random.seed(seed).
#ifndef MOONDREAM_MODEL_SKILLS_PYTHON_RANDOM_H_
#define MOONDREAM_MODEL_SKILLS_PYTHON_RANDOM_H_

#include <array>
#include <cstdint>

namespace md {

class PythonRandom {
 public:
  // As random.seed(seed) for a non-negative integer.
  explicit PythonRandom(uint64_t seed);

  // random.random(): 53-bit float in [0, 1).
  double Random();
  // random.uniform(a, b) = a + (b − a)·random().
  double Uniform(double a, double b) { return a + (b - a) * Random(); }

 private:
  uint32_t Next32();
  void InitGenrand(uint32_t s);

  std::array<uint32_t, 624> state_{};
  int index_ = 624;
};

}  // namespace md

#endif  // MOONDREAM_MODEL_SKILLS_PYTHON_RANDOM_H_
