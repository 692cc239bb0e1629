"""Pair distances of a dst-sorted pair list and their positions gradient in one pass over the rows.

Math, per directed pair e = (j -> i) with image shift s_e (see ``openmmflash.schnet.reference.pair_distances``)::

    v_e = r_j - r_i + s_e,   d_e = |v_e|                 (padding pairs: d = 2 r_c, no gradient)

VJP for g = dL/dd [P], u_e = g_e v_e / d_e::

    dL/dr_i -= u_e   (row i, summed in registers)        dL/dr_j += u_e   (relaxed atomic add, only where g_e != 0)

One program per destination row; no reverse-pair search and no [P, 3] intermediates (the autograd backward of
``pair_distances`` does two scatter-adds over [P, 3]). With the table kernels' pair scheme dL/dd is zero on every
pair whose source is below its destination, so half the pairs issue no atomics.

Float32 CUDA tensors, or CPU under the Triton interpreter; the atomics make the sums not bitwise reproducible.
"""

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

from openmmflash.schnet.reference import pair_distances

BLOCK_P = 256   # pairs per program of the distance kernel
BLOCK_ROW = 16  # pairs per step of the gradient kernel


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
def _scatter_grad_kernel(POS, SRC, SHIFT, DIST, GRAD, ROWPTR, GRAD_POS, BLOCK: tl.constexpr):
    """dL/dr_i -= sum over row i of u_e, dL/dr_src(e) += u_e (GRAD_POS zero-initialized, atomic adds)."""
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
        d = tl.load(DIST + e, mask=mask, other=1.0)
        g = tl.load(GRAD + e, mask=mask, other=0.0)
        scale = tl.where(d > 0, g / d, 0.0)
        ux = scale * (tl.load(POS + j * 3, mask=mask, other=0.0) - rx + tl.load(SHIFT + e * 3, mask=mask, other=0.0))
        uy = scale * (tl.load(POS + j * 3 + 1, mask=mask, other=0.0) - ry
                      + tl.load(SHIFT + e * 3 + 1, mask=mask, other=0.0))
        uz = scale * (tl.load(POS + j * 3 + 2, mask=mask, other=0.0) - rz
                      + tl.load(SHIFT + e * 3 + 2, mask=mask, other=0.0))
        ax += ux
        ay += uy
        az += uz
        send = mask & (g != 0.0)
        tl.atomic_add(GRAD_POS + j * 3, ux, mask=send, sem="relaxed")
        tl.atomic_add(GRAD_POS + j * 3 + 1, uy, mask=send, sem="relaxed")
        tl.atomic_add(GRAD_POS + j * 3 + 2, uz, mask=send, sem="relaxed")
    tl.atomic_add(GRAD_POS + row * 3, -tl.sum(ax, axis=0), sem="relaxed")
    tl.atomic_add(GRAD_POS + row * 3 + 1, -tl.sum(ay, axis=0), sem="relaxed")
    tl.atomic_add(GRAD_POS + row * 3 + 2, -tl.sum(az, axis=0), sem="relaxed")


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


def distances_backward(grad_dist: Tensor, positions: Tensor, src: Tensor, shifts: Tensor,
                       dist: Tensor, rowptr: Tensor) -> Tensor:
    """dL/dpositions [N, 3] for dL/ddist = grad_dist [P] (dst-sorted list with destination offsets ``rowptr``)."""
    _check(positions, src, shifts, rowptr)
    grad_pos = torch.zeros_like(positions)  # atomic adds
    n = positions.shape[0]
    if n == 0:
        return grad_pos
    _scatter_grad_kernel[(n,)](positions.contiguous(), src.contiguous(), shifts.contiguous(), dist.contiguous(),
                               grad_dist.to(torch.float32).contiguous(), rowptr.contiguous(), grad_pos,
                               BLOCK=BLOCK_ROW)
    return grad_pos


# torch.library registration: openmmflash::pair_distances_rows (+ backward op, fake and autograd).

@torch.library.custom_op("openmmflash::pair_distances_rows", mutates_args=())
def pair_distances_rows(positions: Tensor, src: Tensor, dst: Tensor, shifts: Tensor, rowptr: Tensor, cutoff: float,
                        kernel: bool) -> Tensor:
    """Distances [P] of a dst-sorted pair list (``rowptr``: ``pair_rowptr``); padding 2 cutoff. ``kernel``: the
    Triton kernels (float32), otherwise ``pair_distances``. The gradient takes one pass over the rows."""
    if kernel and positions.dtype == torch.float32:
        _check(positions, src, shifts, rowptr)
        return distances_forward(positions, src, dst, shifts, cutoff)
    return pair_distances(positions, src, dst, shifts, cutoff)[0]


@pair_distances_rows.register_fake
def _pair_distances_rows_fake(positions, src, dst, shifts, rowptr, cutoff, kernel):
    return positions.new_empty(src.shape)


@torch.library.custom_op("openmmflash::pair_distances_rows_backward", mutates_args=())
def pair_distances_rows_backward(grad_dist: Tensor, positions: Tensor, src: Tensor, shifts: Tensor,
                                 dist: Tensor, rowptr: Tensor) -> Tensor:
    """dL/dpositions [N, 3] of ``pair_distances_rows`` (kernel path)."""
    return distances_backward(grad_dist, positions, src, shifts, dist, rowptr)


@pair_distances_rows_backward.register_fake
def _pair_distances_rows_backward_fake(grad_dist, positions, src, shifts, dist, rowptr):
    return torch.empty_like(positions)


def _setup(ctx, inputs, output):
    positions, src, dst, shifts, rowptr, cutoff, kernel = inputs
    ctx.save_for_backward(positions, src, dst, shifts, rowptr, output)
    ctx.params = (cutoff, kernel)


def _backward(ctx, grad_dist):
    positions, src, dst, shifts, rowptr, dist = ctx.saved_tensors
    cutoff, kernel = ctx.params
    if kernel and positions.dtype == torch.float32:
        grad = torch.ops.openmmflash.pair_distances_rows_backward(grad_dist, positions, src, shifts, dist,
                                                                  rowptr)
    else:
        leaf = positions.detach().requires_grad_(True)
        with torch.enable_grad():
            out = pair_distances(leaf, src, dst, shifts, cutoff)[0]
            (grad,) = torch.autograd.grad(out, leaf, grad_dist)
    return grad, None, None, None, None, None, None


pair_distances_rows.register_autograd(_backward, setup_context=_setup)
