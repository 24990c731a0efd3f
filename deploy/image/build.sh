#!/usr/bin/env bash
# Builds the server image (deploy/Dockerfile) without pulling anything from a
# container registry: the Debian 12 base is made from Debian's own packages
# with mmdebstrap, imported into podman, and the Dockerfile is built on it.
# For machines that reach Debian's archive but no registry (like our CI's).
#
#   deploy/image/build.sh [TAG]        # default moondream-serve:dev
#
# Needs: mmdebstrap, podman (apt-get install mmdebstrap podman). RUN steps use
# chroot isolation, which needs neither cgroups nor an OCI runtime, so it
# also works inside a container sandbox. Prints the image's size.
set -euo pipefail
cd "$(dirname "$0")/../.."
tag="${1:-moondream-serve:dev}"
base="localhost/debian:12-mmdebstrap"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

for tool in mmdebstrap podman; do
  command -v "$tool" >/dev/null || {
    echo "build.sh: $tool is missing (apt-get install mmdebstrap podman)" >&2
    exit 2
  }
done

if ! podman image exists "$base"; then
  echo "build.sh: making the Debian 12 base with mmdebstrap (~1 min)"
  # minbase: essential packages + apt, like debian:12-slim; no docs, man
  # pages or locales (the slim image's dpkg filters).
  mmdebstrap --variant=minbase --include=ca-certificates \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    bookworm "$work/rootfs.tar"
  podman import --change 'CMD ["bash"]' "$work/rootfs.tar" "$base"
fi

# Where the OCI runtime cannot set rlimits or use cgroups (a sandbox),
# podman still builds with chroot isolation; these defaults keep it from
# trying.
printf '[containers]\ndefault_ulimits = []\n' > "$work/containers.conf"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$work/containers.conf}"

podman build --isolation=chroot -f deploy/Dockerfile \
  --build-arg "DEBIAN_IMAGE=$base" \
  --build-arg "REVISION=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
  --build-arg "CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  -t "$tag" .
podman image inspect "$tag" --format '{{.Size}}' |
  awk -v tag="$tag" '{ printf "build.sh: %s is %.0f MiB\n", tag, $1 / 1048576 }'
