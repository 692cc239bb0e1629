"""Exact nearest-codeword search through a cube-map index: a few candidates per direction instead of all K.

The sphere is cut into the cells of a cube map (6 faces x R x R; a direction u falls in the face of its largest
|u_i| and in the cell of (u_j, u_k) / |u_i|). For a cell with centre direction d, angular radius rho (largest angle
from d to a corner: the cell is a convex spherical quadrilateral, so a corner is farthest) and delta = angle between d
and the codeword nearest to d, every u in the cell has its nearest codeword c* within

    angle(u, c*) <= angle(u, c_d) <= rho + delta,   so   angle(d, c*) <= angle(d, u) + angle(u, c*) <= 2 rho + delta

(triangle inequality on the sphere). The candidates of a cell are all codewords within that angle of d, so the
search over them returns the same codeword as a search over the whole codebook (ties go to the smallest index in
both). R is chosen so that a cell is about a quarter of the codeword spacing sqrt(4 pi / K): a handful of
candidates per cell, whatever K.
"""

import hashlib
import math
import weakref
from typing import Dict, Tuple

import torch
from torch import Tensor

_OTHER_AXES = ((1, 2), (0, 2), (0, 1))
_CACHE: Dict[Tuple[str, str], "CodebookIndex"] = {}
_BY_TENSOR: Dict[int, tuple] = {}   # id(codebook) -> (weakref, version counter, index): no hashing per call


def _face_points(axis: int, sign: float, a: Tensor, b: Tensor) -> Tensor:
    """Unit directions of cube-face points p[axis] = sign, p[others] = (a, b); a, b (...,) -> (..., 3) float64."""
    p = torch.empty(a.shape + (3,), dtype=torch.float64)
    o1, o2 = _OTHER_AXES[axis]
    p[..., axis] = sign
    p[..., o1] = a
    p[..., o2] = b
    return p / p.norm(dim=-1, keepdim=True)


class CodebookIndex:
    """Candidate table of a codebook (K, 3): ``nearest(u)`` equals ``argmax(u @ codebook.T)`` with far fewer dots.

    Parameters
    ----------
    codebook : Tensor
        (K, 3) unit vectors.
    resolution : int, optional
        R, cells per cube-face edge (default from K: about four cells per codeword spacing).
    """

    def __init__(self, codebook: Tensor, resolution: int = 0):
        k = codebook.shape[0]
        self.resolution = int(resolution) or int(min(128, max(2, math.ceil(4.5 / math.sqrt(4 * math.pi / k)))))
        r = self.resolution
        c = codebook.detach().to("cpu", torch.float64)
        edges = torch.linspace(-1.0, 1.0, r + 1, dtype=torch.float64)
        mid = 0.5 * (edges[:-1] + edges[1:])
        ii, jj = torch.meshgrid(torch.arange(r), torch.arange(r), indexing="ij")
        centres, corners = [], []
        for face in range(6):
            axis, sign = face // 2, (1.0 if face % 2 == 0 else -1.0)
            centres.append(_face_points(axis, sign, mid[ii], mid[jj]).reshape(-1, 3))
            corner = [_face_points(axis, sign, edges[ii + di], edges[jj + dj]).reshape(-1, 3)
                      for di in (0, 1) for dj in (0, 1)]
            corners.append(torch.stack(corner, dim=1))
        d = torch.cat(centres)                                            # [6 R^2, 3]
        rho = torch.arccos((torch.cat(corners) * d[:, None]).sum(-1).clamp(-1, 1)).amax(1)
        rows = []
        chunk = max(1, 2 ** 22 // k)  # bound the [cells, K] score block
        for start in range(0, d.shape[0], chunk):
            dots = d[start:start + chunk] @ c.T                           # [chunk, K]
            delta = torch.arccos(dots.amax(1).clamp(-1, 1))
            reach = torch.cos((2.0 * rho[start:start + chunk] + delta + 1e-6).clamp(max=math.pi))
            inside = dots >= reach[:, None]
            # Candidates in increasing codeword order (nonzero is row-major); k marks an empty slot.
            row, col = inside.nonzero(as_tuple=True)
            counts = inside.sum(1)
            slot = torch.arange(row.shape[0]) - (counts.cumsum(0) - counts)[row]
            block = torch.full((inside.shape[0], int(counts.max())), k, dtype=torch.int64)
            block[row, slot] = col
            rows.append(block)
        width = max(row.shape[1] for row in rows)
        table = torch.cat([torch.nn.functional.pad(row, (0, width - row.shape[1]), value=k) for row in rows])
        # Empty slots repeat the cell's first candidate (a duplicate cannot win: only a strictly better score does).
        self.table = torch.where(table == k, table[:, :1], table)         # [6 R^2, width] int64
        self.codebook = codebook.detach()
        self._on = {}   # device copies: a search on a GPU copies nothing per call

    def tableOn(self, device) -> Tensor:
        """The candidate table on ``device`` (int32; cached)."""
        key = ("table", str(device))
        if key not in self._on:
            self._on[key] = self.table.to(device, torch.int32).contiguous()
        return self._on[key]

    def codebookOn(self, device, dtype=torch.float32) -> Tensor:
        """The codebook on ``device`` in ``dtype`` (cached)."""
        key = ("codebook", str(device), dtype)
        if key not in self._on:
            self._on[key] = self.codebook.to(device, dtype).contiguous()
        return self._on[key]

    @property
    def width(self) -> int:
        """Candidates per cell (the dots each direction costs)."""
        return int(self.table.shape[1])

    def cells(self, u: Tensor) -> Tensor:
        """Cube-map cell of each direction (M, 3) -> (M,) int64."""
        r = self.resolution
        axis = u.abs().argmax(dim=1)
        lead = u.gather(1, axis[:, None])[:, 0]
        face = 2 * axis + (lead < 0).to(torch.int64)
        others = torch.tensor(_OTHER_AXES, device=u.device)[axis]        # [M, 2]
        ab = u.gather(1, others) / lead.abs().clamp(min=1e-30)[:, None]
        ij = ((ab + 1.0) * (0.5 * r)).floor().clamp(0, r - 1).to(torch.int64)
        return (face * r + ij[:, 0]) * r + ij[:, 1]

    def nearest(self, u: Tensor) -> Tensor:
        """Index of the nearest codeword of each unit vector (M, 3) -> (M,) int64 (0 for a zero vector)."""
        codebook = self.codebookOn(u.device, u.dtype)
        candidates = self.tableOn(u.device)[self.cells(u)].long()        # [M, width]
        best = torch.full(u.shape[:1], -math.inf, dtype=u.dtype, device=u.device)
        index = candidates[:, 0].clone()
        for slot in range(candidates.shape[1]):
            score = (u * codebook[candidates[:, slot]]).sum(-1)
            better = score > best
            best = torch.where(better, score, best)
            index = torch.where(better, candidates[:, slot], index)
        return torch.where(u.abs().amax(1) > 0, index, torch.zeros_like(index))


def codebookIndex(codebook: Tensor) -> CodebookIndex:
    """The (cached) index of a codebook, keyed by its contents and device (the same unchanged tensor: no hashing,
    so no device-to-host copy per call)."""
    hit = _BY_TENSOR.get(id(codebook))
    if hit is not None and hit[0]() is codebook and hit[1] == codebook._version:
        return hit[2]
    data = codebook.detach().to("cpu", torch.float64).contiguous().numpy().tobytes()
    key = (hashlib.sha1(data).hexdigest(), str(codebook.device))
    if key not in _CACHE:
        _CACHE[key] = CodebookIndex(codebook)
    ident = id(codebook)
    _BY_TENSOR[ident] = (weakref.ref(codebook, lambda _, i=ident: _BY_TENSOR.pop(i, None)), codebook._version,
                         _CACHE[key])
    return _CACHE[key]
