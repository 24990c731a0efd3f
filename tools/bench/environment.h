// What the benchmarks report about the machine they ran on.
#ifndef MOONDREAM_TOOLS_BENCH_ENVIRONMENT_H_
#define MOONDREAM_TOOLS_BENCH_ENVIRONMENT_H_

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace md::bench {

double Mb(int64_t bytes);

// The 1-minute load average (other processes compete for the cores: timings
// of multi-threaded runs suffer most), or -1 when unknown.
double LoadAverage();

// Environment variables that change how the compute threads behave (OpenMP
// for LibTorch's pool and oneDNN, OpenBLAS for fp32 matmuls), as one line
// and as a JSON object (null when unset).
std::string ThreadingEnvText();
nlohmann::json ThreadingEnvJson();

}  // namespace md::bench

#endif  // MOONDREAM_TOOLS_BENCH_ENVIRONMENT_H_
