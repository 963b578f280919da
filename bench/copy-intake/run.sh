#!/usr/bin/env bash
# What the SMs take in through the copy engine (GPU machine, needs nvcc).
#   run.sh            both programs
#   run.sh intake     intake.cu, built for sm_90a twice (waits by try_wait,
#                     and by test_wait polling: -DSPIN), its sweep with each
#   run.sh stream     stream.cu: the streaming kernel's weight reads from HBM
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
nvcc="${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}"
what="${1:-all}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
build() {  # build NAME SOURCES... [-- FLAGS...]
  local name="$1"; shift
  "$nvcc" -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -I"$here/../../Sources/Kernels/Resources/kernels" \
    "$@" -o "$work/$name"
}
if [ "$what" = all ] || [ "$what" = intake ]; then
  build intake_try "$here/intake.cu" "$here/tensormap.cpp" &
  build intake_spin "$here/intake.cu" "$here/tensormap.cpp" -DSPIN &
fi
if [ "$what" = all ] || [ "$what" = stream ]; then
  build stream "$here/stream.cu" &
fi
wait
if [ "$what" = all ] || [ "$what" = intake ]; then
  "$work/intake_try"
  "$work/intake_spin"
fi
if [ "$what" = all ] || [ "$what" = stream ]; then
  "$work/stream"
fi
