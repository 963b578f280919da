#!/usr/bin/env bash
# Where an rt4 stage's time goes (GPU machine, needs nvcc; not part of the
# package). Builds the rt4 kernel (store epilogue, bf16, 1:2:128) from this
# checkout's source six times, each with parts of its main loop switched off
# (patch.py), and times each on synthetic weights and tokens (harness.cu):
#
#   base                  the kernel as shipped
#   NOCOPY                no global -> shared copies after the prologue
#   NOMMA                 no mma.sp (the fragments are kept alive instead)
#   NOCOPY+NOFOLD         ... and no row-selection fold
#   NOCOPY+NOLOAD         no copies, no fragment loads (mma.sp on stale registers)
#   NOCOPY+NOLOAD+NOFOLD  mma.sp issue alone
#
#   bench/rt4-decomposition/run.sh ["M K T" ...]     (default: 14336 4096 4096, 14336 4096 1024, 4096 14336 4096)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
kernels="$here/../../Sources/Kernels/Resources/kernels"
nvcc="${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$kernels"/*.cuh "$here/harness.cu" "$work/"
python3 "$here/patch.py" "$kernels/dual_sparse_gemm.cu" "$work/dual_sparse_gemm.cu"
variants=(base NOCOPY NOMMA NOCOPY+NOFOLD NOCOPY+NOLOAD NOCOPY+NOLOAD+NOFOLD)
for v in "${variants[@]}"; do
  flags=()
  if [ "$v" != base ]; then for f in ${v//+/ }; do flags+=("-DEXP_$f"); done; fi
  "$nvcc" -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -I"$work" "${flags[@]}" "$work/harness.cu" -o "$work/h_$v" &
done
wait
shapes=("$@")
[ ${#shapes[@]} -eq 0 ] && shapes=("14336 4096 4096" "14336 4096 1024" "4096 14336 4096")
for s in "${shapes[@]}"; do
  for v in "${variants[@]}"; do
    # shellcheck disable=SC2086
    "$work/h_$v" $s "$v"
  done
done
