#!/bin/bash
# Device call for bench/decode-s15 (run from the repository root on the GPU machine, carry ["devrun"]):
#   devrun/base.tgz: dist/ of main without the patch; devrun/new.tgz: dist/ with it
#   (each `PRECOMPILE=sm_90a scripts/gpu-check.sh build`, then `tar czf devrun/X.tgz dist`).
# Writes $OUT/summary.txt progressively and the logs under $OUT/logs. About 6-8 minutes.
set -x
mkdir -p base new && tar xzf devrun/base.tgz -C base && tar xzf devrun/new.tgz -C new
L=$OUT/logs; mkdir -p $L; S=$OUT/summary.txt
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,clocks.mem --format=csv > $L/smi.txt; cat $L/smi.txt >> $S
run() { # tag dir args...
  local tag=$1 dir=$2; shift 2
  ( cd $dir && SAMOYEDS_CACHE_DIR=$PWD/dist/kernel-cache timeout 120 dist/samoyeds "$@" ) > $L/$tag.txt 2>&1
  echo "== $tag rc=$?" >> $S
}
P="mixtral-8x7b,qwen3-30b-a3b,deepseek-moe-16b,qwen1.5-moe-a2.7b"
B="bench moe --presets $P --tokens 1,16 --samples 10 --graph-tokens 16"
G="^mixtral\|^qwen\|^deepseek"
date >> $S
run moe-base1 base $B; grep -A1 "$G" $L/moe-base1.txt >> $S
run moe-new1 new $B; grep -A1 "$G" $L/moe-new1.txt >> $S
date >> $S
# The whole suite without the transformers comparison (~770 cases); its FAIL lines and summary.
( cd new && SAMOYEDS_CACHE_DIR=$PWD/dist/kernel-cache timeout 240 dist/samoyeds verify --no-transformers ) > $L/verify.txt 2>&1
echo "== verify rc=$?" >> $S; grep -E "^FAIL" $L/verify.txt | head -10 >> $S; tail -1 $L/verify.txt >> $S
date >> $S
# Each part switched off in turn (routers; shared expert beside), then the second round.
( export SAMOYEDS_ROUTE_ONE_CTA=0 SAMOYEDS_ROUTE_CLUSTER=0; run moe-new-oldrouter new $B ); grep -A1 "$G" $L/moe-new-oldrouter.txt >> $S
( export SAMOYEDS_SHARED_BESIDE=0; run moe-new-sequential new bench moe --presets deepseek-moe-16b,qwen1.5-moe-a2.7b --tokens 1,16 --samples 10 --graph-tokens 16 ); grep -A1 "$G" $L/moe-new-sequential.txt >> $S
run moe-base2 base $B; grep -A1 "$G" $L/moe-base2.txt >> $S
run moe-new2 new $B; grep -A1 "$G" $L/moe-new2.txt >> $S
date >> $S
# Splits of the T = 1 grouped launches (the default: gate/up 1, down 4 for Mixtral).
for sp in 2 8; do
  ( export SAMOYEDS_GROUPED_SPLITS=$sp; run moe-new-splits$sp new bench moe --presets mixtral-8x7b --tokens 1 --samples 10 --graph-tokens 1 ); grep -A1 "$G" $L/moe-new-splits$sp.txt >> $S
done
date >> $S
cat $S
