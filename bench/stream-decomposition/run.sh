#!/usr/bin/env bash
# Where the streaming kernel's time goes (GPU machine; not part of the
# package). Times `samoyeds bench kernel` once per variant directory that
# prepare.sh built (the kernel as shipped, and with parts switched off:
# patch.py), ROUNDS times interleaved, on the decode shapes.
#   run.sh SAMOYEDS_BINARY DIR [bench kernel options...]   (DIR: prepare.sh's OUTDIR)
set -uo pipefail
bin="$1" dir="$2"; shift 2
export SAMOYEDS_CACHE_DIR="$dir/cache"
for round in $(seq "${ROUNDS:-2}"); do
  for v in $(cd "$dir" && ls -d */ | tr -d / | grep -v '^cache$'); do
    echo "== $v (round $round)"
    SAMOYEDS_KERNEL_DIR="$dir/$v" "$bin" bench kernel --no-variants "$@" 2>&1 | grep -E '^ +[0-9]' | cut -c1-60
  done
done
