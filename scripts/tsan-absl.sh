#!/usr/bin/env bash
# Builds Abseil with ThreadSanitizer for the `tsan` test label, once, into
# DEST (default build/tsan-absl). Why: absl::Mutex synchronizes through its
# own atomics and futexes, which TSan only sees in instrumented code, so with
# Debian's uninstrumented libabsl every lock looks absent and every guarded
# field a race. The tsan tests run with DEST/lib on LD_LIBRARY_PATH, so our
# code, gRPC and everything else that uses Abseil load these instead.
#
# The source is Debian's own package of the installed version (apt-get
# source, with its patches and its CMake options), so the libraries are
# ABI-identical to the system ones. Needs network access to the Debian
# archive once; later runs find DEST and return at once.
set -euo pipefail
cd "$(dirname "$0")/.."
dest="$(realpath -m "${1:-build/tsan-absl}")"
version="$(dpkg-query -W -f='${Version}' libabsl-dev)"
stamp="$dest/.built-$version"
if [ -f "$stamp" ]; then
  exit 0
fi
echo "tsan-absl: building Abseil $version with -fsanitize=thread into $dest"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"  # apt's download sandbox user must be able to write here
mkdir -p "$work/parts" "$work/lists/partial" "$work/cache/archives/partial"
cat >"$work/parts/debian-src.sources" <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
# A private apt state: the system's sources and lists are left alone.
apt_opts=(-o "Dir::Etc::SourceList=/dev/null"
  -o "Dir::Etc::SourceParts=$work/parts"
  -o "Dir::State::Lists=$work/lists"
  -o "Dir::Cache=$work/cache" -o "Debug::NoLocking=1" -q)
apt-get "${apt_opts[@]}" update >"$work/apt.log" 2>&1 ||
  { cat "$work/apt.log"; exit 1; }
(cd "$work" && apt-get "${apt_opts[@]}" source --download-only \
  "abseil=$version" >>"$work/apt.log" 2>&1) ||
  { cat "$work/apt.log"; exit 1; }
# apt-get checked the files against the archive's signed index already.
(cd "$work" && dpkg-source -x ./abseil_*.dsc src >"$work/build.log" 2>&1) ||
  { cat "$work/build.log"; exit 1; }

# debian/rules' shared configuration, plus the sanitizer.
cmake -S "$work/src" -B "$work/build" -G Ninja -Wno-dev \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_STANDARD=17 \
  -DBUILD_SHARED_LIBS=ON -DBUILD_TESTING=OFF \
  -DCMAKE_CXX_FLAGS="-fsanitize=thread" \
  -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=thread" \
  -DCMAKE_INSTALL_PREFIX="$dest" -DCMAKE_INSTALL_LIBDIR=lib \
  >>"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
rm -rf "$dest"
{ cmake --build "$work/build" -j "$(nproc)" &&
  cmake --install "$work/build"; } >>"$work/build.log" 2>&1 ||
  { tail -50 "$work/build.log"; exit 1; }
touch "$stamp"
echo "tsan-absl: done"
