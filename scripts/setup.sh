#!/usr/bin/env bash
# Installs every Debian 12 package that building, testing and running
# moondream-serve needs. Safe to run again: apt-get skips what is present.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  libtorch-dev            # LibTorch 1.13 (CPU)
  libopenblas0-pthread    # fast fp32 GEMM for LibTorch (else ~100x slower)
  libabsl-dev nlohmann-json3-dev
  libicu-dev              # Unicode classes for the tokenizer
  libvips-dev             # image decoding + vips_resize (bit-exact crops)
  libgrpc++-dev protobuf-compiler-grpc protobuf-compiler libprotobuf-dev
  prometheus-cpp-dev      # /metrics
  libcpp-httplib-dev      # the Moondream-compatible HTTP gateway
  libopencv-core-dev libopencv-imgproc-dev libopencv-imgcodecs-dev  # load-test images
  libcurl4-openssl-dev    # the load generator's HTTP/SSE client (many streams, one thread)
  python3-matplotlib      # tools/bench/plot_serve.py
  python3-grpcio python3-grpc-tools  # a client that is not ours, in tests
  python3-yaml            # PyYAML: tests/deploy reads the rendered Kubernetes manifests
  nginx                   # deploy/local, cluster test: grpc_pass built in (nginx-light/-core add modules only)
  openssl                 # test certificates for the TLS test
  libgtest-dev libgmock-dev
  clang-format
  clang-14 libclang-rt-14-dev  # libFuzzer + sanitizers (scripts/fuzz.sh)
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} packages already installed"
  exit 0
fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
