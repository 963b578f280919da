#!/usr/bin/env bash
# Build a portable binary here, then verify and benchmark on a GPU machine.
#
#   scripts/gpu-check.sh build        # here (Swift toolchain): dist/samoyeds + dist/samoyeds-kernels/*.cu
#                                     # PRECOMPILE=sm_90a also fills dist/kernel-cache with NVRTC here
#                                     # (no GPU needed; used there when its NVRTC has the same major.minor)
#   scripts/gpu-check.sh run [OUT]    # on the GPU machine: verify, sanitizers, bench, plot
#
# `run` writes OUT/verify.log, OUT/sanitizer-*.log, OUT/bench-kernel.json,
# OUT/bench-kernel.png and prints a short table last. Set QUICK=1 to skip
# the sanitizers; BENCH_ARGS to pass options to `bench kernel`.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
build)
  swift build -c release --static-swift-stdlib
  rm -rf dist && mkdir -p dist
  cp .build/release/samoyeds dist/
  strip dist/samoyeds
  cp -R Sources/Kernels/Resources/kernels dist/samoyeds-kernels
  cp scripts/plot_kernel_bench.py dist/
  if [ -n "${PRECOMPILE:-}" ]; then
    dist/samoyeds compile --arch "$PRECOMPILE" --cache dist/kernel-cache
  fi
  ls -la dist
  ;;
run)
  out="${2:-${OUT:-out}}"
  mkdir -p "$out"
  bin=dist/samoyeds
  # A cache filled by `build` with PRECOMPILE saves the first compile (about a minute).
  if [ -z "${SAMOYEDS_CACHE_DIR:-}" ] && [ -d dist/kernel-cache ]; then
    export SAMOYEDS_CACHE_DIR="$PWD/dist/kernel-cache"
  fi
  export SAMOYEDS_CACHE_DIR="${SAMOYEDS_CACHE_DIR:-/tmp/samoyeds-cache}"
  "$bin" info | tee "$out/info.log"
  set +e
  "$bin" verify 2>&1 | tee "$out/verify.log"
  verify_status=${PIPESTATUS[0]}
  if [ "${QUICK:-0}" != 1 ] && command -v compute-sanitizer >/dev/null; then
    compute-sanitizer --tool memcheck --error-exitcode 9 "$bin" verify --filter "256x256 1:2:128" >"$out/sanitizer-memcheck.log" 2>&1
    echo "memcheck exit $? ($(grep -c ERROR "$out/sanitizer-memcheck.log") ERROR lines)"
    # The GPU layer (views of one index upload, shared-expert scaleAdd): a family with a shared expert.
    compute-sanitizer --tool memcheck --error-exitcode 9 "$bin" verify --filter "gpu moe layer qwen2-moe-mini" >"$out/sanitizer-memcheck-layer.log" 2>&1
    echo "memcheck (GPU layer) exit $? ($(grep -c ERROR "$out/sanitizer-memcheck-layer.log") ERROR lines)"
    compute-sanitizer --tool racecheck --error-exitcode 9 "$bin" verify --filter "256 1:2:128 store" >"$out/sanitizer-racecheck.log" 2>&1
    echo "racecheck exit $? ($(grep -cE 'ERROR|hazard' "$out/sanitizer-racecheck.log") hazard lines)"
    # The GPU router (moe_routing.cu): every router case, and the layers that use it;
    # racecheck on OpenMoE (the capacity pass) and Qwen3 (32 experts, top-8, 8 dispatch blocks).
    for filter in "gpu router" "device-router"; do
      log="$out/sanitizer-memcheck-${filter// /-}.log"
      compute-sanitizer --tool memcheck --error-exitcode 9 "$bin" verify --filter "$filter" >"$log" 2>&1
      echo "memcheck ($filter) exit $? ($(grep -c ERROR "$log") ERROR lines)"
    done
    for family in openmoe-mini qwen3-moe-mini; do
      compute-sanitizer --tool racecheck --error-exitcode 9 "$bin" verify --filter "gpu router $family T=1000" >"$out/sanitizer-racecheck-router-$family.log" 2>&1
      echo "racecheck (GPU router $family) exit $? ($(grep -cE 'ERROR|hazard' "$out/sanitizer-racecheck-router-$family.log") hazard lines)"
    done
  fi
  # verify (above) also compares the GPU layer with each family's transformers
  # block (bench/baselines/compare_hf.py) when python3 has torch and transformers.
  # shellcheck disable=SC2086
  "$bin" bench kernel --json "$out/bench-kernel.json" ${BENCH_ARGS:-} 2>&1 | tee "$out/bench.log"
  bench_status=${PIPESTATUS[0]}
  set -e
  python3 dist/plot_kernel_bench.py "$out/bench-kernel.json" "$out/bench-kernel.png" || echo "plot failed"
  echo "== verify: $(tail -1 "$out/verify.log") (exit $verify_status)"
  echo "== bench (exit $bench_status)"
  grep -E "^ +[0-9]+ +[0-9]+ +[0-9]+ " "$out/bench.log" || true
  ;;
*)
  echo "usage: $0 build | run [OUT]" >&2
  exit 2
  ;;
esac
