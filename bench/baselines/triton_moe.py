"""A dense fused MoE in Triton, written the way production inference servers do it.

Written for this benchmark (not copied from any server):

1. align (3 small Triton kernels, no host sync, so it can be captured in a CUDA graph):
   count the (token, choice) pairs of every expert (atomic counters), pad each expert's count up to a multiple of
   BLOCK_M, prefix-sum the padded counts into per-expert block ranges, and scatter every pair's
   flat index t*top_k + j into its expert's range (an atomic cursor per expert; the order inside
   an expert does not matter). Padding slots hold the sentinel S = T*top_k.
2. gate/up GEMM: one program per (BLOCK_M block of one expert, BLOCK_N columns of the expert
   ffn). It reads the A rows x[pair // top_k] through the sorted list (no gathered copy), computes
   both the gate and the up tile from the fused [E, 2*ffn, hidden] weight and stores
   SiLU(gate) * up, in bf16, to row `pair` of a [S, ffn] intermediate.
3. down GEMM: same scheme over [E, hidden, ffn], A rows = intermediate[pair]; the epilogue
   multiplies by the pair's routing weight and stores row `pair` of a [S, hidden] buffer.
4. the sum over the top-k choices of each token (torch: view(T, k, hidden).sum(1)).

tl.dot takes bf16 operands and accumulates in fp32. Blocks of the same expert are contiguous,
so a block's expert is found by comparing its start with the per-expert padded range ends.
Pairs that a capacity rule dropped carry the expert id E and are never scheduled.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fused_plan import max_padded_rows, next_pow2, pick_config  # noqa: F401


# ---------------------------------------------------------------------------------------------
# align


@triton.jit
def _moe_count_kernel(topi_ptr, counts_ptr, S, E: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    inb = offs < S
    e = tl.load(topi_ptr + offs, mask=inb, other=E).to(tl.int32)
    valid = inb & (e < E)  # ids >= E: dropped by capacity
    e = tl.where(valid, e, 0)
    tl.atomic_add(counts_ptr + e, tl.full([BLOCK], 1, tl.int32), mask=valid)


@triton.jit
def _moe_ranges_kernel(counts_ptr, pad_end_ptr, cursor_ptr, num_padded_ptr, E: tl.constexpr,
                       NB: tl.constexpr, BLOCK_M: tl.constexpr):
    bins = tl.arange(0, NB)
    c = tl.load(counts_ptr + bins, mask=bins < E, other=0)
    padded = (c + BLOCK_M - 1) // BLOCK_M * BLOCK_M
    end = tl.cumsum(padded, 0)
    tl.store(pad_end_ptr + bins, end, mask=bins < E)
    tl.store(cursor_ptr + bins, end - padded, mask=bins < E)
    tl.store(num_padded_ptr, tl.sum(padded, 0))


@triton.jit
def _moe_scatter_kernel(topi_ptr, cursor_ptr, sorted_ptr, S, E: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    inb = offs < S
    e = tl.load(topi_ptr + offs, mask=inb, other=E).to(tl.int32)
    valid = inb & (e < E)
    e = tl.where(valid, e, 0)
    slot = tl.atomic_add(cursor_ptr + e, tl.full([BLOCK], 1, tl.int32), mask=valid)
    tl.store(sorted_ptr + slot, offs.to(tl.int32), mask=valid)


def moe_align(topi: torch.Tensor, experts: int, block_m: int):
    """topi: [T, k] expert ids (int32/int64; id >= E = dropped). Returns
    (sorted_ids [max_padded] int32, pad_end [E] int32, num_padded [1] int32, max_padded)."""
    device = topi.device
    flat = topi.reshape(-1)
    if not flat.is_contiguous():
        flat = flat.contiguous()
    S = flat.numel()
    E = experts
    NB = next_pow2(E + 1)
    max_padded = max_padded_rows(S, E, block_m)
    counts = torch.zeros(E, dtype=torch.int32, device=device)
    sorted_ids = torch.full((max_padded,), S, dtype=torch.int32, device=device)
    pad_end = torch.empty(E, dtype=torch.int32, device=device)
    cursor = torch.empty(E, dtype=torch.int32, device=device)
    num_padded = torch.empty(1, dtype=torch.int32, device=device)
    BLOCK = 1024
    grid = (triton.cdiv(S, BLOCK),)
    _moe_count_kernel[grid](flat, counts, S, E=E, BLOCK=BLOCK)
    _moe_ranges_kernel[(1,)](counts, pad_end, cursor, num_padded, E=E, NB=NB, BLOCK_M=block_m)
    _moe_scatter_kernel[grid](flat, cursor, sorted_ids, S, E=E, BLOCK=BLOCK)
    return sorted_ids, pad_end, num_padded, max_padded


# ---------------------------------------------------------------------------------------------
# GEMMs


@triton.jit
def _block_coords(max_padded, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """Program id -> (m block, n block), GROUP_M m blocks per sweep so weight tiles are reused from L2."""
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(max_padded, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * num_pid_n
    group = pid // per_group
    first_m = group * GROUP_M
    size_m = tl.minimum(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % size_m
    pid_n = (pid % per_group) // size_m
    return pid_m, pid_n


@triton.jit
def _block_expert(pad_end_ptr, row0, E: tl.constexpr, NB: tl.constexpr):
    """The expert whose padded block range holds sorted row `row0` (pad_end_ptr: [E] exclusive ends)."""
    bins = tl.arange(0, NB)
    ends = tl.load(pad_end_ptr + bins, mask=bins < E, other=0x7FFFFFFF)
    return tl.sum((ends <= row0).to(tl.int32), axis=0).to(tl.int64)


@triton.jit
def _moe_gate_up_kernel(
    x_ptr, w_ptr, out_ptr, sorted_ptr, pad_end_ptr, num_padded_ptr,
    N, K, S, max_padded,
    stride_xm, stride_we, stride_wn, stride_wk, stride_om,
    E: tl.constexpr, NB: tl.constexpr, TOP_K: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    EVEN_K: tl.constexpr,
):
    """out[pair, n] = SiLU(x[tok] . Wg[e, n]) * (x[tok] . Wu[e, n]) for the pairs of one block.

    w: [E, 2N, K] with the gate rows first, then the up rows (Hugging Face gate_up_proj layout)."""
    pid_m, pid_n = _block_coords(max_padded, N, BLOCK_M, BLOCK_N, GROUP_M)
    row0 = pid_m * BLOCK_M
    if row0 >= tl.load(num_padded_ptr):
        return
    e = _block_expert(pad_end_ptr, row0, E, NB)

    offs_m = row0 + tl.arange(0, BLOCK_M)
    pair = tl.load(sorted_ptr + offs_m)
    row_ok = pair < S
    tok = (pair // TOP_K).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < N
    offs_k = tl.arange(0, BLOCK_K)

    a_ptrs = x_ptr + tok[:, None] * stride_xm + offs_k[None, :]
    g_ptrs = w_ptr + e * stride_we + offs_n[None, :].to(tl.int64) * stride_wn + offs_k[:, None] * stride_wk
    u_ptrs = g_ptrs + N * stride_wn

    acc_g = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc_u = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kk in range(0, tl.cdiv(K, BLOCK_K)):
        if EVEN_K:
            a = tl.load(a_ptrs, mask=row_ok[:, None], other=0.0)
            bg = tl.load(g_ptrs, mask=n_ok[None, :], other=0.0)
            bu = tl.load(u_ptrs, mask=n_ok[None, :], other=0.0)
        else:
            k_ok = offs_k < K - kk * BLOCK_K
            a = tl.load(a_ptrs, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
            bg = tl.load(g_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
            bu = tl.load(u_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        acc_g = tl.dot(a, bg, acc_g)
        acc_u = tl.dot(a, bu, acc_u)
        a_ptrs += BLOCK_K
        g_ptrs += BLOCK_K * stride_wk
        u_ptrs += BLOCK_K * stride_wk

    h = acc_g * tl.sigmoid(acc_g) * acc_u
    o_ptrs = out_ptr + pair[:, None].to(tl.int64) * stride_om + offs_n[None, :]
    tl.store(o_ptrs, h.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & n_ok[None, :])


@triton.jit
def _moe_down_kernel(
    a_ptr, w_ptr, out_ptr, weights_ptr, sorted_ptr, pad_end_ptr, num_padded_ptr,
    N, K, S, max_padded,
    stride_am, stride_we, stride_wn, stride_wk, stride_om,
    E: tl.constexpr, NB: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    EVEN_K: tl.constexpr,
):
    """out[pair, n] = routing_weight[pair] * (a[pair] . W[e, n]); w: [E, N, K]."""
    pid_m, pid_n = _block_coords(max_padded, N, BLOCK_M, BLOCK_N, GROUP_M)
    row0 = pid_m * BLOCK_M
    if row0 >= tl.load(num_padded_ptr):
        return
    e = _block_expert(pad_end_ptr, row0, E, NB)

    offs_m = row0 + tl.arange(0, BLOCK_M)
    pair = tl.load(sorted_ptr + offs_m)
    row_ok = pair < S
    pair64 = pair.to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < N
    offs_k = tl.arange(0, BLOCK_K)

    a_ptrs = a_ptr + pair64[:, None] * stride_am + offs_k[None, :]
    b_ptrs = w_ptr + e * stride_we + offs_n[None, :].to(tl.int64) * stride_wn + offs_k[:, None] * stride_wk

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kk in range(0, tl.cdiv(K, BLOCK_K)):
        if EVEN_K:
            a = tl.load(a_ptrs, mask=row_ok[:, None], other=0.0)
            b = tl.load(b_ptrs, mask=n_ok[None, :], other=0.0)
        else:
            k_ok = offs_k < K - kk * BLOCK_K
            a = tl.load(a_ptrs, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
            b = tl.load(b_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        acc = tl.dot(a, b, acc)
        a_ptrs += BLOCK_K
        b_ptrs += BLOCK_K * stride_wk

    rw = tl.load(weights_ptr + pair64, mask=row_ok, other=0.0).to(tl.float32)
    acc = acc * rw[:, None]
    o_ptrs = out_ptr + pair64[:, None] * stride_om + offs_n[None, :]
    tl.store(o_ptrs, acc.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & n_ok[None, :])


# num_stages that fit, per (kernel, constexprs): found on the first (uncaptured) call, reused after.
_STAGES: dict = {}


def _launch(kernel, grid, cfg, args, constexprs):
    """Launch with cfg's num_stages, or fewer if the shared memory does not fit (first call only)."""
    key = (kernel.__name__ if hasattr(kernel, "__name__") else id(kernel), tuple(sorted(constexprs.items())),
           cfg["num_warps"], cfg["num_stages"])
    stages = _STAGES.get(key, cfg["num_stages"])
    while True:
        try:
            kernel[grid](*args, **constexprs, num_warps=cfg["num_warps"], num_stages=stages)
            _STAGES[key] = stages
            return
        except triton.runtime.errors.OutOfResources:
            if stages <= 1:
                raise
            stages -= 1


def fused_moe(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, topi: torch.Tensor, topw: torch.Tensor,
              config: dict | None = None, may_drop: bool = False) -> torch.Tensor:
    """Routed experts of an MoE layer. x [T, H] bf16; w13 [E, 2F, H]; w2 [E, H, F];
    topi [T, k] expert ids (>= E: dropped); topw [T, k] routing weights. Returns [T, H].

    No host synchronisation: every size is known from T, k and E on the host."""
    T, H = x.shape
    E, two_f, H2 = w13.shape
    F = two_f // 2
    assert H2 == H and w2.shape == (E, H, F), (x.shape, w13.shape, w2.shape)
    assert x.stride(1) == 1 and w13.stride(2) == 1 and w2.stride(2) == 1
    k = topi.shape[1]
    S = T * k
    cfg = config or pick_config(S, E)
    BM, BN, BK = cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["BLOCK_K"]
    NB = next_pow2(E + 1)
    sorted_ids, pad_end, num_padded, max_padded = moe_align(topi, E, BM)
    weights = topw.reshape(-1)
    if not weights.is_contiguous():
        weights = weights.contiguous()

    inter = torch.empty((S, F), dtype=x.dtype, device=x.device)
    grid1 = ((max_padded // BM) * triton.cdiv(F, BN),)
    _launch(_moe_gate_up_kernel, grid1, cfg, (
        x, w13, inter, sorted_ids, pad_end, num_padded,
        F, H, S, max_padded,
        x.stride(0), w13.stride(0), w13.stride(1), w13.stride(2), inter.stride(0)),
        dict(E=E, NB=NB, TOP_K=k, BLOCK_M=BM, BLOCK_N=BN, BLOCK_K=BK, GROUP_M=cfg["GROUP_M"],
             EVEN_K=(H % BK == 0)))

    # Pairs dropped by capacity are never written: zero their rows so the top-k sum ignores them.
    pairs_out = (torch.zeros if may_drop else torch.empty)((S, H), dtype=x.dtype, device=x.device)
    grid2 = ((max_padded // BM) * triton.cdiv(H, BN),)
    _launch(_moe_down_kernel, grid2, cfg, (
        inter, w2, pairs_out, weights, sorted_ids, pad_end, num_padded,
        H, F, S, max_padded,
        inter.stride(0), w2.stride(0), w2.stride(1), w2.stride(2), pairs_out.stride(0)),
        dict(E=E, NB=NB, BLOCK_M=BM, BLOCK_N=BN, BLOCK_K=BK, GROUP_M=cfg["GROUP_M"],
             EVEN_K=(F % BK == 0)))
    if k == 1:
        return pairs_out
    return pairs_out.view(T, k, H).sum(dim=1)
