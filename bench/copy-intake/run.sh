#!/usr/bin/env bash
# What the SMs take in through the copy engine (GPU machine, needs nvcc):
# builds intake.cu for sm_90a twice (waits by try_wait, and by test_wait
# polling: -DSPIN) and runs its sweep with each (see intake.cu).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
nvcc="${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for variant in try spin; do
  flags=()
  [ "$variant" = spin ] && flags+=(-DSPIN)
  "$nvcc" -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -I"$here/../../Sources/Kernels/Resources/kernels" \
    "${flags[@]}" "$here/intake.cu" "$here/tensormap.cpp" -o "$work/intake_$variant" &
done
wait
"$work/intake_try"
"$work/intake_spin"
