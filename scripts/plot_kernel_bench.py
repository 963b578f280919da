#!/usr/bin/env python3
"""Plot `samoyeds bench kernel` JSON: ratio (dense / sparse) vs routed tokens, one line per shape."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(source: str, target: str) -> None:
    with open(source) as f:
        document = json.load(f)
    shapes = {}
    for row in document["rows"]:
        shapes.setdefault((row["m"], row["k"]), []).append((row["tokens"], row["ratio"]))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    best = {}
    for row in document["rows"]:
        # The portable (mma.sp) tilings only, so the Hopper kernel's gain shows.
        variants = {t: v for t, v in (row.get("variantMilliseconds") or {}).items() if t != "wgmma"}
        if variants:
            best.setdefault((row["m"], row["k"]), []).append((row["tokens"], row["denseMilliseconds"] / min(variants.values())))
    for (m, k), points in sorted(shapes.items()):
        points.sort()
        line, = ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=f"{m}x{k}")
        if (m, k) in best:
            # With the portable tilings timed: the fastest of them, dashed, in the same colour.
            extra = sorted(best[(m, k)])
            ax.plot([p[0] for p in extra], [p[1] for p in extra], linestyle="--", color=line.get_color(), alpha=0.7)
    ax.axhline(1.0, color="gray", linewidth=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("routed tokens T")
    ax.set_ylabel("speed-up over cuBLASLt dense (+gather)\n(solid: tiling chosen; dashed: fastest portable mma.sp tiling)")
    ax.set_title(f"Samoyeds dual-sparse GEMM, {document['pattern']}, {document['device']}")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(target, dpi=120)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
