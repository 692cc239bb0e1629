"""Neighbor lists for batched replicas: brute force within each replica, on the device of the positions.

Layout: positions [B * n, 3] hold B replicas of n particles each, replica b in rows b*n .. (b+1)*n - 1. Pairs are
directed (both j -> i and i -> j are listed), never cross replicas, never pair a particle with itself, and come out
sorted by destination (CSR order). Periodic boxes are OpenMM's reduced triclinic form (a along x, b in the xy
plane), in the same length unit as the positions; the minimum image convention needs cutoff <= half the smallest
box width.

Two modes:
- exact (``capacity <= 0``): the arrays have exactly as many pairs as there are (the shape changes between calls);
- padded (``capacity > 0``): arrays of fixed length ``capacity``, unused slots have src = dst = -1. No host
  synchronization is needed to build them; the true pair count is returned so the caller can detect overflow,
  and ``check_capacity`` raises instead of silently dropping pairs.

Cost: O(B n^2) distance tests and memory, fine for CG proteins of a few hundred beads and many replicas.
"""

from typing import Optional, Tuple

import torch
from torch import Tensor


def minimum_image(delta: Tensor, box: Tensor) -> Tensor:
    """Wrap displacement vectors [..., 3] into the reduced triclinic box [3, 3] (rows are box vectors)."""
    delta = delta - box[2] * torch.round(delta[..., 2:3] / box[2, 2])
    delta = delta - box[1] * torch.round(delta[..., 1:2] / box[1, 1])
    delta = delta - box[0] * torch.round(delta[..., 0:1] / box[0, 0])
    return delta


def check_box(box: Tensor, cutoff: float) -> None:
    """Raise ValueError unless ``box`` is a reduced triclinic box at least twice the cutoff wide."""
    if box.shape != (3, 3):
        raise ValueError(f"box vectors must have shape (3, 3), got {tuple(box.shape)}")
    b = box.detach().to("cpu", torch.float64)
    if bool(b[0, 1] != 0) or bool(b[0, 2] != 0) or bool(b[1, 2] != 0):
        raise ValueError("box vectors must be in OpenMM's reduced form (a = (ax, 0, 0), b = (bx, by, 0)); "
                         "use openmm.app.Topology/System box vectors, which are always reduced")
    width = float(torch.min(torch.stack([b[0, 0], b[1, 1], b[2, 2]])))
    if width < 2.0 * cutoff:
        raise ValueError(f"the periodic box is too small for the cutoff: its smallest width is {width:.4g} but the "
                         f"minimum image convention needs at least twice the cutoff ({2.0 * cutoff:.4g}), in the "
                         "same length unit. Use a larger box or a smaller cutoff.")


def build_neighbor_list(positions: Tensor, num_replicas: int, cutoff: float, box: Optional[Tensor],
                        capacity: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """All directed pairs (j -> i) with |r_j - r_i| < cutoff inside each replica.

    positions: [B * n, 3]; box: [3, 3] or None; capacity <= 0 for exact mode.
    Returns src [P] int64, dst [P] int64 (-1 padding), shifts [P, 3] (periodic image shift, so that
    r_src - r_dst + shift is the minimum-image vector) and num_pairs (0-d int64, the true count; may exceed
    ``capacity`` in padded mode).
    """
    total = positions.shape[0]
    if num_replicas <= 0 or total % num_replicas != 0:
        raise ValueError(f"{total} particles cannot be split into {num_replicas} equal replicas")
    n = total // num_replicas
    pos = positions.detach().reshape(num_replicas, n, 3)
    raw = pos.unsqueeze(1) - pos.unsqueeze(2)  # [B, i (dst), j (src), 3] = r_j - r_i
    delta = raw
    if box is not None:
        delta = minimum_image(raw, box.to(raw.dtype))
    d2 = (delta * delta).sum(-1)
    not_self = ~torch.eye(n, dtype=torch.bool, device=positions.device)
    flat = ((d2 < cutoff * cutoff) & not_self).reshape(-1)
    if capacity <= 0:
        index = flat.nonzero().squeeze(1)
        num_pairs = torch.tensor(index.shape[0], dtype=torch.int64, device=positions.device)
    else:
        rank = torch.cumsum(flat.to(torch.int64), 0) - 1
        num_pairs = rank[-1] + 1 if rank.shape[0] > 0 else torch.zeros((), dtype=torch.int64,
                                                                          device=positions.device)
        keep = flat & (rank < capacity)
        slot = torch.where(keep, rank, torch.full_like(rank, capacity))
        slots = torch.full((capacity + 1,), -1, dtype=torch.int64, device=positions.device)
        slots.scatter_(0, slot, torch.arange(flat.shape[0], dtype=torch.int64, device=positions.device))
        index = slots[:capacity]
    valid = index >= 0
    safe = torch.where(valid, index, torch.zeros_like(index))
    dst = safe // n
    src = (safe // (n * n)) * n + safe % n
    dst = torch.where(valid, dst, torch.full_like(dst, -1))
    src = torch.where(valid, src, torch.full_like(src, -1))
    shifts = (delta - raw).reshape(-1, 3).index_select(0, safe)
    shifts = torch.where(valid.unsqueeze(-1), shifts, torch.zeros_like(shifts))
    return src, dst, shifts.to(positions.dtype), num_pairs


def check_finite(positions: Tensor) -> None:
    """Raise ValueError when positions hold NaN or infinite values (synchronizes with the device)."""
    if not bool(torch.isfinite(positions).all()):
        raise ValueError("positions contain NaN or infinite values; the simulation has probably blown up (try a "
                         "smaller time step, minimize the energy first, or check the starting structure)")


def check_capacity(num_pairs: Tensor, capacity: int) -> None:
    """Raise RuntimeError when a padded list overflowed (synchronizes with the device)."""
    if capacity > 0:
        count = int(num_pairs)
        if count > capacity:
            raise RuntimeError(f"neighbor list overflow: {count} pairs within the cutoff but the padded list holds "
                               f"only {capacity}. Pass a larger capacity (e.g. neighborCapacity={int(count * 1.3)}) "
                               "or use the exact list (neighborCapacity=0).")


class NeighborList:
    """Neighbor list with an optional Verlet skin, for Python-side users (PythonForce, FlashMD).

    Parameters
    ----------
    cutoff : float
        Interaction cutoff, in the positions' length unit.
    numReplicas : int
        Number of equal, contiguous replicas in the positions array.
    skin : float
        Extra distance added to the cutoff when building; the list stays valid until a particle has moved more
        than skin / 2 since the last build.
    capacity : int
        Fixed length of the padded arrays, or 0 for exact arrays.
    """

    def __init__(self, cutoff: float, numReplicas: int = 1, skin: float = 0.0, capacity: int = 0):
        if cutoff <= 0 or skin < 0:
            raise ValueError(f"cutoff must be > 0 and skin >= 0, got cutoff={cutoff}, skin={skin}")
        self.cutoff = float(cutoff)
        self.numReplicas = int(numReplicas)
        self.skin = float(skin)
        self.capacity = int(capacity)
        self._reference = None
        self._box = None
        self.pairs = None
        self.numBuilds = 0

    def needsUpdate(self, positions: Tensor, box: Optional[Tensor] = None) -> bool:
        """True when the stored list may miss a pair at these positions."""
        if self._reference is None or self._reference.shape != positions.shape or self.skin == 0.0:
            return True
        if (box is None) != (self._box is None) or (box is not None and not torch.equal(box, self._box)):
            return True
        moved = (positions.detach() - self._reference).norm(dim=-1).max()
        return bool(moved > 0.5 * self.skin)

    def update(self, positions: Tensor, box: Optional[Tensor] = None):
        """Return (src, dst, shifts), rebuilding only when needed."""
        check_finite(positions)
        if self.needsUpdate(positions, box):
            reach = self.cutoff + self.skin
            if box is not None:
                check_box(box, reach)
            src, dst, shifts, count = build_neighbor_list(positions, self.numReplicas, reach, box, self.capacity)
            check_capacity(count, self.capacity)
            self.pairs = (src, dst, shifts)
            self._reference = positions.detach().clone()
            self._box = None if box is None else box.detach().clone()
            self.numBuilds += 1
        return self.pairs
