// Token sampling: temperature, then min_p, then top_p, drawn from a
// per-request random stream. The stream is seeded by the request alone and
// advanced once per sampled token, so a request's tokens never depend on the
// batch it shares a step with.
#ifndef MOONDREAM_MODEL_SKILLS_SAMPLING_H_
#define MOONDREAM_MODEL_SKILLS_SAMPLING_H_

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "absl/status/status.h"
#include "model/skills/runs.h"

namespace md {

struct SamplingParams {
  // 0 is greedy (the first maximum); the other fields are then ignored.
  float temperature = 0.0f;
  // Keep the smallest set of most likely tokens whose probability sums to at
  // least top_p (1 keeps all).
  float top_p = 1.0f;
  // Drop tokens less likely than min_p × the most likely one (0 keeps all).
  float min_p = 0.0f;
  uint64_t seed = 0;
};

// InvalidArgument naming the field when a value is out of range (negative or
// non-finite temperature, top_p outside (0, 1], min_p outside [0, 1]).
absl::Status ValidateSampling(const SamplingParams& params);

// A TokenChooser for a run: greedy when temperature is 0, else a sampler
// owning its own random stream.
TokenChooser MakeTokenChooser(const SamplingParams& params);

// xoshiro256** seeded through splitmix64: small, fast and the same on every
// platform (std::uniform_real_distribution is not).
class SamplingRandom {
 public:
  explicit SamplingRandom(uint64_t seed);
  uint64_t NextU64();
  // Uniform in [0, 1) with 53 random bits.
  double NextDouble();

 private:
  uint64_t s_[4];
};

// One draw from logits [V] under `params` (temperature > 0), using `u` in
// [0, 1) as the random number. Exposed for tests.
int SampleToken(const at::Tensor& logits_V, const SamplingParams& params,
                double u);

}  // namespace md

#endif  // MOONDREAM_MODEL_SKILLS_SAMPLING_H_
