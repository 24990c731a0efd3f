// API keys: a file maps each key to the tenant whose requests it sends.
//
//   # comments and blank lines are ignored
//   KEY TENANT
//
// Without a key file the server is open: every request is tenant
// "anonymous". With one, a request without a known key is UNAUTHENTICATED.
#ifndef MOONDREAM_SERVICE_AUTH_H_
#define MOONDREAM_SERVICE_AUTH_H_

#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace md::service {

inline constexpr char kAnonymousTenant[] = "anonymous";

class ApiKeys {
 public:
  // Open access.
  ApiKeys() = default;
  // InvalidArgument (with the line number) for a malformed line or a key
  // listed twice; NotFound for a missing file.
  static absl::StatusOr<ApiKeys> FromFile(const std::string& path);
  static absl::StatusOr<ApiKeys> FromText(absl::string_view text);

  bool open() const { return tenant_by_key_.empty(); }
  // The tenant of `key` ("Bearer KEY" accepted too).
  absl::StatusOr<std::string> Authenticate(absl::string_view key) const;
  // Every tenant Authenticate can answer, sorted, each once: the file's, or
  // "anonymous" when open. Bounds what per-tenant metrics may name.
  std::vector<std::string> Tenants() const;

 private:
  absl::flat_hash_map<std::string, std::string> tenant_by_key_;
};

}  // namespace md::service

#endif  // MOONDREAM_SERVICE_AUTH_H_
