"""Pair distances of a symmetric, dst-sorted pair list and their row-owned positions gradient (no atomics).

Math, per directed pair e = (j -> i) with image shift s_e (see ``openmmflash.schnet.reference.pair_distances``)::

    v_e = r_j - r_i + s_e,   d_e = |v_e|                 (padding pairs: d = 2 r_c, no gradient)

VJP for g = dL/dd [P]. Bead i appears as the destination of e = (j -> i) and as the source of its reverse
rev(e) = (i -> j), whose vector is -v_e (same distance), so::

    dL/dr_i = sum_{e: dst=i} -(g_e + g_rev(e)) v_e / d_e                     row i owns dL/dr_i

``rev`` is found per pair by a binary search of i among the (ascending) sources of row j, as
``openmmflash.neighbors`` lists them. This replaces the two scatter-adds (atomics over [P, 3]) of the autograd
backward of ``pair_distances`` with one pass over the rows.

Caution: needs a symmetric list whose rows hold their sources in ascending order (``build_neighbor_list`` does);
float32 CUDA tensors, or CPU under the Triton interpreter.
"""

import math
import os

import torch
import triton
import triton.language as tl
from torch import Tensor

from openmmflash.schnet.reference import pair_distances

BLOCK_P = 256   # pairs per program of the distance and reverse-index kernels
BLOCK_ROW = 16  # pairs per step of the row-owned gradient kernel


@triton.jit
def _distance_kernel(POS, SRC, DST, SHIFT, DIST, P, cutoff, BLOCK: tl.constexpr):
    """d_e = |r_src - r_dst + s_e| for valid pairs, 2 cutoff for padding (dst < 0)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < P
    dst = tl.load(DST + offs, mask=mask, other=-1)
    valid = mask & (dst >= 0)
    src = tl.load(SRC + offs, mask=valid, other=0)
    dst = tl.where(valid, dst, 0)
    d2 = tl.zeros((BLOCK,), dtype=tl.float32)
    for k in tl.static_range(3):
        v = (tl.load(POS + src * 3 + k, mask=valid, other=0.0) - tl.load(POS + dst * 3 + k, mask=valid, other=0.0)
             + tl.load(SHIFT + offs * 3 + k, mask=valid, other=0.0))
        d2 += v * v
    tl.store(DIST + offs, tl.where(valid, tl.sqrt(d2), 2.0 * cutoff), mask=mask)


@triton.jit
def _reverse_kernel(SRC, DST, ROWPTR, REV, N, steps, BLOCK: tl.constexpr):
    """rev[e] = index of the pair (dst_e -> src_e): binary search of dst_e among the sources of row src_e."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < tl.load(ROWPTR + N)
    j = tl.load(SRC + offs, mask=mask, other=0)
    i = tl.load(DST + offs, mask=mask, other=0)
    lo = tl.load(ROWPTR + j, mask=mask, other=0)
    hi = tl.load(ROWPTR + j + 1, mask=mask, other=0)
    for _ in range(steps):
        open_ = lo < hi
        mid = (lo + hi) // 2
        v = tl.load(SRC + mid, mask=mask & open_, other=0)
        go_right = open_ & (v < i)
        lo = tl.where(go_right, mid + 1, lo)
        hi = tl.where(open_ & ~go_right, mid, hi)
    tl.store(REV + offs, lo, mask=mask)


@triton.jit
def _row_grad_kernel(POS, SRC, SHIFT, DIST, GRAD, REV, ROWPTR, GRAD_POS, BLOCK: tl.constexpr):
    """dL/dr_i = -sum over row i of (g_e + g_rev(e)) v_e / d_e (every row written)."""
    row = tl.program_id(0).to(tl.int64)
    start = tl.load(ROWPTR + row)
    end = tl.load(ROWPTR + row + 1)
    offs = tl.arange(0, BLOCK)
    rx = tl.load(POS + row * 3)
    ry = tl.load(POS + row * 3 + 1)
    rz = tl.load(POS + row * 3 + 2)
    ax = tl.zeros((BLOCK,), dtype=tl.float32)
    ay = tl.zeros((BLOCK,), dtype=tl.float32)
    az = tl.zeros((BLOCK,), dtype=tl.float32)
    for e0 in range(start, end, BLOCK):
        e = e0 + offs
        mask = e < end
        j = tl.load(SRC + e, mask=mask, other=0)
        rev = tl.load(REV + e, mask=mask, other=0)
        d = tl.load(DIST + e, mask=mask, other=1.0)
        g = tl.load(GRAD + e, mask=mask, other=0.0) + tl.load(GRAD + rev, mask=mask, other=0.0)
        scale = tl.where(d > 0, g / d, 0.0)
        ax += scale * (tl.load(POS + j * 3, mask=mask, other=0.0) - rx + tl.load(SHIFT + e * 3, mask=mask, other=0.0))
        ay += scale * (tl.load(POS + j * 3 + 1, mask=mask, other=0.0) - ry
                       + tl.load(SHIFT + e * 3 + 1, mask=mask, other=0.0))
        az += scale * (tl.load(POS + j * 3 + 2, mask=mask, other=0.0) - rz
                       + tl.load(SHIFT + e * 3 + 2, mask=mask, other=0.0))
    tl.store(GRAD_POS + row * 3, -tl.sum(ax, axis=0))
    tl.store(GRAD_POS + row * 3 + 1, -tl.sum(ay, axis=0))
    tl.store(GRAD_POS + row * 3 + 2, -tl.sum(az, axis=0))


def _check(positions: Tensor, src: Tensor, shifts: Tensor, rowptr: Tensor) -> None:
    if positions.dtype != torch.float32 or shifts.dtype != torch.float32:
        raise ValueError(f"the pair-distance kernels compute in float32, got {positions.dtype} / {shifts.dtype}")
    if not positions.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError("the pair-distance kernels run on CUDA tensors (or on CPU under TRITON_INTERPRET=1)")
    if rowptr.shape[0] != positions.shape[0] + 1 or shifts.shape != (src.shape[0], 3):
        raise ValueError(f"inconsistent shapes: positions {tuple(positions.shape)}, rowptr {tuple(rowptr.shape)}, "
                         f"shifts {tuple(shifts.shape)}, src {tuple(src.shape)}")


def distances_forward(positions: Tensor, src: Tensor, dst: Tensor, shifts: Tensor, cutoff: float) -> Tensor:
    """dist [P] of the listed pairs (padding: 2 cutoff)."""
    dist = torch.empty(src.shape, dtype=torch.float32, device=positions.device)
    if src.shape[0]:
        _distance_kernel[(triton.cdiv(src.shape[0], BLOCK_P),)](positions.contiguous(), src.contiguous(),
                                                               dst.contiguous(), shifts.contiguous(), dist,
                                                               src.shape[0], float(cutoff), BLOCK=BLOCK_P)
    return dist


def reverse_pairs(src: Tensor, dst: Tensor, rowptr: Tensor) -> Tensor:
    """rev [P] int64: index of the reverse pair of every valid pair (entries past the valid pairs: unset)."""
    rev = torch.zeros_like(src)
    n = rowptr.shape[0] - 1
    if src.shape[0]:
        steps = int(math.ceil(math.log2(max(n, 1) + 1))) + 1
        _reverse_kernel[(triton.cdiv(src.shape[0], BLOCK_P),)](src.contiguous(), dst.contiguous(),
                                                              rowptr.contiguous(), rev, n, steps, BLOCK=BLOCK_P)
    return rev


def distances_backward(grad_dist: Tensor, positions: Tensor, src: Tensor, dst: Tensor, shifts: Tensor,
                       dist: Tensor, rowptr: Tensor) -> Tensor:
    """dL/dpositions [N, 3] for dL/ddist = grad_dist [P] (symmetric list, rows with ascending sources)."""
    _check(positions, src, shifts, rowptr)
    grad_pos = torch.empty_like(positions)
    n = positions.shape[0]
    if n == 0:
        return grad_pos
    rev = reverse_pairs(src, dst, rowptr)
    _row_grad_kernel[(n,)](positions.contiguous(), src.contiguous(), shifts.contiguous(), dist.contiguous(),
                           grad_dist.to(torch.float32).contiguous(), rev, rowptr.contiguous(), grad_pos,
                           BLOCK=BLOCK_ROW)
    return grad_pos


# torch.library registration: openmmflash::pair_distances_rows (+ backward op, fake and autograd).

@torch.library.custom_op("openmmflash::pair_distances_rows", mutates_args=())
def pair_distances_rows(positions: Tensor, src: Tensor, dst: Tensor, shifts: Tensor, rowptr: Tensor, cutoff: float,
                        kernel: bool) -> Tensor:
    """Distances [P] of a symmetric dst-sorted pair list (``rowptr``: ``pair_rowptr``); padding 2 cutoff.
    ``kernel``: the Triton kernels (float32), otherwise ``pair_distances``. The gradient is row-owned."""
    if kernel and positions.dtype == torch.float32:
        _check(positions, src, shifts, rowptr)
        return distances_forward(positions, src, dst, shifts, cutoff)
    return pair_distances(positions, src, dst, shifts, cutoff)[0]


@pair_distances_rows.register_fake
def _pair_distances_rows_fake(positions, src, dst, shifts, rowptr, cutoff, kernel):
    return positions.new_empty(src.shape)


@torch.library.custom_op("openmmflash::pair_distances_rows_backward", mutates_args=())
def pair_distances_rows_backward(grad_dist: Tensor, positions: Tensor, src: Tensor, dst: Tensor, shifts: Tensor,
                                 dist: Tensor, rowptr: Tensor) -> Tensor:
    """dL/dpositions [N, 3] of ``pair_distances_rows`` (kernel path)."""
    return distances_backward(grad_dist, positions, src, dst, shifts, dist, rowptr)


@pair_distances_rows_backward.register_fake
def _pair_distances_rows_backward_fake(grad_dist, positions, src, dst, shifts, dist, rowptr):
    return torch.empty_like(positions)


def _setup(ctx, inputs, output):
    positions, src, dst, shifts, rowptr, cutoff, kernel = inputs
    ctx.save_for_backward(positions, src, dst, shifts, rowptr, output)
    ctx.params = (cutoff, kernel)


def _backward(ctx, grad_dist):
    positions, src, dst, shifts, rowptr, dist = ctx.saved_tensors
    cutoff, kernel = ctx.params
    if kernel and positions.dtype == torch.float32:
        grad = torch.ops.openmmflash.pair_distances_rows_backward(grad_dist, positions, src, dst, shifts, dist,
                                                                  rowptr)
    else:
        leaf = positions.detach().requires_grad_(True)
        with torch.enable_grad():
            out = pair_distances(leaf, src, dst, shifts, cutoff)[0]
            (grad,) = torch.autograd.grad(out, leaf, grad_dist)
    return grad, None, None, None, None, None, None


pair_distances_rows.register_autograd(_backward, setup_context=_setup)
