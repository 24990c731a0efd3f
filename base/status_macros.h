// The two status macros Abseil 20220623 lacks (docs/DESIGN.md §4).
#ifndef MOONDREAM_BASE_STATUS_MACROS_H_
#define MOONDREAM_BASE_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define MD_STATUS_CONCAT_INNER_(a, b) a##b
#define MD_STATUS_CONCAT_(a, b) MD_STATUS_CONCAT_INNER_(a, b)

// Returns from the enclosing function when `expr` yields a non-OK status.
#define RETURN_IF_ERROR(expr)                \
  do {                                       \
    ::absl::Status md_status_ = (expr);      \
    if (!md_status_.ok()) return md_status_; \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, MakeX());` binds the value or returns the error.
#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL_(MD_STATUS_CONCAT_(md_statusor_, __LINE__), lhs, expr)

#define ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                           \
  if (!statusor.ok()) return statusor.status();     \
  lhs = std::move(statusor).value()

#endif  // MOONDREAM_BASE_STATUS_MACROS_H_
