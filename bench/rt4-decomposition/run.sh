#!/usr/bin/env bash
# Where an rt4 stage's time goes (GPU machine, needs nvcc; not part of the
# package). Builds the rt4 kernel (store epilogue, bf16, 1:2:128) from this
# checkout's source once per variant below (other ring fills, parts of it
# switched off: patch.py), and times each on synthetic weights and tokens
# (harness.cu):
#
#   base                  the kernel as shipped
#   NOCOPY                no global -> shared copies after the prologue
#   NOMMA                 no mma.sp (the fragments are kept alive instead)
#   NOCOPY+NOFOLD         ... and no row-selection fold
#   NOCOPY+NOLOAD         no copies, no fragment loads (mma.sp on stale registers)
#   NOCOPY+NOLOAD+NOFOLD  mma.sp issue alone
#   NOEPI                 no epilogue (the tile is never stored)
#   CPASYNC               the ring filled by cp.async from every thread (the
#                         sm_80 / sm_89 path) and a CTA barrier per stage
#   BULK                  the token rows by bulk copies too (one per row)
#   MCAST                 fill 3: each CTA of a pair (adjacent token tiles)
#                         copies half of the weight into both (multicast)
#   SAMESRC               bulk copies of the split's first S stages over and
#                         over (L2-resident sources, the same bytes per stage)
#   S4                    a ring of 4 stages instead of 3
#   COPYONLY              the copies alone (NOMMA+NOLOAD+NOFOLD): what one SM
#                         takes in per stage with nothing else running
#   COPYMMA               copies and mma.sp only (NOLOAD+NOFOLD)
#   BIGA<P>               the stage's A and metadata (36 KB) as P bulk copies
#                         (1, 2, 4 or 8; from warps 0..P-1) out of a weight
#                         packed per row block and stage (timing only)
#   NOROWS                no token-row copies (fill 2)
#   HALF                  only warps 0-3 copy (half the weight's bytes; timing only)
#   LANE0                 each warp's lane 0 releases a slot after __syncwarp
#                         (the release before session ten; racecheck reports it)
#
# then the fixed cost per CTA: base, NOEPI and mma.sp alone at k = 128 ...
# 8192 (1 to 64 stages per CTA; time = CTAs per SM x (fixed + stages x per-stage)),
# then the mma.sp issue rate on register operands (mma_rate.cu, mma_barrier.cu).
#
#   [VARIANTS="base BIGA1 ..."] [QUICK=1] bench/rt4-decomposition/run.sh ["M K T" ...]     (default: 14336 4096 4096, 14336 4096 1024, 4096 14336 4096)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
kernels="$here/../../Sources/Kernels/Resources/kernels"
nvcc="${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$kernels"/*.cuh "$here/harness.cu" "$work/"
python3 "$here/patch.py" "$kernels/dual_sparse_gemm.cu" "$work/dual_sparse_gemm.cu"
# VARIANTS (space-separated) replaces the list; QUICK=1 skips the k sweep
# and the mma.sp rate.
read -r -a variants <<< "${VARIANTS:-base CPASYNC BULK SAMESRC S4 COPYONLY CPASYNC+COPYONLY BULK+COPYONLY COPYMMA NOCOPY NOMMA NOCOPY+NOFOLD NOCOPY+NOLOAD NOCOPY+NOLOAD+NOFOLD NOEPI}"
for v in "${variants[@]}"; do
  flags=()
  if [ "$v" != base ]; then
    for f in ${v//+/ }; do
      case "$f" in
        CPASYNC) flags+=("-DSAMOYEDS_RT4_FILL=0") ;;
        BULK) flags+=("-DSAMOYEDS_RT4_FILL=1") ;;
        MCAST) flags+=("-DSAMOYEDS_RT4_FILL=3") ;;
        COPYONLY) flags+=("-DEXP_NOMMA" "-DEXP_NOLOAD" "-DEXP_NOFOLD") ;;
        COPYMMA) flags+=("-DEXP_NOLOAD" "-DEXP_NOFOLD") ;;
        BIGA*) flags+=("-DEXP_BIGA=${f#BIGA}") ;;
        *) flags+=("-DEXP_$f") ;;
      esac
    done
  fi
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

[ "${QUICK:-0}" = 1 ] && exit 0
for k in 128 512 2048 4096 8192; do
  for v in base CPASYNC BULK NOEPI NOCOPY+NOLOAD+NOFOLD; do
    "$work/h_$v" 14336 "$k" 4096 "$v"
  done
done

# The mma.sp issue rate on register operands, by warps per scheduler.
"$nvcc" -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -I"$kernels" "$here/mma_rate.cu" -o "$work/mma_rate"
"$work/mma_rate"
"$nvcc" -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -I"$kernels" "$here/mma_barrier.cu" -o "$work/mma_barrier"
"$work/mma_barrier"
