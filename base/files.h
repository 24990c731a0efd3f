// Whole files into memory, with errors that name the file and what it is.
#ifndef MOONDREAM_BASE_FILES_H_
#define MOONDREAM_BASE_FILES_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace md {

// NOT_FOUND when the file cannot be opened, INTERNAL when reading fails;
// the message says `what` the file is ("tokenizer file", "TLS key").
absl::StatusOr<std::string> ReadFileToString(const std::string& path,
                                             absl::string_view what = "file");

}  // namespace md

#endif  // MOONDREAM_BASE_FILES_H_
