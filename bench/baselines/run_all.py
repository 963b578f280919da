#!/usr/bin/env python3
"""One call on the GPU machine: Samoyeds' `bench moe` (when the build has it), every dense
baseline for every family, the ratio table and a PNG of time vs T.

  python3 bench/baselines/run_all.py [--out bench/baselines/out] [--family all] [--tokens 1,16,128,1024,4096,16384]

Writes into --out: samoyeds-moe.json (if Samoyeds ran), baselines-<family>.json and .log (one
process per family, so a crash or a broken CUDA context in one family leaves the others alone),
baselines.json (merged), ratios.json (if both sides exist) and moe.png.
Options after `--` go to moe_baselines.py unchanged (e.g. `-- --layers 4 --no-l2-flush`).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

from moe_config import FAMILIES, parse_families  # noqa: E402
from moe_results import (  # noqa: E402
    best_dense, format_ratio_table, load_baselines, ratio_rows, samoyeds_rows,
)


def run_streaming(cmd: list[str], log_path: str | None, timeout: float | None) -> tuple[int, list[str]]:
    """Run cmd, echo its output live (and into log_path); kill it after `timeout` seconds."""
    lines: list[str] = []
    log = open(log_path, "w") if log_path else None
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                cwd=REPO_ROOT)
    except OSError as exc:
        if log:
            log.close()
        return 127, [f"cannot start {cmd[0]}: {exc}"]
    killed = []

    def kill():
        killed.append(True)
        proc.kill()

    timer = threading.Timer(timeout, kill) if timeout else None
    if timer:
        timer.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            lines.append(line.rstrip("\n"))
            if log:
                log.write(line)
        rc = proc.wait()
    finally:
        if timer:
            timer.cancel()
        if log:
            log.close()
    if killed:
        lines.append(f"killed after {timeout:.0f} s (--timeout)")
        print(lines[-1])
        return 124, lines
    return rc, lines


def run_samoyeds(args, out_dir: str) -> str | None:
    binary = args.samoyeds if os.path.isabs(args.samoyeds) else os.path.join(REPO_ROOT, args.samoyeds)
    if args.no_samoyeds:
        print("== samoyeds: skipped (--no-samoyeds)")
        return None
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        print(f"== samoyeds: {binary} not found (build it with scripts/gpu-check.sh build); skipped")
        return None
    json_path = os.path.join(out_dir, "samoyeds-moe.json")
    if os.path.exists(json_path):
        os.remove(json_path)
    cmd = [binary, "bench", "moe", "--json", json_path, "--tokens", args.tokens] + shlex.split(args.samoyeds_args)
    print(f"== samoyeds: {' '.join(shlex.quote(c) for c in cmd)}", flush=True)
    t0 = time.time()
    rc, lines = run_streaming(cmd, os.path.join(out_dir, "samoyeds-moe.log"), args.timeout or None)
    if rc != 0 or not os.path.exists(json_path):
        last = next((ln for ln in reversed(lines) if ln.strip()), "(no output)")
        reason = "not available in this build" if "issue #5" in "\n".join(lines) else f"exit {rc}"
        print(f"== samoyeds bench moe: {reason}: {last.strip()}; skipped, baselines only")
        return None
    print(f"== samoyeds: done in {time.time() - t0:.0f} s -> {json_path}")
    return json_path


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench/baselines/out", help="output folder (relative to the repo root; git-ignored default)")
    p.add_argument("--family", default="all", help=f"comma list of {'|'.join(FAMILIES)}|all or config folder names")
    p.add_argument("--tokens", default="1,16,128,1024,4096,16384")
    p.add_argument("--baselines", default=None, help="passed to moe_baselines.py (default hf,grouped,triton)")
    p.add_argument("--iters", type=int, default=None)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--samoyeds", default="dist/samoyeds", help="the Samoyeds binary (relative to the repo root)")
    p.add_argument("--samoyeds-args", default="", help="extra arguments for `samoyeds bench moe`")
    p.add_argument("--no-samoyeds", action="store_true")
    p.add_argument("--timeout", type=float, default=0, help="seconds per process (0: none)")
    p.add_argument("--python", default=sys.executable, help="python for moe_baselines.py")
    args = p.parse_args(argv)

    out_dir = args.out if os.path.isabs(args.out) else os.path.join(REPO_ROOT, args.out)
    os.makedirs(out_dir, exist_ok=True)
    t_start = time.time()

    samo_json = run_samoyeds(args, out_dir)

    families = parse_families(args.family)
    written = []
    for fam in families:
        json_path = os.path.join(out_dir, f"baselines-{fam}.json")
        if os.path.exists(json_path):
            os.remove(json_path)
        cmd = [args.python, os.path.join(HERE, "moe_baselines.py"), "--family", fam, "--tokens", args.tokens,
               "--json", json_path]
        if args.baselines:
            cmd += ["--baselines", args.baselines]
        if args.iters is not None:
            cmd += ["--iters", str(args.iters)]
        if args.warmup is not None:
            cmd += ["--warmup", str(args.warmup)]
        cmd += extra
        print(f"\n== baselines {fam}: {' '.join(shlex.quote(c) for c in cmd)}", flush=True)
        t0 = time.time()
        rc, _ = run_streaming(cmd, os.path.join(out_dir, f"baselines-{fam}.log"), args.timeout or None)
        status = "ok" if rc == 0 else f"exit {rc}"
        print(f"== baselines {fam}: {status} in {time.time() - t0:.0f} s", flush=True)
        if os.path.exists(json_path):  # partial results survive a failure
            written.append(json_path)

    if not written:
        print("no baseline results were written")
        return 1
    doc = load_baselines(written)
    merged = os.path.join(out_dir, "baselines.json")
    with open(merged, "w") as f:
        json.dump(doc, f, indent=1)
    print(f"\nwrote {merged}")

    best = best_dense(doc)
    print("\n== best dense baseline per configuration and T (ms per layer)")
    for (cfg, t), (ms, name, mode) in sorted(best.items()):
        print(f"  {cfg:<20s} T={t:<6d} {ms:9.4f}  {name} ({mode})")
    for e in doc.get("errors", []):
        print(f"  error in {e.get('family')}: {e.get('error')}")

    samo = {}
    if samo_json:
        try:
            with open(samo_json) as f:
                samo = samoyeds_rows(json.load(f))
        except (OSError, ValueError) as exc:
            print(f"cannot read {samo_json}: {exc}")
        if samo:
            rows = ratio_rows(best, samo)
            print("\n== Samoyeds vs the best dense baseline (speed-up = best dense ms / Samoyeds ms)")
            print(format_ratio_table(rows))
            with open(os.path.join(out_dir, "ratios.json"), "w") as f:
                json.dump(rows, f, indent=1)
        else:
            print(f"\n{samo_json}: no rows with a configuration, a token count and a time in ms were found")

    png = os.path.join(out_dir, "moe.png")
    try:
        from plot_moe import plot

        plot(doc, samo, png)
        print(f"wrote {png}")
    except Exception as exc:  # matplotlib missing, nothing timed, ...
        print(f"plot skipped: {type(exc).__name__}: {exc}")
    print(f"\ntotal {time.time() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
