"""Host-side planning for the Triton fused MoE (pure Python, no torch: unit-tested here).

align pads every expert's (token, choice) pairs to a multiple of BLOCK_M; the GEMM grids are sized
from an upper bound known on the host (no device-to-host copy, so the layer can be captured in a
CUDA graph); programs past the real padded length exit at once.
"""

from __future__ import annotations

import os


def next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def max_padded_rows(num_pairs: int, experts: int, block_m: int) -> int:
    """Upper bound on the padded length: every non-empty expert wastes at most block_m - 1 rows,
    and at most min(E, S) experts are non-empty. Rounded up to block_m."""
    bound = num_pairs + min(experts, num_pairs) * (block_m - 1)
    return max(block_m, (bound + block_m - 1) // block_m * block_m)


# Block sizes by average pairs per expert (S / E), chosen for H200 (sm_90, 227 KB shared memory
# per block): the gate/up kernel keeps two BLOCK_M x BLOCK_N fp32 accumulators and streams one A
# and two B tiles per stage.
#   (max avg rows, BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, num_warps, num_stages)
CONFIGS = [
    (16, 16, 64, 128, 1, 4, 4),  # decode: memory bound; narrow N tiles give enough programs
    (48, 32, 64, 128, 4, 4, 4),
    (192, 64, 128, 64, 8, 4, 4),  # one warpgroup (wgmma m64)
    (float("inf"), 128, 128, 64, 8, 8, 3),  # prefill: compute bound, two warpgroups
]


def pick_config(num_pairs: int, experts: int, override: str | None = None) -> dict:
    """Block sizes for S = num_pairs routed pairs over `experts`. `override` (or the environment's
    SAMOYEDS_TRITON_CONFIG) = "BLOCK_M,BLOCK_N,BLOCK_K,num_warps,num_stages"."""
    override = override if override is not None else os.environ.get("SAMOYEDS_TRITON_CONFIG")
    if override:
        bm, bn, bk, w, st = (int(v) for v in override.split(","))
        return dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=8, num_warps=w, num_stages=st)
    avg = num_pairs / max(1, experts)
    for limit, bm, bn, bk, gm, w, st in CONFIGS:
        if avg <= limit:
            return dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=gm, num_warps=w, num_stages=st)
    raise AssertionError("unreachable")


def align_reference(expert_ids: list[int], experts: int, block_m: int):
    """What moe_align computes, in plain Python (order inside an expert fixed to pair order):
    (sorted pair ids with sentinel S in the padding, per-expert padded range ends, padded length)."""
    S = len(expert_ids)
    counts = [0] * experts
    for e in expert_ids:
        if 0 <= e < experts:
            counts[e] += 1
    ends, total = [], 0
    for c in counts:
        total += (c + block_m - 1) // block_m * block_m
        ends.append(total)
    sorted_ids = [S] * max_padded_rows(S, experts, block_m)
    cursor = [end - (c + block_m - 1) // block_m * block_m for end, c in zip(ends, counts)]
    for pair, e in enumerate(expert_ids):
        if 0 <= e < experts:
            sorted_ids[cursor[e]] = pair
            cursor[e] += 1
    return sorted_ids, ends, total


def block_expert(ends: list[int], row0: int) -> int:
    """The expert owning the block that starts at row0 (as the GEMM kernels find it)."""
    return sum(1 for end in ends if end <= row0)
