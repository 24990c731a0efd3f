#include "service/auth.h"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace md::service {

absl::StatusOr<ApiKeys> ApiKeys::FromFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::stringstream text;
  text << in.rdbuf();
  return FromText(text.str());
}

absl::StatusOr<ApiKeys> ApiKeys::FromText(absl::string_view text) {
  ApiKeys keys;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    std::vector<absl::string_view> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (fields.size() != 2) {
      return absl::InvalidArgumentError(absl::StrCat(
          "api keys line ", line_number, ": expected 'KEY TENANT', got ",
          fields.size(), " fields"));
    }
    auto [it, inserted] =
        keys.tenant_by_key_.emplace(std::string(fields[0]), fields[1]);
    if (!inserted) {
      return absl::InvalidArgumentError(absl::StrCat(
          "api keys line ", line_number, ": the key is listed twice"));
    }
  }
  return keys;
}

absl::StatusOr<std::string> ApiKeys::Authenticate(absl::string_view key) const {
  if (open()) return std::string(kAnonymousTenant);
  key = absl::StripAsciiWhitespace(key);
  if (absl::StartsWithIgnoreCase(key, "bearer ")) {
    key = absl::StripAsciiWhitespace(key.substr(7));
  }
  if (key.empty()) {
    return absl::UnauthenticatedError(
        "missing API key: send it as 'x-moondream-auth' (gRPC metadata) or "
        "'X-Moondream-Auth' (HTTP header)");
  }
  auto it = tenant_by_key_.find(key);
  if (it == tenant_by_key_.end()) {
    return absl::UnauthenticatedError("unknown API key");
  }
  return it->second;
}

std::vector<std::string> ApiKeys::Tenants() const {
  if (open()) return {kAnonymousTenant};
  std::vector<std::string> tenants;
  for (const auto& [key, tenant] : tenant_by_key_) tenants.push_back(tenant);
  std::sort(tenants.begin(), tenants.end());
  tenants.erase(std::unique(tenants.begin(), tenants.end()), tenants.end());
  return tenants;
}

}  // namespace md::service
