// Process-wide threading set-up for LibTorch on CPU.
#ifndef MOONDREAM_BASE_THREADING_H_
#define MOONDREAM_BASE_THREADING_H_

namespace md {

// fp32 GEMMs run on OpenBLAS's own thread pool, everything else on
// LibTorch's OpenMP pool. With OpenMP's default (active) wait policy, idle
// OpenMP threads spin on the cores OpenBLAS needs and the reverse: measured
// here, fp32 decode ran 2-3x slower and bf16 decode 13x slower under load.
// libgomp reads OMP_WAIT_POLICY once when it is loaded, before main, so when
// the variable is unset this sets it to PASSIVE and re-executes the program
// (same arguments); it returns normally when the policy is already set or
// the re-exec fails. Call it first thing in main.
void EnsurePassiveOpenMpWait(char** argv);

}  // namespace md

#endif  // MOONDREAM_BASE_THREADING_H_
