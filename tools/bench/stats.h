// Timing helpers shared by the benchmarks.
#ifndef MOONDREAM_TOOLS_BENCH_STATS_H_
#define MOONDREAM_TOOLS_BENCH_STATS_H_

#include <algorithm>
#include <chrono>
#include <vector>

namespace md::bench {

// Milliseconds since construction, on the steady clock.
class Stopwatch {
 public:
  Stopwatch() : start_(std::chrono::steady_clock::now()) {}
  double ElapsedMs() const {
    return std::chrono::duration<double, std::milli>(
               std::chrono::steady_clock::now() - start_)
        .count();
  }

 private:
  std::chrono::steady_clock::time_point start_;
};

// The median (mean of the middle two for an even count); 0 when empty.
inline double Median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const size_t mid = values.size() / 2;
  return values.size() % 2 == 1 ? values[mid]
                                : 0.5 * (values[mid - 1] + values[mid]);
}

// Percentile by nearest rank (p in [0, 100]); 0 when empty.
inline double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const size_t rank = static_cast<size_t>(
      std::clamp(p / 100.0 * values.size(), 1.0, double(values.size())));
  return values[rank - 1];
}

// Samples of one measured quantity, one per repetition (warm-up excluded).
struct Timing {
  std::vector<double> samples_ms;

  double median_ms() const { return Median(samples_ms); }
};

}  // namespace md::bench

#endif  // MOONDREAM_TOOLS_BENCH_STATS_H_
