// Structured logs: one logfmt line per event on stderr,
//   ts=2026-11-29T22:10:00.123Z level=info event=request_done id=7 ...
// so an operator can grep them and a log pipeline can parse them. The level
// is process-wide, set once from a flag.
#ifndef MOONDREAM_BASE_LOG_H_
#define MOONDREAM_BASE_LOG_H_

#include <initializer_list>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace md {

enum class LogLevel { kError = 0, kWarning = 1, kInfo = 2, kDebug = 3 };

void SetLogLevel(LogLevel level);
LogLevel GetLogLevel();
bool LogEnabled(LogLevel level);
// "error", "warning", "info", "debug".
absl::StatusOr<LogLevel> ParseLogLevel(absl::string_view name);

// A field's value; numbers are formatted with StrCat.
struct LogField {
  template <typename T>
  LogField(absl::string_view k, const T& v) : key(k), value(absl::StrCat(v)) {}
  LogField(absl::string_view k, absl::string_view v) : key(k), value(v) {}
  LogField(absl::string_view k, const char* v) : key(k), value(v) {}
  LogField(absl::string_view k, const std::string& v) : key(k), value(v) {}
  LogField(absl::string_view k, bool v) : key(k), value(v ? "true" : "false") {}

  absl::string_view key;
  std::string value;
};

// The line LogEvent writes (without the timestamp), for tests.
std::string FormatLogLine(LogLevel level, absl::string_view event,
                          std::initializer_list<LogField> fields);

// Writes one line when `level` is enabled. Thread-safe; never throws.
void LogEvent(LogLevel level, absl::string_view event,
              std::initializer_list<LogField> fields);

}  // namespace md

#endif  // MOONDREAM_BASE_LOG_H_
