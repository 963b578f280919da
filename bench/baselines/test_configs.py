#!/usr/bin/env python3
"""Unit checks for the non-GPU logic of bench/baselines (pure Python; no torch, no GPU needed).

  python3 bench/baselines/test_configs.py

Config parsing of every bundled config.json, config lookup order, the OpenMoE capacity rule, the
Triton launch plan (padding bound, block configs, align in plain Python) and the result
readers (lenient Samoyeds JSON, ratio table). Where torch is importable (the GPU machine), the
capture-safe torch capacity rule is also checked against the plain-Python one.
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import fused_plan  # noqa: E402
import moe_config  # noqa: E402
import moe_results  # noqa: E402
from moe_config import ConfigError, find_config, load_spec, spec_from_dict  # noqa: E402

CONFIGS = os.path.join(HERE, "configs")

# folder: (family, hidden, ffn, experts, top_k, norm_topk, shared_ffn, shared_gate, capacity (factor, min))
EXPECTED = {
    "mixtral-8x7b": ("mixtral", 4096, 14336, 8, 2, True, 0, None, None),
    "mixtral-8x22b": ("mixtral", 6144, 16384, 8, 2, True, 0, None, None),
    "qwen1.5-moe-a2.7b": ("qwen2_moe", 2048, 1408, 60, 4, False, 5632, "sigmoid", None),
    "deepseek-moe-16b": ("deepseek", 2048, 1408, 64, 6, False, 2816, None, None),
    "minicpm-moe-8x2b": ("minicpm", 2304, 5760, 8, 2, True, 0, None, None),
    "openmoe-34b": ("openmoe", 3072, 12288, 32, 2, False, 0, None, (2.0, 4)),
    "qwen3-30b-a3b": ("qwen3_moe", 2048, 768, 128, 8, True, 0, None, None),
    "olmoe-1b-7b": ("olmoe", 2048, 1024, 64, 8, False, 0, None, None),
}


def capacity_python(expert_ids: list[list[int]], experts: int, capacity: int) -> list[list[int]]:
    """OpenMoE/Swift rule: every first choice (token order) before any second; past capacity -> E."""
    T = len(expert_ids)
    k = len(expert_ids[0]) if T else 0
    load = [0] * experts
    out = [row[:] for row in expert_ids]
    for j in range(k):
        for t in range(T):
            e = expert_ids[t][j]
            if load[e] < capacity:
                load[e] += 1
            else:
                out[t][j] = experts
    return out


class ConfigTests(unittest.TestCase):
    def test_every_bundled_config(self):
        folders = sorted(d for d in os.listdir(CONFIGS) if os.path.isfile(os.path.join(CONFIGS, d, "config.json")))
        self.assertEqual(set(folders), set(EXPECTED), "bundled configs and expectations differ")
        for folder in folders:
            with self.subTest(folder=folder):
                s = load_spec(os.path.join(CONFIGS, folder, "config.json"))
                fam, hidden, ffn, e, k, norm, shared, gate, cap = EXPECTED[folder]
                self.assertEqual(s.name, folder)
                self.assertEqual(s.family, fam)
                self.assertEqual((s.hidden, s.ffn, s.experts, s.top_k), (hidden, ffn, e, k))
                self.assertIs(s.norm_topk, norm)
                self.assertEqual(s.shared_ffn, shared)
                self.assertEqual(s.shared_gate, gate)
                self.assertEqual((s.capacity_factor, s.capacity_min) if s.has_capacity else None, cap)

    def test_every_family_has_a_default_config(self):
        for fam in moe_config.FAMILIES:
            with self.subTest(family=fam):
                path = find_config(fam)
                self.assertTrue(path.startswith(CONFIGS), f"{path} is not under bench/baselines/configs")
                self.assertEqual(load_spec(path).family, fam)

    def test_config_folder_names_and_configs_dir(self):
        self.assertTrue(find_config("mixtral-8x22b").endswith(os.path.join("mixtral-8x22b", "config.json")))
        with tempfile.TemporaryDirectory() as d:
            os.makedirs(os.path.join(d, "olmoe-1b-7b"))
            with open(os.path.join(d, "olmoe-1b-7b", "config.json"), "w") as f:
                json.dump({"model_type": "olmoe", "hidden_size": 64, "intermediate_size": 32, "num_experts": 4,
                           "num_experts_per_tok": 2}, f)
            p = find_config("olmoe", d)
            self.assertTrue(p.startswith(d))
            self.assertEqual(load_spec(p).hidden, 64)
            with self.assertRaises(ConfigError):
                find_config("qwen3_moe", d)

    def test_rejections_and_defaults(self):
        with self.assertRaises(ConfigError):
            spec_from_dict({"model_type": "llama", "architectures": ["LlamaForCausalLM"]})
        with self.assertRaises(ConfigError):  # minicpm without experts is the dense model
            spec_from_dict({"model_type": "minicpm", "hidden_size": 8, "intermediate_size": 8})
        with self.assertRaises(ConfigError):
            spec_from_dict({"model_type": "deepseek", "hidden_size": 8, "moe_intermediate_size": 8,
                            "n_routed_experts": 4, "num_experts_per_tok": 2, "scoring_func": "sigmoid"})
        with self.assertRaises(ConfigError):
            spec_from_dict({"model_type": "mixtral", "hidden_size": 8, "intermediate_size": 8,
                            "num_local_experts": 4, "num_experts_per_tok": 2, "hidden_act": "gelu"})
        with self.assertRaises(ConfigError):  # a required key missing is named
            spec_from_dict({"model_type": "qwen3_moe", "hidden_size": 8, "num_experts": 4, "num_experts_per_tok": 2})
        s = spec_from_dict({"model_type": "qwen2_moe", "hidden_size": 8, "moe_intermediate_size": 4,
                            "num_experts": 4, "num_experts_per_tok": 2})
        self.assertEqual((s.norm_topk, s.shared_ffn, s.shared_gate), (False, 0, None))
        s = spec_from_dict({"architectures": ["OpenMoeForCausalLM"], "model_type": "llama", "hidden_size": 8,
                            "intermediate_size": 16, "num_experts": 4, "router_topk": 2, "router_drop_tks": False})
        self.assertFalse(s.has_capacity)
        self.assertIsNone(s.capacity(100))

    def test_openmoe_capacity_formula(self):
        s = load_spec(find_config("openmoe"))
        # max(4, even(floor(2 * 2.0 * T / 32)))
        self.assertEqual([s.capacity(t) for t in (1, 16, 64, 128, 1000, 1024, 4096, 16384)],
                         [4, 4, 8, 16, 126, 128, 512, 2048])

    def test_shrink_keeps_routing(self):
        s = load_spec(find_config("qwen2_moe")).shrunk(16)
        self.assertEqual((s.hidden, s.ffn, s.shared_ffn, s.experts, s.top_k, s.shared_gate),
                         (128, 64, 320, 60, 4, "sigmoid"))

    def test_parse_lists(self):
        self.assertEqual(moe_config.parse_tokens("1, 16,128"), [1, 16, 128])
        with self.assertRaises(ValueError):
            moe_config.parse_tokens("0")
        self.assertEqual(moe_config.parse_families("all"), moe_config.FAMILIES)
        self.assertEqual(moe_config.parse_families("olmoe,mixtral,olmoe"), ["olmoe", "mixtral"])


class PlanTests(unittest.TestCase):
    def test_pick_config(self):
        self.assertEqual(fused_plan.pick_config(2, 8, override="")["BLOCK_M"], 16)  # Mixtral T=1
        self.assertEqual(fused_plan.pick_config(8, 128, override="")["BLOCK_M"], 16)  # Qwen3 T=1
        self.assertEqual(fused_plan.pick_config(2 * 128, 8, override="")["BLOCK_M"], 32)  # Mixtral T=128
        self.assertEqual(fused_plan.pick_config(2 * 4096, 8, override="")["BLOCK_M"], 128)
        c = fused_plan.pick_config(5, 5, override="64,128,32,4,2")
        self.assertEqual((c["BLOCK_M"], c["BLOCK_N"], c["BLOCK_K"], c["num_warps"], c["num_stages"]),
                         (64, 128, 32, 4, 2))
        for _, bm, bn, bk, _, w, st in fused_plan.CONFIGS:
            # shared memory of the gate/up kernel (one A and two B tiles per stage) fits 227 KB
            self.assertLessEqual((bm * bk + 2 * bk * bn) * 2 * st, 227 * 1024)
            self.assertGreaterEqual(bm, 16)

    def test_next_pow2(self):
        self.assertEqual([fused_plan.next_pow2(n) for n in (1, 2, 3, 9, 61, 65, 129)], [1, 2, 4, 16, 64, 128, 256])

    def test_align_reference_and_bound(self):
        rng = random.Random(5)
        for _ in range(300):
            E = rng.choice([1, 4, 8, 60, 64, 128])
            k = rng.choice([1, 2, 4, 8])
            T = rng.choice([1, 2, 3, 16, 37, 128])
            bm = rng.choice([16, 32, 64, 128])
            ids = [rng.randrange(E + (1 if rng.random() < 0.1 else 0)) for _ in range(T * k)]  # some dropped (= E)
            if rng.random() < 0.2:
                ids = [0] * (T * k)  # skew: every pair to one expert
            S = len(ids)
            sorted_ids, ends, total = fused_plan.align_reference(ids, E, bm)
            self.assertLessEqual(total, fused_plan.max_padded_rows(S, E, bm))
            self.assertEqual(len(sorted_ids) % bm, 0)
            self.assertEqual(total % bm, 0)
            real = [p for p in sorted_ids if p < S]
            self.assertEqual(sorted(real), [i for i, e in enumerate(ids) if e < E])  # every kept pair once
            for b0 in range(0, total, bm):
                e = fused_plan.block_expert(ends, b0)
                for p in sorted_ids[b0:b0 + bm]:
                    if p < S:
                        self.assertEqual(ids[p], e)
            self.assertTrue(all(p == S for p in sorted_ids[total:]))


class ResultTests(unittest.TestCase):
    def baseline_doc(self):
        return {
            "device": "H200", "configs": {"mixtral-8x7b": {"family": "mixtral"}, "olmoe-1b-7b": {"family": "olmoe"}},
            "rows": [
                {"family": "mixtral", "config": "mixtral-8x7b", "baseline": "grouped", "tokens": 1, "status": "ok",
                 "eager_ms": 1.0, "graph_ms": 0.8, "best_ms": 0.8, "best_mode": "graph", "check": "ok"},
                {"family": "mixtral", "config": "mixtral-8x7b", "baseline": "hf", "tokens": 1, "status": "n/a",
                 "eager_ms": None, "graph_ms": None, "best_ms": None},
            ],
            "best": [
                {"family": "mixtral", "config": "mixtral-8x7b", "tokens": 1, "best_ms": 0.8, "baseline": "grouped",
                 "mode": "graph"},
                {"family": "olmoe", "config": "olmoe-1b-7b", "tokens": 16, "best_ms": 0.3, "baseline": "triton",
                 "mode": "graph"},
            ],
            "checks": [], "errors": [],
        }

    def test_samoyeds_rows_lenient(self):
        doc = {"rows": [
            {"preset": "mixtral-8x7b", "tokens": 1, "graphMilliseconds": 0.5, "eagerMilliseconds": 0.7},
            {"family": "olmoe", "tokens": 16, "sparseMilliseconds": 0.2},
            {"config": "qwen3-30b-a3b", "T": 4, "ms": "0.1"},
            {"preset": "mixtral-8x7b", "tokens": 16},  # no time: ignored
            {"tokens": 16, "ms": 1.0},  # no configuration: ignored
            {"preset": "x", "tokens": 2, "ms": float("nan")},  # not a time: ignored
        ]}
        rows = moe_results.samoyeds_rows(doc)
        self.assertEqual(rows, {("mixtral-8x7b", 1): 0.5, ("olmoe-1b-7b", 16): 0.2, ("qwen3-30b-a3b", 4): 0.1})
        self.assertEqual(moe_results.samoyeds_rows([{"preset": "a", "tokens": 1, "ms": 2}]), {("a", 1): 2.0})
        self.assertEqual(moe_results.samoyeds_rows({"preset": "a", "rows": [{"tokens": 3, "ms": 2}]}), {("a", 3): 2.0})
        self.assertEqual(moe_results.samoyeds_rows("garbage"), {})

    def test_ratio_table(self):
        best = moe_results.best_dense(self.baseline_doc())
        self.assertEqual(best[("mixtral-8x7b", 1)], (0.8, "grouped", "graph"))
        rows = moe_results.ratio_rows(best, {("mixtral-8x7b", 1): 0.4, ("olmoe-1b-7b", 1): 1.0})
        self.assertEqual(len(rows), 1)
        self.assertAlmostEqual(rows[0]["speedup"], 2.0)
        text = moe_results.format_ratio_table(rows)
        self.assertIn("2.00x", text)
        self.assertIn("no configuration", moe_results.format_ratio_table([]))

    def test_merge_and_series(self):
        a, b = self.baseline_doc(), self.baseline_doc()
        b["configs"] = {"qwen3-30b-a3b": {"family": "qwen3_moe"}}
        m = moe_results.merge_baselines([a, b])
        self.assertEqual(len(m["rows"]), 4)
        self.assertEqual(set(m["configs"]), {"mixtral-8x7b", "olmoe-1b-7b", "qwen3-30b-a3b"})
        s = moe_results.series(a)
        self.assertEqual(s["mixtral-8x7b"]["grouped"]["best"], [(1, 0.8)])
        self.assertNotIn("hf", s["mixtral-8x7b"])  # n/a rows are not plotted


class TorchCapacityTests(unittest.TestCase):
    """Runs where torch is importable (the GPU machine); skipped elsewhere."""

    def setUp(self):
        try:
            import torch  # noqa: F401
        except ImportError:
            self.skipTest("torch not installed")

    def test_torch_capacity_matches_python(self):
        import torch

        import moe_baselines

        rng = random.Random(3)
        for _ in range(50):
            E, k, T = rng.choice([4, 8, 32]), rng.choice([1, 2, 3]), rng.choice([1, 5, 40, 200])
            cap = rng.choice([1, 2, 4, 8, 16])
            ids = [rng.sample(range(E), k) for _ in range(T)]
            topi = torch.tensor(ids, dtype=torch.int64)
            topw = torch.rand(T, k)
            got_i, got_w = moe_baselines.apply_capacity(topi, topw, E, cap)
            want = capacity_python(ids, E, cap)
            self.assertEqual(got_i.tolist(), want)
            self.assertTrue(bool(((got_i == E) == (got_w == 0)).all()))


class TritonTests(unittest.TestCase):
    """The Triton fused MoE against a per-expert loop. Runs on a CUDA GPU (bf16), or on the CPU under
    TRITON_INTERPRET=1 (f32: the interpreter mishandles bf16); skipped elsewhere."""

    def setUp(self):
        try:
            import torch
            import triton  # noqa: F401
        except ImportError:
            self.skipTest("torch or triton not installed")
        if torch.cuda.is_available():
            self.device, self.dtype, self.tol = torch.device("cuda"), torch.bfloat16, 2e-2
        elif os.environ.get("TRITON_INTERPRET") == "1":
            self.device, self.dtype, self.tol = torch.device("cpu"), torch.float32, 1e-4
        else:
            self.skipTest("no CUDA device (set TRITON_INTERPRET=1 to run on the CPU)")

    def test_align_matches_python(self):
        import torch

        import triton_moe

        rng = random.Random(1)
        for _ in range(25):
            E, k, T = rng.choice([1, 8, 60, 128]), rng.choice([1, 2, 8]), rng.choice([1, 3, 50, 300])
            bm = rng.choice([16, 64, 128])
            ids = [rng.randrange(E + (1 if rng.random() < 0.2 else 0)) for _ in range(T * k)]
            topi = torch.tensor(ids, dtype=torch.int64, device=self.device).view(T, k)
            sorted_ids, pad_end, num_padded, max_padded = triton_moe.moe_align(topi, E, bm)
            ref_ids, ref_ends, ref_total = fused_plan.align_reference(ids, E, bm)
            self.assertEqual(max_padded, len(ref_ids))
            self.assertEqual(pad_end.tolist(), ref_ends)
            self.assertEqual(num_padded.item(), ref_total)
            got = sorted_ids.tolist()
            for b0 in range(0, ref_total, bm):  # order inside an expert is free (atomics)
                self.assertEqual(sorted(got[b0:b0 + bm]), sorted(ref_ids[b0:b0 + bm]))
            self.assertTrue(all(p == T * k for p in got[ref_total:]))

    def test_fused_moe_matches_loop(self):
        import torch

        import triton_moe

        g = torch.Generator().manual_seed(0)
        cases = [(1, 128, 64, 8, 2, False), (37, 128, 128, 16, 4, False), (300, 256, 128, 4, 2, False),
                 (50, 128, 64, 8, 2, True), (64, 136, 72, 6, 3, False)]
        configs = [None, dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=32, GROUP_M=2, num_warps=4, num_stages=2),
                   dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=64, GROUP_M=8, num_warps=4, num_stages=2)]
        for T, H, F, E, k, drop in cases:
            x = torch.randn(T, H, generator=g)
            w13 = torch.randn(E, 2 * F, H, generator=g) / H ** 0.5
            w2 = torch.randn(E, H, F, generator=g) / F ** 0.5
            topw, topi = torch.topk(torch.randn(T, E, generator=g).softmax(-1), k)
            if drop:
                keep = torch.rand(T, k, generator=g) > 0.3
                topi, topw = torch.where(keep, topi, E), topw * keep
            ref = torch.zeros(T, H)
            xr, w13r, w2r = (t.to(self.dtype).float() for t in (x, w13, w2))
            for e in range(E):
                t_idx, j_idx = (topi == e).nonzero(as_tuple=True)
                if t_idx.numel():
                    h = xr[t_idx] @ w13r[e].t()
                    y = (torch.nn.functional.silu(h[:, :F]) * h[:, F:]) @ w2r[e].t()
                    ref.index_add_(0, t_idx, y * topw[t_idx, j_idx].unsqueeze(1))
            dev = dict(device=self.device)
            for cfg in configs:
                with self.subTest(T=T, H=H, F=F, E=E, k=k, drop=drop, cfg=cfg and cfg["BLOCK_M"]):
                    out = triton_moe.fused_moe(x.to(self.dtype).to(**dev), w13.to(self.dtype).to(**dev),
                                               w2.to(self.dtype).to(**dev), topi.to(**dev), topw.to(**dev),
                                               config=cfg, may_drop=drop)
                    err = ((out.float().cpu() - ref).norm() / ref.norm()).item()
                    self.assertLess(err, self.tol)


if __name__ == "__main__":
    result = unittest.main(exit=False, verbosity=1).result
    failed = len(result.failures) + len(result.errors)
    print(f"{result.testsRun - failed - len(result.skipped)} passed, {failed} failed, {len(result.skipped)} skipped")
    sys.exit(1 if failed else 0)
