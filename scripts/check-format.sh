#!/usr/bin/env bash
# Fails when any tracked C++ file differs from clang-format (Google style).
set -euo pipefail
cd "$(dirname "$0")/.."
bad=0
while IFS= read -r f; do
  if ! clang-format --dry-run -Werror "$f" >/dev/null 2>&1; then
    echo "needs clang-format: $f"
    bad=1
  fi
done < <(git ls-files '*.cc' '*.h' 2>/dev/null || find model scheduler service tools tests -name '*.cc' -o -name '*.h')
exit $bad
