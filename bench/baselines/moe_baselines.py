#!/usr/bin/env python3
"""Dense MoE-layer baselines, timed on the configurations and token counts of `samoyeds bench moe`.

For each family (config.json under bench/baselines/configs/, random weights, nothing downloaded):

  hf       the family's sparse-MoE block from transformers (5.x), experts implementation
           `--hf-experts` (default grouped_mm: what from_pretrained picks on sm80+).
  hf_eager the same block with the eager per-expert loop (host syncs; not capturable). Opt-in.
  grouped  router + sort by expert + gather + torch._grouped_mm (gate/up fused as [E, 2F, H],
           then down) + SiLU*up + routing-weight scaling + scatter back and sum over top-k.
  triton   router + the fused MoE of triton_moe.py (align, two Triton GEMMs reading rows by index).

Shared experts (Qwen2-MoE: one, sigmoid-gated; DeepSeek-MoE: n_shared as one MLP) are a dense MLP
on all tokens in every baseline. The router (gate projection, softmax, top-k, renormalization,
OpenMoE capacity) is inside the timed call.

Each baseline's output is checked against a plain per-expert loop in f32 (on the same routing the
baseline chose) at the smallest and one larger T. Every baseline is timed eagerly and replayed
from a CUDA graph; the faster counts. Run with --help for options; docs/BENCHMARKS.md explains.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from moe_config import (  # noqa: E402
    FAMILIES, ConfigError, MoESpec, find_config, load_spec, parse_families, parse_tokens,
)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

try:
    import triton_moe  # noqa: E402

    TRITON_IMPORT_ERROR = None
except Exception as exc:  # triton missing or broken: the triton baseline reports n/a
    triton_moe = None
    TRITON_IMPORT_ERROR = f"{type(exc).__name__}: {exc}"

ALL_BASELINES = ["hf", "hf_eager", "grouped", "triton"]
DEFAULT_BASELINES = "hf,grouped,triton"
TOLERANCE = 2e-2  # relative Frobenius error against the f32 reference
# The routing a baseline chose must follow the family rule (computed in f32): the same experts for
# at least this share of tokens (bf16 logits may flip near-ties) and, on those tokens, weights
# within ROUTE_WEIGHT_TOLERANCE (catches a missing or extra renormalization, wrong capacity, ...).
ROUTE_MATCH_MIN = 0.9
ROUTE_WEIGHT_TOLERANCE = 2e-2


class NotAvailable(Exception):
    """A baseline that does not exist for a family (reported as n/a, not as an error)."""


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, getattr(torch.cuda, "OutOfMemoryError", ())):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def one_line(exc: BaseException, limit: int = 300) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().replace("\n", " | ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------
# weights


class LayerWeights:
    """Random weights of one MoE layer, in the layouts every baseline shares (no copies):
    router [E, H]; w13 [E, 2F, H] (gate rows, then up rows); w2 [E, H, F];
    shared: ws13 [2Fs, H], ws2 [H, Fs], shared_gate [1, H] (Qwen2-MoE)."""

    def __init__(self, spec: MoESpec, device, dtype, seed: int):
        g = torch.Generator(device=device)
        g.manual_seed(seed)

        def rnd(*shape, fan_in):
            t = torch.randn(*shape, generator=g, device=device, dtype=dtype)
            return t.mul_(1.0 / math.sqrt(fan_in))

        H, Fe, E = spec.hidden, spec.ffn, spec.experts
        self.router = rnd(E, H, fan_in=H)
        self.w13 = rnd(E, 2 * Fe, H, fan_in=H)
        self.w2 = rnd(E, H, Fe, fan_in=Fe)
        self.ws13 = self.ws2 = self.shared_gate = None
        if spec.shared_ffn:
            self.ws13 = rnd(2 * spec.shared_ffn, H, fan_in=H)
            self.ws2 = rnd(H, spec.shared_ffn, fan_in=spec.shared_ffn)
            if spec.shared_gate == "sigmoid":
                self.shared_gate = rnd(1, H, fan_in=H)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in
                   (self.router, self.w13, self.w2, self.ws13, self.ws2, self.shared_gate) if t is not None)


# ---------------------------------------------------------------------------------------------
# router and shared experts (shared by the grouped and triton baselines)


def apply_capacity(topi: torch.Tensor, topw: torch.Tensor, experts: int, capacity: int):
    """OpenMoE capacity: every first choice (in token order) before any second choice; an
    expert's assignments past `capacity` are dropped (expert id -> E, weight -> 0).
    Capture-safe (no host sync): a one-hot cumulative count over the rank-major order."""
    T, k = topi.shape
    order = topi.t().reshape(-1)  # [k*T]: all first choices, then all second choices
    onehot = torch.zeros(order.numel(), experts + 1, dtype=torch.int32, device=topi.device)
    onehot.scatter_(1, order.unsqueeze(1), 1)
    position = onehot.cumsum(0, dtype=torch.int32).gather(1, order.unsqueeze(1)).squeeze(1)  # 1-based
    keep = (position <= capacity).view(k, T).t()
    return torch.where(keep, topi, torch.full_like(topi, experts)), topw * keep


def route(x: torch.Tensor, router_w: torch.Tensor, spec: MoESpec):
    """Gate projection (bf16), softmax in f32, top-k, renormalize per family, capacity (OpenMoE).
    Returns (topw [T, k] f32, topi [T, k] int64); dropped choices have id E and weight 0."""
    return select_experts(F.linear(x, router_w), spec)


def route_reference(x: torch.Tensor, w: LayerWeights, spec: MoESpec):
    """The family's routing rule in f32 throughout (for the routing-agreement report)."""
    return select_experts(x.float() @ w.router.float().t(), spec)


def select_experts(logits: torch.Tensor, spec: MoESpec):
    """Router logits [T, E] -> (topw, topi): softmax in f32, top-k, renormalization and capacity as the family does."""
    probs = torch.softmax(logits, dim=-1, dtype=torch.float32)
    topw, topi = torch.topk(probs, spec.top_k, dim=-1)
    if spec.norm_topk:
        topw = topw / topw.sum(dim=-1, keepdim=True)
    if spec.has_capacity:
        topi, topw = apply_capacity(topi, topw, spec.experts, spec.capacity(logits.shape[0]))
    return topw, topi


def shared_experts(x: torch.Tensor, w: LayerWeights, spec: MoESpec):
    if w.ws13 is None:
        return None
    h = F.linear(x, w.ws13)
    fs = spec.shared_ffn
    y = F.linear(F.silu(h[:, :fs]) * h[:, fs:], w.ws2)
    if w.shared_gate is not None:
        y = y * torch.sigmoid(F.linear(x, w.shared_gate))
    return y


# ---------------------------------------------------------------------------------------------
# reference


@torch.no_grad()
def reference(x: torch.Tensor, w: LayerWeights, spec: MoESpec, topi: torch.Tensor, topw: torch.Tensor):
    """A straightforward per-expert loop in f32 on the given routing (ids >= E are dropped)."""
    xf = x.float()
    out = torch.zeros_like(xf)
    Fe = spec.ffn
    for e in range(spec.experts):
        t_idx, j_idx = (topi == e).nonzero(as_tuple=True)
        if t_idx.numel() == 0:
            continue
        h = xf[t_idx] @ w.w13[e].float().t()
        a = F.silu(h[:, :Fe]) * h[:, Fe:]
        y = a @ w.w2[e].float().t()
        out.index_add_(0, t_idx, y * topw[t_idx, j_idx].float().unsqueeze(1))
    if w.ws13 is not None:
        h = xf @ w.ws13.float().t()
        fs = spec.shared_ffn
        y = (F.silu(h[:, :fs]) * h[:, fs:]) @ w.ws2.float().t()
        if w.shared_gate is not None:
            y = y * torch.sigmoid(xf @ w.shared_gate.float().t())
        out += y
    return out


def rel_fro(out: torch.Tensor, ref: torch.Tensor) -> float:
    den = ref.float().norm().item()
    num = (out.float() - ref.float()).norm().item()
    if not math.isfinite(num):
        return float("inf")
    return num / den if den > 0 else num


def routing_agreement(topi_a, topw_a, topi_b, topw_b):
    """Fraction of tokens whose chosen expert sets agree, and the largest weight difference on those."""
    ia, oa = topi_a.sort(dim=1)
    ib, ob = topi_b.sort(dim=1)
    same = (ia == ib).all(dim=1)
    frac = same.float().mean().item()
    if same.any():
        wa = topw_a.float().gather(1, oa)[same]
        wb = topw_b.float().gather(1, ob)[same]
        wdiff = (wa - wb).abs().max().item()
    else:
        wdiff = float("nan")
    return frac, wdiff


# ---------------------------------------------------------------------------------------------
# baselines


class Baseline:
    name = "?"
    capturable = True
    no_graph_reason = None

    def __init__(self, spec: MoESpec, layers: list[LayerWeights]):
        self.spec = spec
        self.layers = layers
        self.label = self.name

    def layer(self, i: int, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def routing(self, i: int, x: torch.Tensor):
        """(topw, topi) this baseline uses for layer i (the reference reuses it)."""
        return route(x, self.layers[i].router, self.spec)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(len(self.layers)):
            x = self.layer(i, x)
        return x


class GroupedBaseline(Baseline):
    name = "grouped"

    def __init__(self, spec, layers):
        super().__init__(spec, layers)
        self.gmm = getattr(torch, "_grouped_mm", None) or getattr(F, "grouped_mm", None)
        if self.gmm is None:
            raise NotAvailable("torch._grouped_mm is not in this torch")
        dev = layers[0].w13.device
        # offsets[e] = end of expert e's rows in the sorted order = #pairs with id < e + 1
        self.bounds = torch.arange(1, spec.experts + 1, device=dev, dtype=torch.int64)
        # [E, H, 2F] and [E, F, H] views of the shared weights (column-major per expert, as
        # transformers passes them): no copy.
        self.w13t = [w.w13.transpose(1, 2) for w in layers]
        self.w2t = [w.w2.transpose(1, 2) for w in layers]
        self.label = "torch._grouped_mm" if hasattr(torch, "_grouped_mm") else "F.grouped_mm"

    def layer(self, i, x):
        spec, w = self.spec, self.layers[i]
        T, H = x.shape
        k, Fe = spec.top_k, spec.ffn
        topw, topi = route(x, w.router, spec)
        sorted_e, perm = torch.sort(topi.reshape(-1))
        offs = torch.searchsorted(sorted_e, self.bounds).to(torch.int32)
        xs = x.index_select(0, perm // k)  # gathered rows, sorted by expert
        h = self.gmm(xs, self.w13t[i], offs=offs)  # [S, 2F]
        a = F.silu(h[:, :Fe]) * h[:, Fe:]
        y = self.gmm(a, self.w2t[i], offs=offs)  # [S, H]
        ws = topw.reshape(-1).index_select(0, perm).to(y.dtype)
        y = y * ws.unsqueeze(1)
        if spec.has_capacity:  # rows past offs[-1] (dropped pairs) are not written by grouped_mm
            y = torch.where((sorted_e < spec.experts).unsqueeze(1), y, torch.zeros((), dtype=y.dtype, device=y.device))
        pairs = torch.empty_like(y).index_copy_(0, perm, y)  # back to (token, choice) order
        out = pairs.view(T, k, H).sum(dim=1) if k > 1 else pairs
        s = shared_experts(x, w, spec)
        return out if s is None else out + s


class TritonBaseline(Baseline):
    name = "triton"

    def __init__(self, spec, layers):
        super().__init__(spec, layers)
        if triton_moe is None:
            raise NotAvailable(f"triton is not importable ({TRITON_IMPORT_ERROR})")
        self.label = "Triton fused MoE (triton_moe.py)"

    def layer(self, i, x):
        spec, w = self.spec, self.layers[i]
        topw, topi = route(x, w.router, spec)
        out = triton_moe.fused_moe(x, w.w13, w.w2, topi, topw, may_drop=spec.has_capacity)
        s = shared_experts(x, w, spec)
        return out if s is None else out + s


# -- transformers --------------------------------------------------------------------------------


def _hf_block_class(spec: MoESpec, proxy: bool):
    """(module path, class name, config class name, config kwargs, note) of the family's block."""
    H, Fe, E, k = spec.hidden, spec.ffn, spec.experts, spec.top_k
    raw = spec.raw or {}
    # Attention fields do not affect the MoE block, but the config classes validate them.
    heads = {}
    n_heads = raw.get("num_attention_heads")
    if n_heads and H % int(n_heads) == 0:
        for key in ("num_attention_heads", "num_key_value_heads"):
            if raw.get(key) is not None:
                heads[key] = raw[key]
    else:
        heads = {"num_attention_heads": 1, "num_key_value_heads": 1}
    if spec.family == "mixtral":
        return ("transformers.models.mixtral.modeling_mixtral", "MixtralSparseMoeBlock", "MixtralConfig",
                dict(hidden_size=H, intermediate_size=Fe, num_local_experts=E, num_experts_per_tok=k,
                     router_jitter_noise=0.0, hidden_act="silu", **heads), None)
    if spec.family == "qwen2_moe":
        return ("transformers.models.qwen2_moe.modeling_qwen2_moe", "Qwen2MoeSparseMoeBlock", "Qwen2MoeConfig",
                dict(hidden_size=H, moe_intermediate_size=Fe, num_experts=E, num_experts_per_tok=k,
                     norm_topk_prob=spec.norm_topk, shared_expert_intermediate_size=spec.shared_ffn,
                     hidden_act="silu", **heads), None)
    if spec.family == "qwen3_moe":
        return ("transformers.models.qwen3_moe.modeling_qwen3_moe", "Qwen3MoeSparseMoeBlock", "Qwen3MoeConfig",
                dict(hidden_size=H, moe_intermediate_size=Fe, num_experts=E, num_experts_per_tok=k,
                     norm_topk_prob=spec.norm_topk, hidden_act="silu", **heads), None)
    if spec.family == "olmoe":
        return ("transformers.models.olmoe.modeling_olmoe", "OlmoeSparseMoeBlock", "OlmoeConfig",
                dict(hidden_size=H, intermediate_size=Fe, num_experts=E, num_experts_per_tok=k,
                     norm_topk_prob=spec.norm_topk, hidden_act="silu", **heads), None)
    if spec.family == "deepseek":
        # DeepSeek-MoE (v1, model_type "deepseek") is remote code, not in transformers. DeepSeek-V2's
        # block is the same MoE (softmax, greedy top-k, no renormalization, routed_scaling_factor 1,
        # n_shared_experts as one MLP of n * moe_intermediate_size); its router computes logits in f32.
        if not proxy:
            raise NotAvailable("DeepSeek-MoE (model_type deepseek) is not in transformers (remote code)")
        if spec.norm_topk:
            raise NotAvailable("DeepSeek-MoE with norm_topk_prob=true has no transformers stand-in")
        return ("transformers.models.deepseek_v2.modeling_deepseek_v2", "DeepseekV2Moe", "DeepseekV2Config",
                dict(hidden_size=H, moe_intermediate_size=Fe, n_routed_experts=E, num_experts_per_tok=k,
                     n_shared_experts=spec.shared_ffn // Fe if spec.shared_ffn else 0, topk_method="greedy",
                     n_group=1, topk_group=1, routed_scaling_factor=1.0, norm_topk_prob=False, hidden_act="silu",
                     **heads),
                "DeepSeek-MoE is remote code; timed with transformers' DeepseekV2Moe (same MoE math)")
    if spec.family == "minicpm":
        # MiniCPM-MoE is remote code; its MoE block is Mixtral's (softmax, top-k, renormalized, SwiGLU).
        if not proxy:
            raise NotAvailable("MiniCPM-MoE is not in transformers (remote code)")
        return ("transformers.models.mixtral.modeling_mixtral", "MixtralSparseMoeBlock", "MixtralConfig",
                dict(hidden_size=H, intermediate_size=Fe, num_local_experts=E, num_experts_per_tok=k,
                     router_jitter_noise=0.0, hidden_act="silu", **heads),
                "MiniCPM-MoE is remote code; timed with transformers' MixtralSparseMoeBlock (same MoE math)")
    if spec.family == "openmoe":
        raise NotAvailable("OpenMoE is not in transformers (and no block there drops tokens by capacity)")
    raise NotAvailable(f"no transformers block known for {spec.family}")


def _set_param(module, dotted: str, tensor: torch.Tensor):
    parent, _, leaf = dotted.rpartition(".")
    sub = module.get_submodule(parent) if parent else module
    old = getattr(sub, leaf)
    if tuple(old.shape) != tuple(tensor.shape):
        raise RuntimeError(f"transformers parameter {dotted} has shape {tuple(old.shape)}, expected {tuple(tensor.shape)}")
    setattr(sub, leaf, torch.nn.Parameter(tensor, requires_grad=False))


def build_hf_block(spec: MoESpec, w: LayerWeights, experts_impl: str, proxy: bool):
    import importlib

    modname, clsname, cfgname, kwargs, note = _hf_block_class(spec, proxy)
    try:
        mod = importlib.import_module(modname)
        cls = getattr(mod, clsname)
        cfg_cls = getattr(importlib.import_module("transformers"), cfgname)
    except (ImportError, AttributeError) as exc:
        raise NotAvailable(f"{clsname} not found in this transformers ({one_line(exc)})")
    cfg = cfg_cls(**kwargs)
    try:
        cfg._experts_implementation = experts_impl
    except Exception as exc:  # older transformers without the experts interface
        if experts_impl != "eager":
            raise NotAvailable(f"cannot select experts implementation {experts_impl!r}: {one_line(exc)}")
    with torch.device("meta"):
        block = cls(cfg)
    Fs = spec.shared_ffn
    mapping = {
        "gate.weight": w.router,
        "experts.gate_up_proj": w.w13,
        "experts.down_proj": w.w2,
    }
    if w.ws13 is not None:
        prefix = "shared_expert" if spec.family == "qwen2_moe" else "shared_experts"
        mapping[f"{prefix}.gate_proj.weight"] = w.ws13[:Fs]
        mapping[f"{prefix}.up_proj.weight"] = w.ws13[Fs:]
        mapping[f"{prefix}.down_proj.weight"] = w.ws2
    if w.shared_gate is not None:
        mapping["shared_expert_gate.weight"] = w.shared_gate
    names = [n for n, _ in block.named_parameters()]
    unknown = [n for n in names if n not in mapping]
    missing = [n for n in mapping if n not in names]
    if unknown or missing:
        raise RuntimeError(f"{clsname}: unexpected parameters {unknown}, missing {missing} (transformers layout changed?)")
    for n, t in mapping.items():
        _set_param(block, n, t)
    for n, b in list(block.named_buffers()):
        if b.device.type == "meta":
            raise RuntimeError(f"{clsname}: buffer {n} was not materialized")
    block.eval()
    label = f"transformers {clsname} ({experts_impl} experts)"
    return block, label, note


class HFBaseline(Baseline):
    name = "hf"
    experts_impl = "grouped_mm"

    def __init__(self, spec, layers, experts_impl=None, proxy=True):
        super().__init__(spec, layers)
        if experts_impl:
            self.experts_impl = experts_impl
        self.blocks = []
        self.note = None
        for w in layers:
            block, label, note = build_hf_block(spec, w, self.experts_impl, proxy)
            self.blocks.append(block)
            self.label, self.note = label, note
        if self.experts_impl == "eager":
            self.capturable = False
            self.no_graph_reason = "eager experts loop: nonzero()/per-expert host syncs, not capturable"

    def layer(self, i, x):
        T, H = x.shape
        out = self.blocks[i](x.view(1, T, H))
        if isinstance(out, tuple):  # older transformers returned (hidden, router_logits)
            out = out[0]
        return out.reshape(T, H)

    def routing(self, i, x):
        r = self.blocks[i].gate(x)
        return r[1], r[2]


class HFEagerBaseline(HFBaseline):
    name = "hf_eager"
    experts_impl = "eager"


def build_baseline(name: str, spec: MoESpec, layers, args) -> Baseline:
    if name == "hf":
        return HFBaseline(spec, layers, experts_impl=args.hf_experts, proxy=not args.no_hf_proxy)
    if name == "hf_eager":
        return HFEagerBaseline(spec, layers, proxy=not args.no_hf_proxy)
    if name == "grouped":
        return GroupedBaseline(spec, layers)
    if name == "triton":
        return TritonBaseline(spec, layers)
    raise ValueError(f"unknown baseline {name!r}; known: {', '.join(ALL_BASELINES)}")


# ---------------------------------------------------------------------------------------------
# timing


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn, device, warmup: int, iters: int, flush: torch.Tensor | None) -> float:
    """Median milliseconds of one call. Before each timed call: optional L2 flush, device sync
    (the call starts on an idle GPU, so eager launch overhead is counted), then CUDA events."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    if device.type == "cuda":
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
        for start, end in events:
            if flush is not None:
                flush.zero_()
            torch.cuda.synchronize(device)
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize(device)
        times = [s.elapsed_time(e) for s, e in events]
    else:
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def capture_graph(fn, x_static):
    """Capture fn(x_static) in a CUDA graph (warm-up on a side stream first, as torch requires)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            fn(x_static)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        y_static = fn(x_static)
    return g, y_static


# ---------------------------------------------------------------------------------------------
# driver


def cleanup(device):
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def check_tokens(tokens: list[int]) -> list[int]:
    """The smallest T and one larger (the largest <= 1024, else the next one)."""
    ts = sorted(set(tokens))
    out = [ts[0]]
    larger = [t for t in ts[1:] if t <= 1024]
    if larger:
        out.append(larger[-1])
    elif len(ts) > 1:
        out.append(ts[1])
    return out


def describe(spec: MoESpec) -> str:
    parts = [f"hidden {spec.hidden}", f"expert ffn {spec.ffn}", f"{spec.experts} experts top-{spec.top_k}",
             "renormalized" if spec.norm_topk else "not renormalized"]
    if spec.shared_ffn:
        parts.append(f"shared ffn {spec.shared_ffn}" + (" (sigmoid gate)" if spec.shared_gate else " (ungated)"))
    if spec.has_capacity:
        parts.append(f"capacity factor {spec.capacity_factor} min {spec.capacity_min}")
    return ", ".join(parts)


def run_family(family: str, args, device, dtype, doc: dict):
    path = args.config if args.config else find_config(family, args.configs_dir)
    spec = load_spec(path)
    if args.shrink > 1:
        spec = spec.shrunk(args.shrink)
    fam = spec.family
    print(f"\n== {fam} ({spec.name}, {os.path.relpath(path)}): {describe(spec)}; {args.layers} layer(s)", flush=True)
    doc["configs"][spec.name] = {"family": fam, "config_path": path, "spec": spec.summary(), "baselines": {}}
    fam_doc = doc["configs"][spec.name]

    layers = [LayerWeights(spec, device, dtype, args.seed + 1000 * i) for i in range(args.layers)]
    print(f"   weights: {layers[0].nbytes() / 2**30:.2f} GiB per layer", flush=True)

    baselines: dict[str, Baseline] = {}
    for name in args.baselines:
        try:
            b = build_baseline(name, spec, layers, args)
            baselines[name] = b
            fam_doc["baselines"][name] = {"label": b.label, "note": getattr(b, "note", None), "status": "ok"}
            extra = f" [{b.note}]" if getattr(b, "note", None) else ""
            print(f"   {name}: {b.label}{extra}", flush=True)
        except NotAvailable as exc:
            fam_doc["baselines"][name] = {"label": None, "status": "n/a", "note": str(exc)}
            print(f"   {name}: n/a ({exc})", flush=True)
            for T in args.tokens:
                doc["rows"].append(dict(family=fam, config=spec.name, baseline=name, tokens=T, status="n/a",
                                        note=str(exc), eager_ms=None, graph_ms=None, best_ms=None, best_mode=None))
        except Exception as exc:
            fam_doc["baselines"][name] = {"label": None, "status": "error", "note": one_line(exc)}
            print(f"   {name}: ERROR building ({one_line(exc)})", flush=True)
            traceback.print_exc()
            for T in args.tokens:
                doc["rows"].append(dict(family=fam, config=spec.name, baseline=name, tokens=T, status="error",
                                        note=one_line(exc), eager_ms=None, graph_ms=None, best_ms=None, best_mode=None))

    gen = torch.Generator(device=device)
    # -- correctness ------------------------------------------------------------------------
    failed: dict[str, str] = {}
    if not args.no_check:
        for T in check_tokens(args.tokens):
            gen.manual_seed(args.seed + 7 + T)
            x = torch.randn(T, spec.hidden, generator=gen, device=device, dtype=dtype)
            ref_route = route_reference(x, layers[0], spec)
            for name, b in baselines.items():
                rec = dict(family=fam, config=spec.name, baseline=name, tokens=T)
                try:
                    with torch.no_grad():
                        out = b.layer(0, x)
                        topw, topi = b.routing(0, x)
                        ref = reference(x, layers[0], spec, topi, topw)
                    err = rel_fro(out, ref)
                    match, wdiff = routing_agreement(topi, topw, ref_route[1], ref_route[0])
                    out_ok = err < TOLERANCE
                    route_ok = match >= ROUTE_MATCH_MIN and (not math.isfinite(wdiff) or wdiff < ROUTE_WEIGHT_TOLERANCE)
                    ok = out_ok and route_ok
                    rec.update(rel_err=err, passed=ok, route_match=match, route_max_weight_diff=wdiff)
                    print(f"   check T={T:<6d} {name:<9s} rel err {err:.2e} {'ok' if out_ok else 'FAIL'}; "
                          f"routing vs the family rule in f32: {match * 100:.1f}% tokens same experts, "
                          f"max weight diff {wdiff:.1e} {'ok' if route_ok else 'FAIL'}", flush=True)
                    if not out_ok:
                        failed[name] = f"check failed at T={T}: rel err {err:.2e} >= {TOLERANCE}"
                    elif not route_ok:
                        failed[name] = (f"routing differs from the family rule at T={T}: {match * 100:.1f}% tokens "
                                        f"same experts, max weight diff {wdiff:.1e}")
                except Exception as exc:
                    if is_oom(exc):
                        rec.update(rel_err=None, passed=None, note=f"skipped: out of memory ({one_line(exc, 120)})")
                        print(f"   check T={T} {name}: skipped, out of memory", flush=True)
                    else:
                        rec.update(rel_err=None, passed=False, note=one_line(exc))
                        failed[name] = f"check raised at T={T}: {one_line(exc)}"
                        print(f"   check T={T} {name}: ERROR {one_line(exc)}", flush=True)
                        traceback.print_exc()
                doc["checks"].append(rec)
                cleanup(device)

    # -- timing -----------------------------------------------------------------------------
    flush = None
    if device.type == "cuda" and not args.no_l2_flush:
        flush = torch.empty(args.flush_mib * 2**20 // 4, dtype=torch.float32, device=device)
    use_graphs = device.type == "cuda" and not args.no_graph
    for T in args.tokens:
        gen.manual_seed(args.seed + T)
        try:
            x = torch.randn(T, spec.hidden, generator=gen, device=device, dtype=dtype)
        except Exception as exc:
            if not is_oom(exc):
                raise
            print(f"   T={T}: skipped, out of memory for the input", flush=True)
            cleanup(device)
            continue
        best_row = None
        for name, b in baselines.items():
            row = dict(family=fam, config=spec.name, baseline=name, impl=b.label, tokens=T, layers=args.layers,
                       status="ok", note=None, eager_ms=None, graph_ms=None, graph_note=None,
                       best_ms=None, best_mode=None, check=("FAIL: " + failed[name]) if name in failed else "ok")
            eager_out = None
            try:
                with torch.no_grad():
                    row["eager_ms"] = time_calls(lambda: b(x), device, args.warmup, args.iters, flush) / args.layers
                    eager_out = b(x)
            except Exception as exc:
                row["status"] = "oom" if is_oom(exc) else "error"
                row["note"] = ("skipped: out of memory: " if is_oom(exc) else "") + one_line(exc)
                if not is_oom(exc):
                    traceback.print_exc()
                eager_out = None
                cleanup(device)
            if row["status"] == "ok" and use_graphs:
                if not b.capturable:
                    row["graph_note"] = b.no_graph_reason
                else:
                    g = y_static = x_static = None
                    try:
                        x_static = x.clone()
                        with torch.no_grad():
                            g, y_static = capture_graph(b, x_static)
                            g.replay()
                            sync(device)
                            diff = rel_fro(y_static, eager_out)
                            if not diff < 1e-2:
                                raise RuntimeError(f"graph replay differs from the eager output (rel {diff:.2e})")
                            row["graph_ms"] = time_calls(g.replay, device, args.warmup, args.iters, flush) / args.layers
                    except Exception as exc:
                        row["graph_note"] = ("out of memory: " if is_oom(exc) else "capture failed: ") + one_line(exc)
                        try:
                            sync(device)
                        except Exception as exc2:  # a broken context: say so and stop this family
                            row["graph_note"] += f"; device unusable after capture: {one_line(exc2)}"
                            doc["rows"].append(row)
                            raise
                    finally:
                        del g, y_static, x_static
            del eager_out
            cands = [(row["eager_ms"], "eager"), (row["graph_ms"], "graph")]
            cands = [c for c in cands if c[0] is not None]
            if cands:
                row["best_ms"], row["best_mode"] = min(cands)
            doc["rows"].append(row)
            e = f"{row['eager_ms']:.4f}" if row["eager_ms"] is not None else "-"
            gr = f"{row['graph_ms']:.4f}" if row["graph_ms"] is not None else "-"
            msg = f"   T={T:<6d} {name:<9s} eager {e:>9s} ms  graph {gr:>9s} ms"
            if row["status"] != "ok":
                msg += f"  [{row['status']}: {row['note']}]"
            elif row["graph_note"]:
                msg += f"  [graph: {row['graph_note']}]"
            if name in failed:
                msg += "  [check FAILED: not counted as best]"
            print(msg, flush=True)
            if row["best_ms"] is not None and name not in failed and (best_row is None or row["best_ms"] < best_row["best_ms"]):
                best_row = row
            cleanup(device)
        if best_row is not None:
            doc["best"].append(dict(family=fam, config=spec.name, tokens=T, best_ms=best_row["best_ms"],
                                    baseline=best_row["baseline"], mode=best_row["best_mode"]))
        del x
    del baselines, layers
    cleanup(device)


def print_table(doc: dict):
    rows = [r for r in doc["rows"]]
    names = [n for n in ALL_BASELINES if any(r["baseline"] == n for r in rows)]
    print("\n== summary (ms per layer; eager / graph; * = the faster of the two; best over baselines last)")
    for cname, info in doc["configs"].items():
        frows = [r for r in rows if r["config"] == cname]
        if not frows:
            continue
        print(f"\n{info['family']} ({cname})")
        head = f"{'T':>6s} " + " ".join(f"{n + ' eager':>15s} {n + ' graph':>15s}" for n in names) + f" {'best ms':>9s}  best"
        print(head)
        for T in sorted({r["tokens"] for r in frows}):
            cells = []
            for n in names:
                r = next((r for r in frows if r["tokens"] == T and r["baseline"] == n), None)
                if r is None:
                    cells += ["", ""]
                    continue
                if r["status"] != "ok":
                    tag = r["status"]
                    cells += [tag, tag]
                    continue
                for mode in ("eager", "graph"):
                    v = r[f"{mode}_ms"]
                    s = "-" if v is None else f"{v:.4f}" + ("*" if r["best_mode"] == mode else "")
                    if r.get("check", "ok") != "ok":
                        s += "!"
                    cells.append(s)
            best = next((b for b in doc["best"] if b["config"] == cname and b["tokens"] == T), None)
            tail = f" {best['best_ms']:9.4f}  {best['baseline']} ({best['mode']})" if best else f" {'-':>9s}"
            print(f"{T:6d} " + " ".join(f"{c:>15s}" for c in cells) + tail)
    if any(r.get("check", "ok") != "ok" for r in rows):
        print("\n! = the baseline failed its correctness check (not counted as best)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", default="all",
                   help=f"comma list of {'|'.join(FAMILIES)}|all, or config folder names (e.g. mixtral-8x22b)")
    p.add_argument("--config", help="a config.json to use instead (with a single --family or none)")
    p.add_argument("--configs-dir", default=None,
                   help="folder of <name>/config.json (default: bench/baselines/configs, then ../shared/model-configs "
                        "relative to the repo root)")
    p.add_argument("--tokens", default="1,16,128,1024,4096,16384")
    p.add_argument("--layers", type=int, default=1, help="MoE layers (distinct weights) chained in one timed call; "
                   "times are reported per layer")
    p.add_argument("--baselines", default=DEFAULT_BASELINES, help=f"comma list of {','.join(ALL_BASELINES)}")
    p.add_argument("--hf-experts", default="grouped_mm",
                   help="transformers experts implementation for the hf baseline (grouped_mm, batched_mm, eager)")
    p.add_argument("--no-hf-proxy", action="store_true",
                   help="report n/a for DeepSeek-MoE and MiniCPM-MoE (remote code) instead of timing the "
                        "transformers block with the same math (DeepseekV2Moe, MixtralSparseMoeBlock)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--iters", type=int, default=20, help="timed calls; the median is reported")
    p.add_argument("--json", help="write results here")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--no-check", action="store_true", help="skip the correctness checks")
    p.add_argument("--no-graph", action="store_true", help="skip CUDA-graph timing")
    p.add_argument("--no-l2-flush", action="store_true", help="do not overwrite the L2 before each timed call")
    p.add_argument("--flush-mib", type=int, default=256, help="size of the L2-flush buffer")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (smoke runs: eager only)")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"],
                   help="bfloat16 (the benchmark); float32 only for CPU smoke runs of the Triton interpreter")
    p.add_argument("--shrink", type=int, default=1,
                   help="divide hidden and ffn sizes by this (smoke runs; routing unchanged)")
    args = p.parse_args(argv)

    args.tokens = parse_tokens(args.tokens)
    args.baselines = [b.strip() for b in args.baselines.split(",") if b.strip()]
    for b in args.baselines:
        if b not in ALL_BASELINES:
            p.error(f"unknown baseline {b!r}; known: {', '.join(ALL_BASELINES)}")
    families = parse_families(args.family) if args.family else []
    if args.config and len(families) > 1:
        if args.family == "all":
            families = ["(config)"]
        else:
            p.error("--config takes at most one --family")
    if args.config and not families:
        families = ["(config)"]
    if args.layers < 1:
        p.error("--layers must be >= 1")

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device visible to torch (use --device cpu for a smoke run)", file=sys.stderr)
        return 2
    dtype = getattr(torch, args.dtype)
    torch.set_grad_enabled(False)
    torch.set_float32_matmul_precision("highest")  # the f32 reference must not use TF32

    doc = {
        "tool": "bench/baselines/moe_baselines.py",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "triton": getattr(sys.modules.get("triton"), "__version__", None),
                     "transformers": _transformers_version()},
        "dtype": args.dtype,
        "timing": {"warmup": args.warmup, "iters": args.iters, "statistic": "median", "layers": args.layers,
                   "l2_flush_mib": None if args.no_l2_flush or device.type != "cuda" else args.flush_mib,
                   "graphs": device.type == "cuda" and not args.no_graph,
                   "unit": "ms per MoE layer (one call / layers)"},
        "tolerance": TOLERANCE,
        "tokens": args.tokens,
        "configs": {},
        "rows": [],
        "best": [],
        "checks": [],
        "errors": [],
    }
    print(f"device {doc['device']}; torch {torch.__version__}; triton {doc['versions']['triton']}; "
          f"transformers {doc['versions']['transformers']}; {args.dtype}; T = {args.tokens}", flush=True)

    for fam in families:
        try:
            if fam == "(config)":
                run_family(None, args, device, dtype, doc)
            else:
                run_family(fam, args, device, dtype, doc)
        except Exception as exc:
            msg = one_line(exc)
            print(f"!! {fam}: {msg}", flush=True)
            traceback.print_exc()
            doc["errors"].append({"family": fam, "error": msg})
            try:
                cleanup(device)
            except Exception:
                pass
        if args.json:  # after every family, so a timeout keeps what finished
            _write_json(args.json, doc)

    print_table(doc)
    if args.json:
        _write_json(args.json, doc)
        print(f"\nwrote {args.json}")
    return 1 if doc["errors"] and not doc["rows"] else 0


def _transformers_version():
    try:
        import transformers

        return transformers.__version__
    except Exception:
        return None


def _finite(o):
    """JSON has no NaN/Infinity: non-finite floats become null."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def _write_json(path, doc):
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(_finite(doc), f, indent=1, default=str)
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
