"""Tabulated CFConv: the filter of every pair read from a cubic Hermite table, one program per destination row.

Math (see ``openmmflash.schnet.filtertable`` for the table): per directed pair e = (j -> i), distance d_e,
W_e = W(d_e) [F] interpolated from the block's table [nodes, 2, F] (values and spacing * dW/dd at the nodes)::

    m_i = sum_{e: dst=i} x_{src(e)} * W_e                                       forward, row i owns m_i

Backward (VJP) for G = dL/dm [N, F]. The pair list is symmetric (j -> i listed iff i -> j, with the same distance,
as ``openmmflash.neighbors`` builds it), so W(j -> i) = W(i -> j) and the sum over a bead's outgoing pairs is a sum
over its incoming pairs; both gradients come from the destination rows, without atomics and without a source sort::

    dL/dx_i  = sum_{e: src=i} W_e * G_{dst(e)} = sum_{e: dst=i} W_e * G_{src(e)}   row i owns dL/dx_i
    dL/dd_e  = sum_f G_{i,f} x_{src(e),f} W'_f(d_e)                                 written once per pair

The positions gradient then follows from dL/dd through ``pair_distances``. Only ``rowptr`` (destination offsets of
the dst-sorted list) is needed.

Pair scheme (``halfptr`` given): each unordered pair {i, j} is evaluated once, from row i over its pairs with
j > i (``halfptr[i]`` .. ``rowptr[i + 1]``; rows hold their sources in ascending order, as the neighbor list builds
them). One table read serves both directions; the message to the other end goes out by a relaxed atomic add::

    m_i += x_j * W_ij,   m_j += x_i * W_ij                                     (row i local, j atomic)
    dL/dx_i += W_ij G_j,  dL/dx_j += W_ij G_i                                  (row i local, j atomic)
    dL/dd_ij = sum_f W'_f(d_ij) (G_{i,f} x_{j,f} + G_{j,f} x_{i,f})            on the j > i entry; 0 on j < i

Half the table and distance reads of the row scheme, at the price of atomics (the sums are not bitwise
reproducible run to run). Per pair the kernel reads 4 F table numbers (contiguous) and gathers one (forward)
or two (backward) feature rows; the limit is L1/L2 load throughput, not FLOPs. Table storage fp32 or fp16; with an
fp16 table the kernels also gather fp16 copies of x and G (one per-tensor scale each, half the gather bytes).

Caution: the backward is correct only for symmetric pair lists (``cfconv_table`` documents it); tested on CPU
(Triton interpreter) and on NVIDIA Hopper. Gradients with respect to the table are not provided (inference only).
"""

import os
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from openmmflash.plugin.kernels.cfconv import _half
from openmmflash.schnet.filtertable import cfconv_table_reference

# (pairs per tile BLOCK_E, warps) per kernel (benchmarks may overwrite). Feature gathers are fp16 (per-tensor scale)
# with fp16 tables, the fast and less accurate mode; fp32 with fp32 tables.
TABLE_TILES = {("fwd", "fp32"): (8, 4), ("bwd", "fp32"): (8, 4),
               ("fwd", "fp16"): (8, 4), ("bwd", "fp16"): (32, 4)}  # tuned on an H100 (Triton 3.6), B = 128
PAIR_TILES = {("fwd", "fp32"): (8, 4), ("bwd", "fp32"): (8, 4),
              ("fwd", "fp16"): (16, 4), ("bwd", "fp16"): (8, 4)}  # the pair scheme's, tuned on an H100, B = 128


@triton.jit
def _hermite(TABLE, d, mask_e, offs_f, mask_f, inv_h, n_nodes, cutoff, F, DERIV: tl.constexpr):
    """W [BE, BF] (and W' [BE, BF] when DERIV) of distances d [BE] from a [nodes, 2, F] Hermite table; zero for
    d >= cutoff and for masked rows, NaN for NaN distances."""
    u = d * inv_h
    safe = tl.where(u == u, u, 0.0)  # NaN -> node 0; s below stays NaN
    kf = tl.floor(tl.minimum(tl.maximum(safe, 0.0), n_nodes - 2.0))
    s = (u - kf)[:, None]
    base = kf.to(tl.int64) * (2 * F)
    ptr = TABLE + base[:, None] + offs_f[None, :]
    m2 = mask_e[:, None] & mask_f[None, :]
    w0 = tl.load(ptr, mask=m2, other=0.0).to(tl.float32)
    d0 = tl.load(ptr + F, mask=m2, other=0.0).to(tl.float32)
    w1 = tl.load(ptr + 2 * F, mask=m2, other=0.0).to(tl.float32)
    d1 = tl.load(ptr + 3 * F, mask=m2, other=0.0).to(tl.float32)
    # Hermite basis in difference form: w1 - w0 of neighbouring nodes is exact in float32, so the rounding of the
    # node values is not divided by the spacing in W'.
    diff = w1 - w0
    t = 1.0 - s
    inside = (mask_e & ~(d >= cutoff))[:, None]
    w = w0 + (s * s * (3.0 - 2.0 * s)) * diff + (s * t * t) * d0 - (s * s * t) * d1
    w = tl.where(inside, w, 0.0)
    dw = w
    if DERIV:
        dw = ((6.0 * s * t) * diff + (t * (1.0 - 3.0 * s)) * d0 + (s * (3.0 * s - 2.0)) * d1) * inv_h
        dw = tl.where(inside, dw, 0.0)
    return w, dw


@triton.jit
def _row_span(ROWPTR, HALFPTR, row, PAIRS: tl.constexpr):
    """Pairs [start, end) that program ``row`` walks: all of its row, or (PAIRS) those with source > row."""
    if PAIRS:
        start = tl.load(HALFPTR + row)
    else:
        start = tl.load(ROWPTR + row)
    return start, tl.load(ROWPTR + row + 1)


@triton.jit
def _pair_tile(DIST, SRC, e0, offs_e, end, cutoff):
    """(indices, mask, distances, sources) [BLOCK_E] of the tile of pairs from e0 (padding lanes: d = 2 r_c)."""
    rows = e0 + offs_e
    mask_e = rows < end
    d = tl.load(DIST + rows, mask=mask_e, other=2.0 * cutoff)
    src = tl.load(SRC + rows, mask=mask_e, other=0)
    return rows, mask_e, d, src


@triton.jit
def _table_fwd_kernel(
    X,        # [N, F] source features x = lin1(h), fp32 (or fp16 x / XSCALE when X16)
    DIST,     # [P] fp32 pair distances, dst-sorted order (padding last)
    SRC,      # [P] int64 source bead of each pair
    ROWPTR,   # [N + 1] int64 destination offsets
    HALFPTR,  # [N] int64 first pair of row i with source > i (read when PAIRS)
    TABLE,    # [nodes, 2, F] Hermite table of this block (fp32 or fp16)
    OUT,      # [N, F] fp32 output m: every row stored (rows), or zero-initialized for atomic adds (PAIRS)
    XSCALE,   # [1] fp32 scale of X when X16
    F,        # filters F' (runtime)
    n_nodes,  # table nodes (runtime)
    inv_h,    # 1 / node spacing, 1 / model length unit
    cutoff,   # cutoff radius r_c, model length unit
    X16: tl.constexpr, PAIRS: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_F: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    start, end = _row_span(ROWPTR, HALFPTR, row, PAIRS)
    offs_e = tl.arange(0, BLOCK_E)
    offs_f = tl.arange(0, BLOCK_F)
    mask_f = offs_f < F
    xscale = 1.0
    if X16:
        xscale = tl.load(XSCALE)
    xi = tl.zeros((BLOCK_F,), dtype=tl.float32)
    if PAIRS:
        xi = tl.load(X + row * F + offs_f, mask=mask_f, other=0.0).to(tl.float32) * xscale
    acc = tl.zeros((BLOCK_E, BLOCK_F), dtype=tl.float32)
    for e0 in range(start, end, BLOCK_E):
        rows, mask_e, d, src = _pair_tile(DIST, SRC, e0, offs_e, end, cutoff)
        w, _ = _hermite(TABLE, d, mask_e, offs_f, mask_f, inv_h, n_nodes, cutoff, F, False)
        m2 = mask_e[:, None] & mask_f[None, :]
        xs = tl.load(X + src[:, None] * F + offs_f[None, :], mask=m2, other=0.0)
        acc += w * xs.to(tl.float32)
        if PAIRS:
            tl.atomic_add(OUT + src[:, None] * F + offs_f[None, :], w * xi[None, :], mask=m2, sem="relaxed")
    m = tl.sum(acc, axis=0) * xscale
    if PAIRS:
        tl.atomic_add(OUT + row * F + offs_f, m, mask=mask_f, sem="relaxed")
    else:
        tl.store(OUT + row * F + offs_f, m, mask=mask_f)


@triton.jit
def _table_bwd_kernel(
    X,          # [N, F] source features of the forward, fp32 (or fp16 when X16)
    G,          # [N, F] upstream gradient dL/dm, fp32 (or fp16 when X16)
    DIST,       # [P] fp32 pair distances, dst-sorted order
    SRC,        # [P] int64 source bead of each pair
    ROWPTR,     # [N + 1] int64 destination offsets
    HALFPTR,    # [N] int64 first pair of row i with source > i (read when PAIRS)
    TABLE,      # [nodes, 2, F] Hermite table of this block
    GRAD_X,     # [N, F] fp32 output dL/dx: every row stored (rows), or zero-initialized for atomic adds (PAIRS)
    GRAD_DIST,  # [P] fp32 output dL/dd, zero-initialized (padding, and with PAIRS the source < destination pairs)
    XSCALE,     # [1] fp32 scale of X when X16
    GSCALE,     # [1] fp32 scale of G when X16
    F, n_nodes, inv_h, cutoff,
    X16: tl.constexpr, PAIRS: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_F: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    start, end = _row_span(ROWPTR, HALFPTR, row, PAIRS)
    offs_e = tl.arange(0, BLOCK_E)
    offs_f = tl.arange(0, BLOCK_F)
    mask_f = offs_f < F
    xscale = 1.0
    gscale = 1.0
    if X16:
        xscale = tl.load(XSCALE)
        gscale = tl.load(GSCALE)
    gi = tl.load(G + row * F + offs_f, mask=mask_f, other=0.0).to(tl.float32) * gscale   # true G_i
    gi_x = gi * xscale  # multiplies the stored x_j
    xi_g = tl.zeros((BLOCK_F,), dtype=tl.float32)
    if PAIRS:
        xi_g = tl.load(X + row * F + offs_f, mask=mask_f, other=0.0).to(tl.float32) * (xscale * gscale)
    acc = tl.zeros((BLOCK_E, BLOCK_F), dtype=tl.float32)
    for e0 in range(start, end, BLOCK_E):
        rows, mask_e, d, src = _pair_tile(DIST, SRC, e0, offs_e, end, cutoff)
        w, dw = _hermite(TABLE, d, mask_e, offs_f, mask_f, inv_h, n_nodes, cutoff, F, True)
        m2 = mask_e[:, None] & mask_f[None, :]
        gs = tl.load(G + src[:, None] * F + offs_f[None, :], mask=m2, other=0.0).to(tl.float32)
        xs = tl.load(X + src[:, None] * F + offs_f[None, :], mask=m2, other=0.0).to(tl.float32)
        acc += w * gs
        term = xs * gi_x[None, :]
        if PAIRS:
            tl.atomic_add(GRAD_X + src[:, None] * F + offs_f[None, :], w * gi[None, :], mask=m2, sem="relaxed")
            term += gs * xi_g[None, :]
        tl.store(GRAD_DIST + rows, tl.sum(dw * term, axis=1), mask=mask_e)
    gx = tl.sum(acc, axis=0) * gscale
    if PAIRS:
        tl.atomic_add(GRAD_X + row * F + offs_f, gx, mask=mask_f, sem="relaxed")
    else:
        tl.store(GRAD_X + row * F + offs_f, gx, mask=mask_f)


def _check(x: Tensor, dist: Tensor, src: Tensor, rowptr: Tensor, table: Tensor) -> None:
    if x.dtype != torch.float32 or dist.dtype != torch.float32:
        raise ValueError(f"the table CFConv kernels compute in float32; got x {x.dtype} and dist {dist.dtype}")
    if not x.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError("the table CFConv kernels run on CUDA tensors (or on CPU under TRITON_INTERPRET=1)")
    if table.dim() != 3 or table.shape[1] != 2 or table.shape[2] != x.shape[1] or table.shape[0] < 2:
        raise ValueError(f"filter table must be [nodes >= 2, 2, F'] with F' = {x.shape[1]}, got {tuple(table.shape)}")
    if table.dtype not in (torch.float32, torch.float16):
        raise ValueError(f"the table CFConv kernels read fp32 or fp16 tables, got {table.dtype}")
    if rowptr.shape[0] != x.shape[0] + 1 or dist.shape != src.shape:
        raise ValueError(f"inconsistent shapes: x {tuple(x.shape)}, rowptr {tuple(rowptr.shape)} (want [N + 1]), "
                         f"dist {tuple(dist.shape)}, src {tuple(src.shape)}")


def _features(t: Tensor, x16: bool) -> Tuple[Tensor, Tensor]:
    if x16:
        return _half(t)
    return t.contiguous(), t.new_ones(1)


def cfconv_table_forward(x: Tensor, dist: Tensor, src: Tensor, rowptr: Tensor, table: Tensor, spacing: float,
                         cutoff: float, halfptr: Optional[Tensor] = None) -> Tensor:
    """m [N, F'] = sum over each destination's pairs of x[src] * W(d) (W from the Hermite ``table``); with
    ``halfptr`` [N] (``build_halfptr``) by the pair scheme, each unordered pair once."""
    _check(x, dist, src, rowptr, table)
    n, f = x.shape
    if n == 0 or dist.shape[0] == 0:
        return torch.zeros_like(x)
    x16 = table.dtype == torch.float16
    pairs = halfptr is not None
    xk, xscale = _features(x, x16)
    out = torch.zeros_like(x) if pairs else torch.empty_like(x)  # atomic adds, or every row stored
    block_e, warps = (PAIR_TILES if pairs else TABLE_TILES)[("fwd", "fp16" if x16 else "fp32")]
    _table_fwd_kernel[(n,)](xk, dist.contiguous(), src.contiguous(), rowptr.contiguous(),
                            (halfptr if pairs else rowptr).contiguous(), table.contiguous(), out, xscale, f,
                            table.shape[0], 1.0 / float(spacing), float(cutoff), X16=x16, PAIRS=pairs,
                            BLOCK_E=block_e, BLOCK_F=max(16, triton.next_power_of_2(f)), num_warps=warps)
    return out


def cfconv_table_backward(grad_out: Tensor, x: Tensor, dist: Tensor, src: Tensor, rowptr: Tensor, table: Tensor,
                          spacing: float, cutoff: float, halfptr: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """(dL/dx [N, F'], dL/dd [P]) of ``cfconv_table_forward`` for dL/dm = ``grad_out`` (symmetric pair list; with
    ``halfptr`` the pair scheme, whose dL/dd sits on the source > destination entry of each pair)."""
    _check(x, dist, src, rowptr, table)
    n, f = x.shape
    grad_dist = torch.zeros_like(dist)
    if n == 0 or dist.shape[0] == 0:
        return torch.zeros_like(x), grad_dist
    x16 = table.dtype == torch.float16
    pairs = halfptr is not None
    xk, xscale = _features(x, x16)
    gk, gscale = _features(grad_out.to(torch.float32), x16)
    grad_x = torch.zeros_like(x) if pairs else torch.empty_like(x)  # atomic adds, or every row stored
    block_e, warps = (PAIR_TILES if pairs else TABLE_TILES)[("bwd", "fp16" if x16 else "fp32")]
    _table_bwd_kernel[(n,)](xk, gk, dist.contiguous(), src.contiguous(), rowptr.contiguous(),
                            (halfptr if pairs else rowptr).contiguous(), table.contiguous(), grad_x, grad_dist,
                            xscale, gscale, f, table.shape[0], 1.0 / float(spacing), float(cutoff), X16=x16,
                            PAIRS=pairs, BLOCK_E=block_e, BLOCK_F=max(16, triton.next_power_of_2(f)),
                            num_warps=warps)
    return grad_x, grad_dist


def build_rowptr(dst: Tensor, num_nodes: int) -> Tensor:
    """Destination offsets rowptr [N + 1] int64 of a dst-sorted pair list dst [P] (padding dst = -1 last)."""
    key = torch.where(dst >= 0, dst, torch.full_like(dst, num_nodes)).to(torch.int32)
    return torch.searchsorted(key, torch.arange(num_nodes + 1, dtype=torch.int32, device=dst.device))


def build_halfptr(src: Tensor, dst: Tensor, num_nodes: int) -> Tensor:
    """halfptr [N] int64: index of the first pair of row i whose source is > i, for a dst-sorted list whose rows
    hold their sources in ascending order (``openmmflash.neighbors``; padding dst = -1 last)."""
    n = int(num_nodes)
    key = torch.where(dst >= 0, dst * n + src, torch.full_like(dst, n * n))
    rows = torch.arange(n, dtype=key.dtype, device=dst.device)
    return torch.searchsorted(key, rows * (n + 1) + 1)


# torch.library registration: openmmflash::pair_rowptr, cfconv_table, cfconv_table_backward (fake + autograd).

@torch.library.custom_op("openmmflash::pair_rowptr", mutates_args=())
def pair_rowptr(dst: Tensor, num_nodes: int) -> Tensor:
    """rowptr [N + 1] of a dst-sorted pair list (see ``build_rowptr``); no host synchronization."""
    return build_rowptr(dst, num_nodes)


@pair_rowptr.register_fake
def _pair_rowptr_fake(dst, num_nodes):
    return dst.new_empty((num_nodes + 1,), dtype=torch.int64)


@torch.library.custom_op("openmmflash::pair_halfptr", mutates_args=())
def pair_halfptr(src: Tensor, dst: Tensor, num_nodes: int) -> Tensor:
    """halfptr [N] of the pair scheme (see ``build_halfptr``); no host synchronization."""
    return build_halfptr(src, dst, num_nodes)


@pair_halfptr.register_fake
def _pair_halfptr_fake(src, dst, num_nodes):
    return dst.new_empty((num_nodes,), dtype=torch.int64)


@torch.library.custom_op("openmmflash::cfconv_table", mutates_args=())
def cfconv_table(x: Tensor, dist: Tensor, src: Tensor, dst: Tensor, rowptr: Tensor, table: Tensor, spacing: float,
                 cutoff: float, kernel: bool, halfptr: Optional[Tensor] = None) -> Tensor:
    """CFConv m [N, F'] with the filter from one block's Hermite table [nodes, 2, F'] over a dst-sorted,
    symmetric pair list with destination offsets ``rowptr`` (``pair_rowptr``). ``kernel``: the Triton kernels
    (float32 x, fp32/fp16 table); otherwise plain torch (``cfconv_table_reference``, any dtype). ``halfptr``
    (``pair_halfptr``): the kernels' pair scheme, each unordered pair once (rows with ascending sources)."""
    if _uses_kernels(x, table, kernel):
        return cfconv_table_forward(x, dist, src, rowptr, table, spacing, cutoff, halfptr)
    return cfconv_table_reference(x, dist, src, dst, table, spacing, cutoff)


@cfconv_table.register_fake
def _cfconv_table_fake(x, dist, src, dst, rowptr, table, spacing, cutoff, kernel, halfptr=None):
    return torch.empty_like(x)


@torch.library.custom_op("openmmflash::cfconv_table_backward", mutates_args=())
def cfconv_table_backward_op(grad_out: Tensor, x: Tensor, dist: Tensor, src: Tensor, dst: Tensor, rowptr: Tensor,
                             table: Tensor, spacing: float, cutoff: float, kernel: bool,
                             halfptr: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """(dL/dx [N, F'], dL/dd [P]) of the kernel path of ``cfconv_table`` for dL/dm = grad_out (an op of its own,
    opaque to torch.compile)."""
    return cfconv_table_backward(grad_out, x, dist, src, rowptr, table, spacing, cutoff, halfptr)


@cfconv_table_backward_op.register_fake
def _cfconv_table_backward_fake(grad_out, x, dist, src, dst, rowptr, table, spacing, cutoff, kernel, halfptr=None):
    return torch.empty_like(x), torch.empty_like(dist)


def _cfconv_table_setup(ctx, inputs, output):
    x, dist, src, dst, rowptr, table, spacing, cutoff, kernel, halfptr = inputs
    ctx.save_for_backward(x, dist, src, dst, rowptr, table, halfptr)
    ctx.params = (spacing, cutoff, kernel)


def _uses_kernels(x: Tensor, table: Tensor, kernel: bool) -> bool:
    return kernel and x.dtype == torch.float32 and table.dtype != torch.float64


def _cfconv_table_autograd(ctx, grad_out):
    x, dist, src, dst, rowptr, table, halfptr = ctx.saved_tensors
    spacing, cutoff, kernel = ctx.params
    if ctx.needs_input_grad[5]:
        raise RuntimeError("the tabulated CFConv has no gradient with respect to its filter table; train with "
                           "filterMode='exact'")
    if _uses_kernels(x, table, kernel):
        grad_x, grad_dist = torch.ops.openmmflash.cfconv_table_backward(grad_out, x, dist, src, dst, rowptr, table,
                                                                        spacing, cutoff, kernel, halfptr)
    else:  # plain torch: recompute and differentiate (autograd of the Hermite polynomial)
        leaves = [x.detach().requires_grad_(True), dist.detach().requires_grad_(True)]
        with torch.enable_grad():
            out = cfconv_table_reference(leaves[0], leaves[1], src, dst, table, spacing, cutoff)
            grad_x, grad_dist = torch.autograd.grad(out, leaves, grad_out)
    need = ctx.needs_input_grad
    return (grad_x if need[0] else None, grad_dist if need[1] else None, None, None, None, None, None, None, None,
            None)


cfconv_table.register_autograd(_cfconv_table_autograd, setup_context=_cfconv_table_setup)
