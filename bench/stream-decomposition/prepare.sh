#!/usr/bin/env bash
# Builds the kernel directories of the streaming-kernel variants and fills
# one kernel cache with their sm_90a cubins (here, no GPU needed; NVRTC as
# for `samoyeds compile`). Usage:
#   prepare.sh SAMOYEDS_BINARY OUTDIR "VARIANT ..."   (VARIANT: base or FLAG+FLAG, flags of patch.py without EXP_)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
kernels="$here/../../Sources/Kernels/Resources/kernels"
bin="$1" out="$2"
read -r -a variants <<< "$3"
mkdir -p "$out/cache"
for v in "${variants[@]}"; do
  dir="$out/$v"
  mkdir -p "$dir"
  cp "$kernels"/* "$dir/"
  python3 "$here/patch.py" "$kernels/dual_sparse_gemm.cu" "$dir/dual_sparse_gemm.cu"
  if [ "$v" != base ]; then
    defines=""
    for f in ${v//+/ }; do defines+="#define EXP_$f"$'\n'; done
    printf '%s' "$defines" | cat - "$dir/dual_sparse_gemm.cu" > "$dir/tmp.cu" && mv "$dir/tmp.cu" "$dir/dual_sparse_gemm.cu"
  fi
  SAMOYEDS_KERNEL_DIR="$dir" "$bin" compile --arch sm_90a --cache "$out/cache" > "$dir.log" 2>&1 &
done
wait
ls -la "$out/cache"
