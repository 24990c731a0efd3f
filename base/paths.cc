#include "base/paths.h"

#include <pwd.h>
#include <unistd.h>

#include <cstdlib>
#include <system_error>
#include <vector>

namespace md {
namespace {

namespace fs = std::filesystem;

// Services and containers often run without HOME; the password database
// still knows the user's home then.
std::string HomeDir() {
  if (const char* home = std::getenv("HOME"); home != nullptr && *home) {
    return home;
  }
  std::vector<char> buffer(16384);
  passwd entry;
  passwd* found = nullptr;
  if (getpwuid_r(getuid(), &entry, buffer.data(), buffer.size(), &found) == 0 &&
      found != nullptr && found->pw_dir != nullptr) {
    return found->pw_dir;
  }
  return "";
}

}  // namespace

std::string ExpandUser(std::string_view path) {
  if (path.empty() || path[0] != '~') return std::string(path);
  if (path.size() > 1 && path[1] != '/') return std::string(path);
  std::string home = HomeDir();
  if (home.empty()) return std::string(path);
  while (home.size() > 1 && home.back() == '/') home.pop_back();
  std::string_view rest = path.substr(1);  // "" or "/..."
  if (home == "/" && !rest.empty()) return std::string(rest);
  return home + std::string(rest);
}

fs::path ExecutableDir() {
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (ec) return {};
  return exe.parent_path();
}

std::string FindInProjectTree(std::string_view relative,
                              const fs::path& exe_dir) {
  if (exe_dir.empty() || relative.empty()) return "";
  std::error_code ec;
  const fs::path start = fs::absolute(exe_dir, ec);
  if (ec) return "";
  std::vector<fs::path> candidates;
  fs::path dir = start;
  for (int up = 0; up <= 3; ++up) {
    candidates.push_back(dir / relative);
    dir = dir.parent_path();
  }
  candidates.push_back(start / ".." / "share" / "moondream-serve" / relative);
  for (const fs::path& candidate : candidates) {
    if (fs::exists(candidate, ec)) return candidate.lexically_normal().string();
  }
  return "";
}

std::string ResolveDefaultModelDir(std::string_view relative) {
  std::string found = FindInProjectTree(relative, ExecutableDir());
  return found.empty() ? std::string(relative) : found;
}

std::string ResolveModelFlag(std::string_view value,
                             std::string_view default_dir) {
  if (value == default_dir) return ResolveDefaultModelDir(value);
  return ExpandUser(value);
}

}  // namespace md
