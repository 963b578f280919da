#!/usr/bin/env bash
# Where the Hopper kernel's stage time goes: builds variant kernel
# directories (patch.py here, on dual_sparse_gemm_sm90.cu) and their cache,
# as bench/stream-decomposition/prepare.sh does; time them with
# bench/stream-decomposition/run.sh (`--tilings wgmma`). Usage:
#   prepare.sh SAMOYEDS_BINARY OUTDIR "VARIANT ..."   (VARIANT: base or FLAG+FLAG, flags of patch.py without EXP_)
here="$(cd "$(dirname "$0")" && pwd)"
PATCH="$here/patch.py" FILE=dual_sparse_gemm_sm90.cu exec "$here/../stream-decomposition/prepare.sh" "$@"
