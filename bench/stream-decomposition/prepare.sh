#!/usr/bin/env bash
# Builds the kernel directories of the streaming-kernel variants and fills
# one kernel cache with their sm_90a cubins (here, no GPU needed; NVRTC as
# for `samoyeds compile`). Usage:
#   prepare.sh SAMOYEDS_BINARY OUTDIR "VARIANT ..."   (VARIANT: base or FLAG+FLAG, flags of patch.py without EXP_)
# PATCH and FILE name another experiment's patch script and the kernel file
# it patches (bench/wgmma-decomposition/prepare.sh sets them).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
kernels="$here/../../Sources/Kernels/Resources/kernels"
patch="${PATCH:-$here/patch.py}" file="${FILE:-dual_sparse_gemm.cu}"
bin="$1" out="$2"
read -r -a variants <<< "$3"
mkdir -p "$out/cache"
for v in "${variants[@]}"; do
  dir="$out/$v"
  mkdir -p "$dir"
  cp "$kernels"/* "$dir/"
  python3 "$patch" "$kernels/$file" "$dir/$file"
  if [ "$v" != base ]; then
    defines=""
    for f in ${v//+/ }; do defines+="#define EXP_$f"$'\n'; done
    printf '%s' "$defines" | cat - "$dir/$file" > "$dir/tmp.cu" && mv "$dir/tmp.cu" "$dir/$file"
  fi
  SAMOYEDS_KERNEL_DIR="$dir" "$bin" compile --arch sm_90a --cache "$out/cache" > "$dir.log" 2>&1 &
done
wait
ls -la "$out/cache"
