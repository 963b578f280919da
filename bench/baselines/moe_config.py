"""MoE layer shapes and routing rules from a Hugging Face config.json (pure Python, no torch).

Mirrors Sources/SamoyedsModel/HuggingFaceConfig.swift so the baselines time the same layer
that `samoyeds` builds from the same file:

| family    | model_type / architecture      | expert ffn            | experts           | top-k                | renormalize            | shared experts                                   |
|-----------|--------------------------------|-----------------------|-------------------|----------------------|------------------------|--------------------------------------------------|
| mixtral   | mixtral                        | intermediate_size     | num_local_experts | num_experts_per_tok  | always                 | -                                                |
| qwen2_moe | qwen2_moe                      | moe_intermediate_size | num_experts       | num_experts_per_tok  | norm_topk_prob (False) | 1 of shared_expert_intermediate_size, sigmoid gate |
| deepseek  | deepseek (v1, DeepSeek-MoE)    | moe_intermediate_size | n_routed_experts  | num_experts_per_tok  | norm_topk_prob (False) | n_shared_experts as one MLP of n*moe_intermediate_size, ungated |
| minicpm   | minicpm with num_experts       | intermediate_size     | num_experts       | num_experts_per_tok  | always                 | -                                                |
| openmoe   | OpenMoeForCausalLM (llama)     | intermediate_size     | num_experts       | router_topk          | never                  | - ; capacity max(min, even(floor(k*f*T/E)))      |
| qwen3_moe | qwen3_moe                      | moe_intermediate_size | num_experts       | num_experts_per_tok  | norm_topk_prob (True)  | -                                                |
| olmoe     | olmoe                          | intermediate_size     | num_experts       | num_experts_per_tok  | norm_topk_prob (False) | -                                                |

Every family: softmax over all experts (DeepSeek-MoE: scoring_func must be softmax), SwiGLU
experts down(SiLU(gate x) * up x).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, asdict, field

# The family keys (Swift's MoEFamily raw values) and the config folder each uses by default.
FAMILY_DEFAULT_CONFIG = {
    "mixtral": "mixtral-8x7b",
    "qwen2_moe": "qwen1.5-moe-a2.7b",
    "deepseek": "deepseek-moe-16b",
    "minicpm": "minicpm-moe-8x2b",
    "openmoe": "openmoe-34b",
    "qwen3_moe": "qwen3-30b-a3b",
    "olmoe": "olmoe-1b-7b",
}
FAMILIES = list(FAMILY_DEFAULT_CONFIG)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
# Searched in this order for <folder>/config.json.
DEFAULT_CONFIG_DIRS = [
    os.path.join(HERE, "configs"),
    os.path.join(REPO_ROOT, "..", "shared", "model-configs"),
    os.path.join(REPO_ROOT, "shared", "model-configs"),
]


class ConfigError(Exception):
    pass


@dataclass
class MoESpec:
    """One MoE layer: shapes and routing rule."""

    family: str
    name: str
    hidden: int
    ffn: int  # expert intermediate size
    experts: int
    top_k: int
    norm_topk: bool
    shared_ffn: int = 0  # summed width of the shared experts (0: none)
    shared_gate: str | None = None  # "sigmoid" (Qwen2-MoE) or None (ungated)
    capacity_factor: float | None = None  # OpenMoE: router_capacity_factor_eval
    capacity_min: int | None = None  # OpenMoE: router_min_capacity
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def has_capacity(self) -> bool:
        return self.capacity_factor is not None

    def capacity(self, tokens: int) -> int | None:
        """Tokens each expert accepts for a batch of `tokens` (None: unlimited).

        Same as Swift's ExpertCapacity.capacity: max(min, even(floor(k * f * T / E))).
        """
        if self.capacity_factor is None:
            return None
        value = math.floor(self.top_k * self.capacity_factor * tokens / self.experts)
        value += value % 2
        return max(value, self.capacity_min or 0)

    def summary(self) -> dict:
        d = asdict(self)
        d.pop("raw", None)
        return d

    def shrunk(self, factor: int) -> "MoESpec":
        """The same routing with hidden and ffn sizes divided by `factor` (multiples of 64 kept), for smoke runs."""
        if factor <= 1:
            return self

        def s(v: int) -> int:
            return 0 if v == 0 else max(64, (v // factor) // 64 * 64)

        return MoESpec(
            family=self.family, name=f"{self.name}/shrink{factor}", hidden=s(self.hidden), ffn=s(self.ffn),
            experts=self.experts, top_k=self.top_k, norm_topk=self.norm_topk, shared_ffn=s(self.shared_ffn),
            shared_gate=self.shared_gate, capacity_factor=self.capacity_factor, capacity_min=self.capacity_min,
            raw=self.raw)


def detect_family(cfg: dict) -> str:
    archs = cfg.get("architectures") or []
    if "OpenMoeForCausalLM" in archs:
        return "openmoe"
    mt = cfg.get("model_type")
    if mt == "mixtral":
        return "mixtral"
    if mt == "qwen2_moe":
        return "qwen2_moe"
    if mt == "deepseek":
        return "deepseek"
    if mt == "minicpm" and (cfg.get("num_experts") or 0) > 0:
        return "minicpm"
    if mt == "qwen3_moe":
        return "qwen3_moe"
    if mt == "olmoe":
        return "olmoe"
    raise ConfigError(f"architecture {archs[:1]} (model_type {mt}) is not a supported MoE family")


def spec_from_dict(cfg: dict, name: str = "?") -> MoESpec:
    family = detect_family(cfg)

    def req(key: str):
        if cfg.get(key) is None:
            raise ConfigError(f"{name}: '{key}' is required for {family}")
        return cfg[key]

    act = cfg.get("hidden_act")
    if act is not None and act not in ("silu", "swiglu"):
        raise ConfigError(f"{name}: hidden_act '{act}'; only SwiGLU experts are supported")
    hidden = int(req("hidden_size"))
    common = dict(family=family, name=name, hidden=hidden, raw=cfg)
    if family in ("mixtral", "minicpm"):
        return MoESpec(ffn=int(req("intermediate_size")),
                       experts=int(req("num_local_experts" if family == "mixtral" else "num_experts")),
                       top_k=int(req("num_experts_per_tok")), norm_topk=True, **common)
    if family in ("qwen2_moe", "qwen3_moe"):
        shared = 0
        gate = None
        if family == "qwen2_moe" and (cfg.get("shared_expert_intermediate_size") or 0) > 0:
            shared = int(cfg["shared_expert_intermediate_size"])
            gate = "sigmoid"
        return MoESpec(ffn=int(req("moe_intermediate_size")), experts=int(req("num_experts")),
                       top_k=int(req("num_experts_per_tok")), norm_topk=bool(cfg.get("norm_topk_prob") or False),
                       shared_ffn=shared, shared_gate=gate, **common)
    if family == "deepseek":
        scoring = cfg.get("scoring_func")
        if scoring is not None and scoring != "softmax":
            raise ConfigError(f"{name}: scoring_func '{scoring}'; DeepSeek-MoE routing is softmax")
        ffn = int(req("moe_intermediate_size"))
        n_shared = int(cfg.get("n_shared_experts") or 0)
        return MoESpec(ffn=ffn, experts=int(req("n_routed_experts")), top_k=int(req("num_experts_per_tok")),
                       norm_topk=bool(cfg.get("norm_topk_prob") or False), shared_ffn=ffn * n_shared,
                       shared_gate=None, **common)
    if family == "openmoe":
        if cfg.get("mlp_gated") is False:
            raise ConfigError(f"{name}: OpenMoE with mlp_gated=false is not SwiGLU")
        top_k = cfg.get("router_topk") if cfg.get("router_topk") is not None else cfg.get("num_experts_per_tok")
        if top_k is None:
            raise ConfigError(f"{name}: 'router_topk' is required for openmoe")
        factor = minimum = None
        if cfg.get("router_drop_tks"):
            factor = float(cfg.get("router_capacity_factor_eval") or 2.0)
            minimum = int(cfg.get("router_min_capacity") if cfg.get("router_min_capacity") is not None else 4)
        return MoESpec(ffn=int(req("intermediate_size")), experts=int(req("num_experts")), top_k=int(top_k),
                       norm_topk=False, capacity_factor=factor, capacity_min=minimum, **common)
    if family == "olmoe":
        return MoESpec(ffn=int(req("intermediate_size")), experts=int(req("num_experts")),
                       top_k=int(req("num_experts_per_tok")), norm_topk=bool(cfg.get("norm_topk_prob") or False),
                       **common)
    raise ConfigError(f"{name}: unhandled family {family}")  # pragma: no cover


def load_spec(path: str) -> MoESpec:
    with open(path) as f:
        cfg = json.load(f)
    name = os.path.basename(os.path.dirname(os.path.abspath(path))) or path
    return spec_from_dict(cfg, name)


def find_config(family_or_folder: str, configs_dir: str | None = None) -> str:
    """The config.json for a family key (mixtral, ...) or a config folder name (mixtral-8x22b, ...).

    Looked up in `configs_dir` when given, else bench/baselines/configs/ first, then ../shared/model-configs.
    """
    folder = FAMILY_DEFAULT_CONFIG.get(family_or_folder, family_or_folder)
    dirs = [configs_dir] if configs_dir else DEFAULT_CONFIG_DIRS
    tried = []
    for d in dirs:
        p = os.path.normpath(os.path.join(d, folder, "config.json"))
        tried.append(p)
        if os.path.isfile(p):
            return p
    raise ConfigError(f"no config.json for '{family_or_folder}'; tried: {', '.join(tried)}")


def parse_tokens(text: str) -> list[int]:
    out = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        v = int(item)
        if v < 1:
            raise ValueError(f"token count {v} must be >= 1")
        out.append(v)
    if not out:
        raise ValueError("no token counts given")
    return out


def parse_families(text: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    out: list[str] = []
    for it in items:
        if it == "all":
            out.extend(FAMILIES)
        else:
            out.append(it)
    seen = set()
    return [x for x in out if not (x in seen or seen.add(x))]
