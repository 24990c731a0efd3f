// A small per-subcommand flag parser: each subcommand declares its own flags
// (so one subcommand never accepts another's), values arrive as
// --name=value or --name value, and --help prints the usage.
#ifndef MOONDREAM_TOOLS_BENCH_FLAGS_H_
#define MOONDREAM_TOOLS_BENCH_FLAGS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace md::bench {

class FlagParser {
 public:
  // `command` and `summary` head the usage text.
  FlagParser(std::string command, std::string summary);

  // Each flag writes into `value`, whose current content is the default.
  void AddString(std::string name, std::string* value, std::string help);
  void AddInt(std::string name, int* value, std::string help);
  // Also "inf" (vLLM's --request_rate inf).
  void AddDouble(std::string name, double* value, std::string help);
  // May be given several times; each value is appended.
  void AddRepeated(std::string name, std::vector<std::string>* values,
                   std::string help);
  // --name alone means true; --name=true|false|1|0 also work.
  void AddBool(std::string name, bool* value, std::string help);

  // Fills the declared values; unknown flags, positional arguments and
  // malformed numbers are InvalidArgument errors.
  absl::Status Parse(const std::vector<std::string>& args);

  bool help_requested() const { return help_requested_; }
  std::string Usage() const;

 private:
  struct Flag {
    std::string name;
    std::string help;
    std::string default_text;
    std::string* string_value = nullptr;
    int* int_value = nullptr;
    double* double_value = nullptr;
    std::vector<std::string>* repeated_value = nullptr;
    bool* bool_value = nullptr;
  };

  absl::Status Set(const Flag& flag, const std::string& text);
  const Flag* Find(const std::string& name) const;

  std::string command_;
  std::string summary_;
  std::vector<Flag> flags_;
  bool help_requested_ = false;
};

}  // namespace md::bench

#endif  // MOONDREAM_TOOLS_BENCH_FLAGS_H_
