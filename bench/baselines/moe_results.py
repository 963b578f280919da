"""Reading and comparing MoE benchmark results (pure Python, no torch).

* baselines JSON: written by moe_baselines.py (one per run; run_all.py merges one per family).
* Samoyeds JSON: written by `samoyeds bench moe --json` (issue #5). Its exact layout is not fixed
  yet, so rows are read leniently: a list of rows, or an object with "rows"; each row names its
  configuration (preset / config / name / model, or a family key) and its token count
  (tokens / T), and gives a time in milliseconds under one of SAMOYEDS_MS_KEYS (the first found;
  where both a graph and an eager time are given, the faster counts, as for the baselines).
"""

from __future__ import annotations

import json
import math

from moe_config import FAMILY_DEFAULT_CONFIG

SAMOYEDS_CONFIG_KEYS = ("preset", "config", "name", "model", "family")
SAMOYEDS_TOKEN_KEYS = ("tokens", "T", "t")
SAMOYEDS_MS_KEYS = (
    "bestMilliseconds", "best_ms",
    "sparseMilliseconds", "samoyedsMilliseconds", "layerMilliseconds",
    "milliseconds", "ms", "time_ms",
)
SAMOYEDS_MODE_KEYS = (("graphMilliseconds", "eagerMilliseconds"), ("graph_ms", "eager_ms"))


def _number(v):
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) and f > 0 else None


def config_name(value: str) -> str:
    """A family key (mixtral, ...) maps to its default config folder; anything else is kept."""
    return FAMILY_DEFAULT_CONFIG.get(value, value)


def merge_baselines(docs: list[dict]) -> dict:
    """Merge moe_baselines.py documents (e.g. one per family) into one."""
    out: dict = {"configs": {}, "rows": [], "best": [], "checks": [], "errors": []}
    for d in docs:
        for key in ("tool", "device", "versions", "dtype", "timing", "tolerance", "tokens"):
            if key in d and key not in out:
                out[key] = d[key]
        out["configs"].update(d.get("configs", {}))
        for key in ("rows", "best", "checks", "errors"):
            out[key].extend(d.get(key, []))
    return out


def load_baselines(paths: list[str]) -> dict:
    docs = []
    for p in paths:
        with open(p) as f:
            docs.append(json.load(f))
    return merge_baselines(docs)


def best_dense(doc: dict) -> dict:
    """{(config, T): (ms, baseline, mode)}: the fastest correct baseline per configuration and T."""
    out = {}
    for b in doc.get("best", []):
        ms = _number(b.get("best_ms"))
        if ms is None:
            continue
        key = (b.get("config") or config_name(b.get("family", "?")), int(b["tokens"]))
        if key not in out or ms < out[key][0]:
            out[key] = (ms, b.get("baseline"), b.get("mode"))
    return out


def samoyeds_rows(doc) -> dict:
    """{(config, T): ms} from a `samoyeds bench moe` JSON document (lenient, see module doc)."""
    rows = doc.get("rows", []) if isinstance(doc, dict) else doc if isinstance(doc, list) else []
    default_config = None
    if isinstance(doc, dict):
        for k in SAMOYEDS_CONFIG_KEYS:
            if isinstance(doc.get(k), str):
                default_config = doc[k]
                break
    out = {}
    for r in rows:
        if not isinstance(r, dict):
            continue
        name = next((r[k] for k in SAMOYEDS_CONFIG_KEYS if isinstance(r.get(k), str)), default_config)
        t = next((r[k] for k in SAMOYEDS_TOKEN_KEYS if k in r), None)
        if name is None or t is None:
            continue
        ms = None
        for graph_key, eager_key in SAMOYEDS_MODE_KEYS:
            vals = [v for v in (_number(r.get(graph_key)), _number(r.get(eager_key))) if v is not None]
            if vals:
                ms = min(vals)
                break
        if ms is None:
            ms = next((_number(r[k]) for k in SAMOYEDS_MS_KEYS if _number(r.get(k)) is not None), None)
        if ms is None:
            continue
        try:
            key = (config_name(name), int(t))
        except (TypeError, ValueError):
            continue
        if key not in out or ms < out[key]:
            out[key] = ms
    return out


def ratio_rows(best: dict, samoyeds: dict) -> list[dict]:
    """One row per (config, T) present in both: speed-up = best dense ms / Samoyeds ms."""
    rows = []
    for key in sorted(set(best) & set(samoyeds)):
        ms, baseline, mode = best[key]
        s = samoyeds[key]
        rows.append(dict(config=key[0], tokens=key[1], samoyeds_ms=s, best_dense_ms=ms, baseline=baseline,
                         mode=mode, speedup=ms / s))
    return rows


def format_ratio_table(rows: list[dict]) -> str:
    if not rows:
        return "(no configuration and token count timed by both Samoyeds and the dense baselines)"
    lines = [f"{'config':<20s} {'T':>6s} {'samoyeds ms':>12s} {'best dense ms':>14s} {'dense / samoyeds':>17s}  best dense"]
    for r in rows:
        lines.append(f"{r['config']:<20s} {r['tokens']:6d} {r['samoyeds_ms']:12.4f} {r['best_dense_ms']:14.4f} "
                     f"{r['speedup']:16.2f}x  {r['baseline']} ({r['mode']})")
    return "\n".join(lines)


def series(doc: dict) -> dict:
    """{config: {baseline: {"eager": [(T, ms)], "graph": [...], "best": [...]}}} for plotting."""
    out: dict = {}
    for r in doc.get("rows", []):
        if r.get("status") != "ok":
            continue
        cfg = r.get("config") or config_name(r.get("family", "?"))
        b = out.setdefault(cfg, {}).setdefault(r["baseline"], {"eager": [], "graph": [], "best": [], "check": "ok"})
        if r.get("check", "ok") != "ok":
            b["check"] = r["check"]
        for mode, key in (("eager", "eager_ms"), ("graph", "graph_ms"), ("best", "best_ms")):
            v = _number(r.get(key))
            if v is not None:
                b[mode].append((int(r["tokens"]), v))
    for cfg in out.values():
        for b in cfg.values():
            for mode in ("eager", "graph", "best"):
                b[mode].sort()
    return out
