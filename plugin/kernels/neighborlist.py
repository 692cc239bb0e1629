"""Padded neighbor list of open (non-periodic) replicas in two Triton passes, for the CUDA fast path.

Math: the same list as ``openmmflash.neighbors.build_neighbor_list`` with ``box=None`` and ``capacity > 0``::

    pairs (j -> i), i and j in the same replica, j != i, |r_j - r_i|^2 < r_c^2
    order: by destination i, then source j ascending; unused slots src = dst = -1; num_pairs = true count

Pass 1 counts each bead's neighbours (one program per bead, its replica's beads in tiles of BLOCK_J); an exclusive
cumulative sum gives each row's first slot; pass 2 recomputes the tests and writes the row's pairs in order (a
prefix sum inside every tile), dropping those past ``capacity``. No [B, n, n] tensors (the torch version writes
~3 of them per call) and no host synchronization, so it runs inside CUDA graphs. The test |d|^2 is evaluated the
same way for (i, j) and (j, i) (the differences are exact negatives), so the list stays symmetric.
"""

import os
from typing import Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

BLOCK_J = 128  # candidate sources per tile


@triton.jit
def _pair_test(POS, i, base, j, n, cutoff2):
    """Mask [BLOCK_J] of the sources base + j (j < n) within the cutoff of bead i (itself excluded)."""
    m = j < n
    row = base + j
    d2 = tl.zeros(j.shape, dtype=tl.float32)
    for k in tl.static_range(3):
        c = tl.load(POS + row * 3 + k, mask=m, other=0.0) - tl.load(POS + i * 3 + k)
        d2 += c * c
    return m & (d2 < cutoff2) & (row != i)


@triton.jit
def _count_kernel(POS, COUNT, n, cutoff2, BLOCK: tl.constexpr):
    i = tl.program_id(0).to(tl.int64)
    base = (i // n) * n
    count = 0
    for j0 in range(0, n, BLOCK):
        keep = _pair_test(POS, i, base, j0 + tl.arange(0, BLOCK), n, cutoff2)
        count += tl.sum(keep.to(tl.int32), axis=0)
    tl.store(COUNT + i, count)


@triton.jit
def _fill_kernel(POS, FIRST, SRC, DST, n, cutoff2, capacity, BLOCK: tl.constexpr):
    i = tl.program_id(0).to(tl.int64)
    base = (i // n) * n
    slot0 = tl.load(FIRST + i)
    for j0 in range(0, n, BLOCK):
        j = j0 + tl.arange(0, BLOCK)
        keep = _pair_test(POS, i, base, j, n, cutoff2)
        flag = keep.to(tl.int64)
        slot = slot0 + tl.cumsum(flag, axis=0) - 1
        ok = keep & (slot < capacity)
        tl.store(SRC + slot, base + j, mask=ok)
        tl.store(DST + slot, i + 0 * j, mask=ok)
        slot0 += tl.sum(flag, axis=0)


def neighbor_list_open(positions: Tensor, num_replicas: int, cutoff: float,
                       capacity: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """(src [capacity], dst [capacity], shifts [capacity, 3] (zeros), num_pairs []) of open replicas; positions
    [B * n, 3] float32 on CUDA (or CPU under TRITON_INTERPRET=1), ``capacity > 0``."""
    total = positions.shape[0]
    if capacity <= 0:
        raise ValueError("the neighbor-list kernels build padded lists only (capacity > 0)")
    if num_replicas <= 0 or total % num_replicas != 0:
        raise ValueError(f"{total} particles cannot be split into {num_replicas} equal replicas")
    if positions.dtype != torch.float32:
        raise ValueError(f"the neighbor-list kernels compute in float32, got {positions.dtype}")
    if not positions.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError("the neighbor-list kernels run on CUDA tensors (or on CPU under TRITON_INTERPRET=1)")
    device = positions.device
    src = torch.full((capacity,), -1, dtype=torch.int64, device=device)
    dst = torch.full((capacity,), -1, dtype=torch.int64, device=device)
    shifts = torch.zeros((capacity, 3), dtype=positions.dtype, device=device)
    if total == 0:
        return src, dst, shifts, torch.zeros((), dtype=torch.int64, device=device)
    n = total // num_replicas
    pos = positions.detach().contiguous()
    count = torch.empty(total, dtype=torch.int32, device=device)
    cutoff2 = float(cutoff) * float(cutoff)
    block = min(BLOCK_J, max(16, triton.next_power_of_2(n)))
    _count_kernel[(total,)](pos, count, n, cutoff2, BLOCK=block)
    ends = torch.cumsum(count.to(torch.int64), 0)
    first = ends - count
    _fill_kernel[(total,)](pos, first, src, dst, n, cutoff2, capacity, BLOCK=block)
    return src, dst, shifts, ends[-1]
