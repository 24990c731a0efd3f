#!/bin/sh
# Runs one libFuzzer binary for CTest.
#   run_fuzzer.sh FUZZER ARTIFACT_DIR SCRATCH_DIR|- [libFuzzer flags] [CORPUS_DIR...]
# Creates the build-tree directories the run writes to -- crash artifacts and,
# unless SCRATCH_DIR is "-", the scratch corpus that new inputs go to (the
# first corpus directory libFuzzer is given is the one it writes) -- and
# hands over. The exit status is libFuzzer's: non-zero on any finding.
set -eu
fuzzer=$1
artifacts=$2
scratch=$3
shift 3
mkdir -p "$artifacts"
if [ "$scratch" = "-" ]; then
  exec "$fuzzer" -artifact_prefix="$artifacts/" "$@"
fi
mkdir -p "$scratch"
exec "$fuzzer" -artifact_prefix="$artifacts/" "$scratch" "$@"
