#include "base/command_line.h"

#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"

namespace md {

void ListFlagsInHelp(std::string_view flags_file) {
  // Abseil hands the filter the flag's file as normalize_filename made it
  // (by default without leading slashes), so match a whole trailing part of
  // the path rather than the whole path.
  auto defined_there =
      [file = std::string(flags_file)](absl::string_view normalized) {
        if (normalized.empty() || !absl::EndsWith(file, normalized))
          return false;
        return file.size() == normalized.size() ||
               file[file.size() - normalized.size() - 1] == '/';
      };
  absl::FlagsUsageConfig config;
  config.contains_helpshort_flags = defined_there;
  config.contains_help_flags = defined_there;
  config.contains_helppackage_flags = defined_there;
  absl::SetFlagsUsageConfig(config);
}

}  // namespace md
