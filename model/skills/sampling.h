// Token sampling: temperature, then min_p, then top_p, drawn from a
// per-request random stream. The stream is seeded by the request alone and
// advanced once per sampled token, so a request's tokens never depend on the
// batch it shares a step with. SamplingParams are checked by CheckSampling
// (checks.h).
#ifndef MOONDREAM_MODEL_SKILLS_SAMPLING_H_
#define MOONDREAM_MODEL_SKILLS_SAMPLING_H_

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "model/skills/runs.h"
#include "model/skills/skill_types.h"

namespace md {

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
