// What `moondream-bench serve` sends and when: the skill mix, the images
// (synthetic ones drawn with OpenCV, or files from a directory), questions,
// tenants and their arrival times. Everything is drawn from one seed, so a
// run's workload repeats exactly.
#ifndef MOONDREAM_TOOLS_BENCH_SERVE_WORKLOAD_H_
#define MOONDREAM_TOOLS_BENCH_SERVE_WORKLOAD_H_

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace md::bench::serve {

// "name:weight,name:weight" (weights need not sum to 1).
struct Weighted {
  std::string name;
  double weight = 0;
};
absl::StatusOr<std::vector<Weighted>> ParseWeighted(absl::string_view spec);

struct ImageBucket {
  int width = 0;
  int height = 0;
  double weight = 1;
};
// "378x378:0.5,1000x700:0.5".
absl::StatusOr<std::vector<ImageBucket>> ParseImageBuckets(
    absl::string_view spec);

// --tenant=KEY:weight=0.7 or KEY:rate=5 (requests per second of its own).
struct TenantSpec {
  std::string key;
  std::optional<double> weight;
  std::optional<double> rate;
};
absl::StatusOr<TenantSpec> ParseTenant(absl::string_view spec);

// An image as sent: encoded bytes, and its size.
struct WorkloadImage {
  std::string bytes;
  int width = 0;
  int height = 0;
};

// A JPEG of shapes on a background, different for every seed.
absl::StatusOr<WorkloadImage> SyntheticImage(int width, int height,
                                             uint64_t seed);

// Every .jpg/.jpeg/.png/.webp file of `dir`, sorted by name.
absl::StatusOr<std::vector<WorkloadImage>> ImagesFromDirectory(
    const std::string& dir);

struct WorkloadOptions {
  std::vector<Weighted> tasks;         // skill name -> weight
  std::vector<ImageBucket> buckets;    // synthetic images
  std::string image_dir;               // or these files
  int distinct_images = 16;            // synthetic images drawn
  std::vector<std::string> questions;  // empty: built-in ones
  std::vector<TenantSpec> tenants;     // empty: one anonymous tenant
  double request_rate = 0;             // per second; inf: all at once
  double burstiness = 1;               // gamma shape; 1 = Poisson
  double ramp_up_s = 0;                // rate grows linearly over this
  int num_prompts = 100;               // 0: until duration_s
  double duration_s = 0;
  uint64_t seed = 0;
  // This fraction of the caption and query streams is abandoned by the
  // client after a uniform 0..cancel_max_chunks-1 chunks.
  double cancel_fraction = 0;
  int cancel_max_chunks = 64;
};

// One request to send.
struct PlannedRequest {
  double at_s = 0;  // after the run's start
  int tenant = 0;   // index into the tenants (0 when there are none)
  std::string skill;
  int image = 0;     // index into the workload's images
  std::string text;  // question, or object for detect/point
  // >= 0: the client abandons this stream after that many chunks (0: right
  // after sending); -1: never.
  int cancel_after_chunks = -1;
};

struct Workload {
  std::vector<WorkloadImage> images;
  std::vector<PlannedRequest> requests;  // by at_s
  std::vector<std::string> tenant_keys;  // "" for the anonymous tenant
};

absl::StatusOr<Workload> BuildWorkload(const WorkloadOptions& options);

// Gaps between arrivals at `rate` per second: gamma with shape `burstiness`
// and mean 1/rate (vLLM's arrival process; burstiness 1 is Poisson). A rate
// of infinity gives zero gaps.
class ArrivalClock {
 public:
  ArrivalClock(double rate, double burstiness, double ramp_up_s, uint64_t seed);
  // The next arrival time.
  double Next();

 private:
  double rate_;
  double burstiness_;
  double ramp_up_s_;
  std::mt19937_64 rng_;
  double now_ = 0;
};

}  // namespace md::bench::serve

#endif  // MOONDREAM_TOOLS_BENCH_SERVE_WORKLOAD_H_
