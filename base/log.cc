#include "base/log.h"

#include <atomic>
#include <cstdio>

#include "absl/strings/ascii.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace md {
namespace {

// Libraries and tests log warnings and errors; the server sets its level
// from --log_level (default info).
std::atomic<int> g_level{static_cast<int>(LogLevel::kWarning)};

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kError:
      return "error";
    case LogLevel::kWarning:
      return "warning";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kDebug:
      return "debug";
  }
  return "info";
}

// logfmt: bare when the value has no space, quote or '='; else quoted with
// quotes, backslashes and control characters escaped.
void AppendValue(std::string& out, absl::string_view value) {
  bool bare = !value.empty();
  for (char c : value) {
    if (c == ' ' || c == '"' || c == '=' || c == '\\' ||
        static_cast<unsigned char>(c) < 0x20) {
      bare = false;
      break;
    }
  }
  if (bare) {
    out.append(value.data(), value.size());
    return;
  }
  out.push_back('"');
  for (char c : value) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += ' ';
        } else {
          out.push_back(c);
        }
    }
  }
  out.push_back('"');
}

}  // namespace

void SetLogLevel(LogLevel level) {
  g_level.store(static_cast<int>(level), std::memory_order_relaxed);
}

LogLevel GetLogLevel() {
  return static_cast<LogLevel>(g_level.load(std::memory_order_relaxed));
}

bool LogEnabled(LogLevel level) {
  return static_cast<int>(level) <= g_level.load(std::memory_order_relaxed);
}

absl::StatusOr<LogLevel> ParseLogLevel(absl::string_view name) {
  const std::string lower = absl::AsciiStrToLower(name);
  for (LogLevel level : {LogLevel::kError, LogLevel::kWarning, LogLevel::kInfo,
                         LogLevel::kDebug}) {
    if (lower == LevelName(level)) return level;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "log level must be error, warning, info or debug, got '", name, "'"));
}

std::string FormatLogLine(LogLevel level, absl::string_view event,
                          std::initializer_list<LogField> fields) {
  std::string line = absl::StrCat("level=", LevelName(level), " event=");
  AppendValue(line, event);
  for (const LogField& field : fields) {
    line.push_back(' ');
    line.append(field.key.data(), field.key.size());
    line.push_back('=');
    AppendValue(line, field.value);
  }
  return line;
}

void LogEvent(LogLevel level, absl::string_view event,
              std::initializer_list<LogField> fields) {
  if (!LogEnabled(level)) return;
  std::string line =
      absl::StrCat("ts=",
                   absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(),
                                    absl::UTCTimeZone()),
                   " ", FormatLogLine(level, event, fields), "\n");
  // One write per line, so concurrent lines never interleave.
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace md
