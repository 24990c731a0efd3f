// Where a piece of model code spends its time, by ATen op: while an
// OpProfile is alive, every top-level ATen op the calling thread runs (an op
// called from our code, not one nested inside another op) is counted and
// timed inclusively through LibTorch's RecordFunction observers. The model's
// own named parts (RECORD_USER_SCOPE "md::…": the packed linear, decode
// attention, rotary, the K/V write, …) count the same way, as one entry each
// with the ATen ops inside them.
#ifndef MOONDREAM_TOOLS_BENCH_OP_PROFILE_H_
#define MOONDREAM_TOOLS_BENCH_OP_PROFILE_H_

#include <cstdint>
#include <string>
#include <vector>

namespace md::bench {

struct OpTime {
  std::string name;  // e.g. "aten::linear"
  int64_t calls = 0;
  double ms = 0;
};

class OpProfile {
 public:
  OpProfile();  // starts observing this thread
  ~OpProfile();
  OpProfile(const OpProfile&) = delete;
  OpProfile& operator=(const OpProfile&) = delete;

  // Stops observing; the ops seen so far, most time first.
  std::vector<OpTime> Finish();

 private:
  uint64_t handle_ = 0;
  bool active_ = false;
};

}  // namespace md::bench

#endif  // MOONDREAM_TOOLS_BENCH_OP_PROFILE_H_
