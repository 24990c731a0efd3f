#include "tools/bench/json_report.h"

#include <cstdio>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "base/paths.h"

namespace md::bench {

std::string JsonReportPath(const std::string& flag_value) {
  return flag_value == "-" ? "-" : ExpandUser(flag_value);
}

absl::Status WriteJsonReport(const nlohmann::ordered_json& report,
                             const std::string& path) {
  if (path == "-") {
    std::printf("%s\n", report.dump(1).c_str());
    return absl::OkStatus();
  }
  std::ofstream out(path);
  out << report.dump(1) << "\n";
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("could not write ", path));
  return absl::OkStatus();
}

}  // namespace md::bench
