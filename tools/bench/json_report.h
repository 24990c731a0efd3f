// Where a subcommand's --json report goes: a file, or stdout for "-".
#ifndef MOONDREAM_TOOLS_BENCH_JSON_REPORT_H_
#define MOONDREAM_TOOLS_BENCH_JSON_REPORT_H_

#include <nlohmann/json.hpp>
#include <string>

#include "absl/status/status.h"

namespace md::bench {

// The --json flag's value as given: "-" stays stdout, "~" is expanded.
std::string JsonReportPath(const std::string& flag_value);

// Writes `report` (indented) to `path`, or prints it when `path` is "-".
absl::Status WriteJsonReport(const nlohmann::ordered_json& report,
                             const std::string& path);

}  // namespace md::bench

#endif  // MOONDREAM_TOOLS_BENCH_JSON_REPORT_H_
