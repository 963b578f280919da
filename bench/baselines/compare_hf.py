#!/usr/bin/env python3
"""Check a Samoyeds layer against the Hugging Face transformers block of its family.

`samoyeds demo ... --dump FILE` writes the tokens, the CPU (and, with a GPU, the GPU)
outputs of the sparse layer and the layer's pruned weights densified (see
Sources/samoyeds/LayerDump.swift). This script loads those weights into the family's
transformers block (built by moe_baselines.build_hf_block, the same block the `hf`
baseline times), runs it on the same tokens and prints the relative Frobenius error of
each Samoyeds output against it. Exit status 1 when an error exceeds the tolerance.

The block runs in f32 by default so that its routing is the Samoyeds engine's (an f32
router): in bf16, a near-tie in the router logits can choose a different expert, which
is not an engine error. The GPU output itself is bf16 arithmetic (tolerance 1e-2).

    python3 bench/baselines/compare_hf.py FILE [--device cuda|cpu] [--dtype float32|bfloat16] [--tolerance 1e-2]
"""
from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from moe_config import MoESpec  # noqa: E402

import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402

from moe_baselines import NotAvailable, build_hf_block, rel_fro  # noqa: E402


class DumpWeights:
    """The dump's tensors in the layout build_hf_block takes (LayerWeights' field names)."""

    def __init__(self, tensors: dict, device, dtype):
        def get(name):
            t = tensors.get(name)
            return None if t is None else t.to(device=device, dtype=dtype).contiguous()

        self.router = get("router")
        self.w13 = get("w13")
        self.w2 = get("w2")
        self.ws13 = get("ws13")
        self.ws2 = get("ws2")
        self.shared_gate = get("shared_gate")


def spec_from_metadata(meta: dict) -> MoESpec:
    def integer(key):
        return int(meta[key])

    shared_ffn = integer("shared_ffn")
    return MoESpec(
        family=meta["family"], name=meta.get("name", "?"), hidden=integer("hidden"), ffn=integer("ffn"),
        experts=integer("experts"), top_k=integer("top_k"), norm_topk=meta["norm_topk"] == "true",
        shared_ffn=shared_ffn, shared_gate=(meta.get("shared_gate") if meta.get("shared_gate") == "sigmoid" else None),
        capacity_factor=float(meta["capacity_factor"]) if "capacity_factor" in meta else None,
        capacity_min=int(meta["capacity_min"]) if "capacity_min" in meta else None,
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dump", help="a file written by `samoyeds demo --dump`")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--tolerance", type=float, default=1e-2)
    p.add_argument("--experts-impl", default="grouped_mm", help="transformers experts implementation (grouped_mm, eager)")
    args = p.parse_args(argv)

    with safe_open(args.dump, framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    for key in ("family", "hidden", "ffn", "experts", "top_k", "norm_topk", "shared_ffn"):
        if key not in meta:
            print(f"error: {args.dump}: metadata '{key}' missing (not a `samoyeds demo --dump` file?)")
            return 2
    for key in ("x", "output.cpu", "router", "w13", "w2"):
        if key not in tensors:
            print(f"error: {args.dump}: tensor '{key}' missing")
            return 2
    spec = spec_from_metadata(meta)
    if spec.has_capacity:
        print(f"{spec.name} ({spec.family}): n/a — transformers has no block with expert capacity (OpenMoE)")
        return 0
    dtype = getattr(torch, args.dtype)
    device = torch.device(args.device)
    # CPU grouped_mm needs recent torch; eager experts always work.
    impl = args.experts_impl if device.type == "cuda" else "eager"
    try:
        block, label, note = build_hf_block(spec, DumpWeights(tensors, device, dtype), impl, proxy=True)
    except NotAvailable as exc:
        print(f"{spec.name} ({spec.family}): n/a — {exc}")
        return 0
    x = tensors["x"].to(device=device, dtype=dtype)
    T, H = x.shape
    with torch.no_grad():
        out = block(x.view(1, T, H))
        if isinstance(out, tuple):
            out = out[0]
        reference = out.reshape(T, H).float().cpu()
    print(f"{spec.name} ({spec.family}), T={T}: reference {label}{' — ' + note if note else ''}, {args.dtype} on {device}")
    worst = 0.0
    for key in ("output.cpu", "output.gpu"):
        if key not in tensors:
            continue
        error = rel_fro(tensors[key].float(), reference)
        worst = max(worst, error)
        verdict = "ok" if error < args.tolerance else f"FAIL (tolerance {args.tolerance:g})"
        print(f"  samoyeds {key.split('.')[1]:3s} vs transformers: rel. error {error:.2e} {verdict}")
    return 0 if worst < args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
