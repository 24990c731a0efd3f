#include "tools/bench/flags.h"

#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace md::bench {

FlagParser::FlagParser(std::string command, std::string summary)
    : command_(std::move(command)), summary_(std::move(summary)) {}

void FlagParser::AddString(std::string name, std::string* value,
                           std::string help) {
  flags_.push_back({.name = std::move(name),
                    .help = std::move(help),
                    .default_text = *value,
                    .string_value = value});
}

void FlagParser::AddInt(std::string name, int* value, std::string help) {
  flags_.push_back({.name = std::move(name),
                    .help = std::move(help),
                    .default_text = absl::StrCat(*value),
                    .int_value = value});
}

void FlagParser::AddDouble(std::string name, double* value, std::string help) {
  flags_.push_back({.name = std::move(name),
                    .help = std::move(help),
                    .default_text = absl::StrCat(*value),
                    .double_value = value});
}

void FlagParser::AddRepeated(std::string name, std::vector<std::string>* values,
                             std::string help) {
  flags_.push_back({.name = std::move(name),
                    .help = std::move(help),
                    .default_text = "",
                    .repeated_value = values});
}

void FlagParser::AddBool(std::string name, bool* value, std::string help) {
  flags_.push_back({.name = std::move(name),
                    .help = std::move(help),
                    .default_text = *value ? "true" : "false",
                    .bool_value = value});
}

const FlagParser::Flag* FlagParser::Find(const std::string& name) const {
  for (const Flag& flag : flags_) {
    if (flag.name == name) return &flag;
  }
  return nullptr;
}

absl::Status FlagParser::Set(const Flag& flag, const std::string& text) {
  if (flag.string_value != nullptr) {
    *flag.string_value = text;
    return absl::OkStatus();
  }
  if (flag.repeated_value != nullptr) {
    flag.repeated_value->push_back(text);
    return absl::OkStatus();
  }
  if (flag.double_value != nullptr) {
    if (!absl::SimpleAtod(text, flag.double_value)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", flag.name, " wants a number, got '", text, "'"));
    }
    return absl::OkStatus();
  }
  if (flag.bool_value != nullptr) {
    if (!absl::SimpleAtob(text, flag.bool_value)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--", flag.name, " wants true or false, got '", text, "'"));
    }
    return absl::OkStatus();
  }
  if (!absl::SimpleAtoi(text, flag.int_value)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag.name, " wants an integer, got '", text, "'"));
  }
  return absl::OkStatus();
}

absl::Status FlagParser::Parse(const std::vector<std::string>& args) {
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--help" || arg == "-h" || arg == "help") {
      help_requested_ = true;
      continue;
    }
    if (arg.rfind("--", 0) != 0 || arg.size() == 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("unexpected argument '", arg, "'"));
    }
    const size_t eq = arg.find('=');
    const std::string name =
        arg.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
    const Flag* flag = Find(name);
    if (flag == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag --", name, " (see --help)"));
    }
    if (eq != std::string::npos) {
      if (absl::Status s = Set(*flag, arg.substr(eq + 1)); !s.ok()) return s;
    } else if (flag->bool_value != nullptr) {
      *flag->bool_value = true;
    } else if (i + 1 < args.size()) {
      if (absl::Status s = Set(*flag, args[++i]); !s.ok()) return s;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("--", name, " needs a value"));
    }
  }
  return absl::OkStatus();
}

std::string FlagParser::Usage() const {
  std::string out = absl::StrCat("usage: moondream-bench ", command_,
                                 " [flags]\n", summary_, "\n\nflags:\n");
  for (const Flag& flag : flags_) {
    absl::StrAppendFormat(
        &out, "  --%-16s %s (default: %s)\n", flag.name, flag.help,
        flag.default_text.empty() ? "none" : flag.default_text);
  }
  return out;
}

}  // namespace md::bench
