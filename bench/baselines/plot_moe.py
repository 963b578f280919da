#!/usr/bin/env python3
"""Plot MoE-layer time vs T (log-log), one panel per configuration: every dense baseline (solid:
the faster of eager and CUDA graph; dashed: eager) and Samoyeds when its JSON is given.

  python3 bench/baselines/plot_moe.py BASELINES.json [MORE.json ...] --out moe.png [--samoyeds samoyeds-moe.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from moe_results import load_baselines, samoyeds_rows, series  # noqa: E402

COLORS = {"hf": "tab:blue", "hf_eager": "tab:cyan", "grouped": "tab:orange", "triton": "tab:green"}


def plot(doc: dict, samoyeds: dict, out: str, title: str | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = series(doc)
    configs = list(doc.get("configs", {})) or sorted(data)
    configs = [c for c in configs if c in data or any(k[0] == c for k in samoyeds)]
    if not configs:
        raise SystemExit("nothing to plot: no timed rows")
    ncols = min(4, len(configs))
    nrows = math.ceil(len(configs) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), squeeze=False)
    for ax, cfg in zip(axes.flat, configs):
        for name, s in data.get(cfg, {}).items():
            color = COLORS.get(name)
            label = name + ("" if s["check"] == "ok" else " (check FAILED)")
            if s["best"]:
                ax.plot([p[0] for p in s["best"]], [p[1] for p in s["best"]], marker="o", ms=3, color=color,
                        label=label)
            if s["eager"] and s["graph"]:
                ax.plot([p[0] for p in s["eager"]], [p[1] for p in s["eager"]], linestyle="--", linewidth=0.8,
                        color=color, alpha=0.6)
        pts = sorted((t, ms) for (c, t), ms in samoyeds.items() if c == cfg)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="s", ms=4, color="black", linewidth=2,
                    label="samoyeds")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(cfg, fontsize=10)
        ax.set_xlabel("tokens T")
        ax.set_ylabel("ms per layer")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(configs):]:
        ax.axis("off")
    dev = doc.get("device", "")
    fig.suptitle(title or f"MoE layer time vs T ({dev}; solid: best of eager/graph, dashed: eager)", fontsize=11)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("baselines", nargs="+", help="moe_baselines.py JSON file(s)")
    p.add_argument("--samoyeds", help="`samoyeds bench moe --json` output (optional)")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--title")
    args = p.parse_args(argv)
    doc = load_baselines(args.baselines)
    samo = {}
    if args.samoyeds and os.path.exists(args.samoyeds):
        with open(args.samoyeds) as f:
            samo = samoyeds_rows(json.load(f))
    plot(doc, samo, args.out, args.title)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
