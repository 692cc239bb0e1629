"""Tabulated SchNet filters for inference with fixed weights: cubic Hermite tables of W_t(d) and dW_t/dd.

In SchNet the filter of block t, W_t(d) = C(d) MLP_t(rbf(d)) [F'], depends on the pair distance alone. With fixed
weights it is tabulated once on a uniform grid of ``nodes`` points over [0, r_c] (spacing h = r_c / (nodes - 1)),
with its value and its derivative at every node, and evaluated per pair by cubic Hermite interpolation::

    u = d / h,  k = floor(u),  s = u - k                                   (k clamped to 0 .. nodes - 2)
    W(d)  = H00(s) W_k + H10(s) hW'_k + H01(s) W_k+1 + H11(s) hW'_k+1
    W'(d) = (G00(s) W_k + G10(s) hW'_k + G01(s) W_k+1 + G11(s) hW'_k+1) / h
    H00 = 2s^3 - 3s^2 + 1, H10 = s^3 - 2s^2 + s, H01 = 3s^2 - 2s^3, H11 = s^3 - s^2,  G = dH/ds
    W(d) = W'(d) = 0 for d >= r_c (the cosine cutoff makes W and W' vanish there, so the table is C^1 in d)

Table layout per block: [nodes, 2, F'] with (W_k, h W'_k) at node k, so the four rows a pair needs are 4 F'
contiguous numbers. The interpolant is a C^1 function of d and forces are its exact gradient (energy conservation).
Its error falls as h^4 for W and h^3 for W' (resolution), but in float32 the rounding of the stored W_k and of the
Hermite sums, divided by h, enters W' and grows as 1/h: too fine a grid is worse, and with a sharp basis (mlcg's
ExpNormal) the rounding dominates the force error. ``buildFilterTable`` therefore measures the error of the table as
the kernels evaluate it (float32 arithmetic from the stored table, for fp32/fp16 storage) against the exact float64
filter (``FlashSchNet.filter_weights``, any radial basis) on a dense check grid, weighted by d^2 (pairs per distance
in matter of uniform density), and doubles the node count until that error is within the tolerance or stops
falling. NaN distances (an overflowed padded neighbor list) give NaN filters, as the exact filter does.
"""

import copy
import math
import warnings
from dataclasses import asdict, dataclass
from typing import List

import torch
from torch import Tensor

STORAGE = {"fp32": torch.float32, "fp16": torch.float16, "fp64": torch.float64}


@dataclass
class FilterTableOptions:
    """How filter tables are built.

    tolerance: largest allowed error of W and of dW/dd per block, sqrt(sum rho (W_table - W)^2 / sum rho W^2) over
        the check grid (``checkPoints`` points inside every grid interval, weight rho = d^``weightPower``), the same
        for dW/dd, with the table evaluated as the kernels do (storage rounding and float32 arithmetic included).
    storage: "fp32" (default), "fp16" (half the bytes; adds ~3e-4 relative force error) or "fp64" (CPU/Reference).
    minNodes, maxNodes: range of the node count, doubled ((nodes - 1) = q * 2^k) until the tolerance holds; q is
        the smallest integer <= 256 that puts every kink of the filter (``filterBreakpoints``) on a node (else 1).
    weightPower: check-grid weight d^p; 2 (default): pairs per distance in matter of uniform density, so the force
        error is what is bounded; 0: every distance in [0, r_c] counts alike (the error at short range, where a sharp
        basis varies fastest and CG models have no pairs, then sets the grid).
    """

    tolerance: float = 1e-5
    storage: str = "fp32"
    minNodes: int = 129
    maxNodes: int = 16385
    checkPoints: int = 4
    weightPower: float = 2.0

    def __post_init__(self):
        if self.storage not in STORAGE:
            raise ValueError(f"unknown filter table storage {self.storage!r}; choose one of {sorted(STORAGE)}")
        if not self.tolerance > 0:
            raise ValueError(f"filter table tolerance must be > 0, got {self.tolerance}")
        if not 3 <= self.minNodes <= self.maxNodes:
            raise ValueError(f"need 3 <= minNodes <= maxNodes, got {self.minNodes}, {self.maxNodes}")
        if not self.weightPower >= 0:
            raise ValueError(f"filter table weightPower must be >= 0, got {self.weightPower}")


@dataclass
class FilterTable:
    """Hermite tables of every block's filter: ``table`` [T, nodes, 2, F'] (W, spacing * dW/dd), in model units."""

    table: Tensor
    spacing: float
    cutoff: float
    nodes: int
    errorValue: float        # max over blocks of the d^p-weighted RMS(W_table - W) / RMS(W) on the check grid
    errorDerivative: float   # the same for dW/dd
    tolerance: float
    storage: str
    weightPower: float = 2.0    # p of the check-grid weight d^p
    evaluationBits: int = 32    # arithmetic of the checked evaluation (32: as the float32 kernels, 64: fp64 tables)
    breakpointsOnNodes: int = 0  # kinks of the filter (``filterBreakpoints``) that fall on grid nodes

    @property
    def meetsTolerance(self) -> bool:
        return max(self.errorValue, self.errorDerivative) <= self.tolerance

    def info(self) -> dict:
        """Plain numbers for metadata (nodes, spacing, errors, tolerance, storage bits, size in bytes)."""
        out = {k: v for k, v in asdict(self).items() if k != "table"}
        out.update(meetsTolerance=self.meetsTolerance, bytes=self.table.numel() * self.table.element_size())
        return out


def hermite_filter(table: Tensor, spacing: float, cutoff: float, dist: Tensor) -> Tensor:
    """Interpolated filter W(d) [P, F'] of one block's table [nodes, 2, F'] at distances ``dist`` [P] (torch, any
    device and dtype; differentiable in ``dist``, dW/dd follows by autograd)."""
    nodes = table.shape[0]
    # float64 arithmetic on the CPU: the interpolant then depends on d alone, not on how TorchScript's optimizing
    # executor reorders float32 operations between calls (first and later calls agreed only to ~1e-5 otherwise).
    work = torch.float64 if table.dtype == torch.float64 or not dist.is_cuda else torch.float32
    u = dist.to(work) / spacing
    safe = torch.nan_to_num(u, nan=0.0).clamp(0.0, nodes - 2.0)
    k = safe.detach().floor()
    s = (u - k).unsqueeze(-1)
    index = k.to(torch.int64)
    lo = table.index_select(0, index).to(s.dtype)
    hi = table.index_select(0, index + 1).to(s.dtype)
    s2 = s * s
    s3 = s2 * s
    w = ((2.0 * s3 - 3.0 * s2 + 1.0) * lo[:, 0] + (s3 - 2.0 * s2 + s) * lo[:, 1] + (3.0 * s2 - 2.0 * s3) * hi[:, 0]
         + (s3 - s2) * hi[:, 1])
    # Comparisons with NaN are false: NaN distances stay inside and give NaN filters.
    beyond = (dist >= cutoff).unsqueeze(-1)
    return torch.where(beyond, torch.zeros_like(w), w)


def cfconv_table_reference(x: Tensor, dist: Tensor, src: Tensor, dst: Tensor, table: Tensor, spacing: float,
                           cutoff: float) -> Tensor:
    """m_i = sum_j x_j * W(d_ij) with the tabulated filter of one block (plain torch, materialized [P, F'] tensors).

    x [N, F'], dist/src/dst [P] (dst = -1: padding), table [nodes, 2, F'] -> m [N, F'] in x's dtype.
    """
    valid = dst >= 0
    src_c = torch.where(valid, src, torch.zeros_like(src))
    dst_c = torch.where(valid, dst, torch.zeros_like(dst))
    safe_dist = torch.where(valid, dist, torch.full_like(dist, 2.0 * cutoff))
    w = hermite_filter(table, spacing, cutoff, safe_dist).to(x.dtype)
    messages = x.index_select(0, src_c) * w
    return torch.zeros_like(x).index_add(0, dst_c, messages)


def exact_filter(model, distances: Tensor):
    """(W [T, P, F'], dW/dd [T, P, F']) of ``model.filter_weights`` at ``distances`` [P], in the model's dtype."""
    ones = torch.ones_like(distances)
    try:
        return torch.func.jvp(model.filter_weights, (distances,), (ones,))
    except Exception:  # a basis that forward-mode AD cannot trace: 4th-order central differences (float64)
        step = 1e-3 * float(model.cutoff) / 64
        f = model.filter_weights
        deriv = (8 * (f(distances + step) - f(distances - step)) - (f(distances + 2 * step)
                                                                   - f(distances - 2 * step))) / (12 * step)
        return f(distances), deriv


def _hermite_derivative(table: Tensor, spacing: float, dist: Tensor) -> Tensor:
    """dW/dd [T, P, F'] of every block's table at ``dist`` [P] < cutoff (closed form, float64)."""
    nodes = table.shape[1]
    u = dist / spacing
    k = u.clamp(0.0, nodes - 2.0).floor()
    s = (u - k)[None, :, None]
    index = k.to(torch.int64)
    lo, hi = table[:, index].to(torch.float64), table[:, index + 1].to(torch.float64)
    s2 = s * s
    return ((6.0 * s2 - 6.0 * s) * lo[:, :, 0] + (3.0 * s2 - 4.0 * s + 1.0) * lo[:, :, 1]
            + (6.0 * s - 6.0 * s2) * hi[:, :, 0] + (3.0 * s2 - 2.0 * s) * hi[:, :, 1]) / spacing


def filterBreakpoints(model) -> List[float]:
    """Distances in (0, r_c) where a FlashSchNet filter is not smooth: the lower bound of a cosine envelope, the
    start of a shifted-cosine ramp, a filter envelope ending before the cutoff (W'' jumps there, and a Hermite
    interval across the jump loses two orders of accuracy; with the kink on a node it does not)."""
    cutoff = float(model.cutoff)
    points = []
    envelopes = [(getattr(model, "filter_envelope", "cosine"), float(getattr(model, "filter_lower", 0.0)),
                  float(getattr(model, "filter_upper", cutoff)), float(getattr(model, "filter_smooth_width", 0.0)))]
    if getattr(model, "rbf_cutoff", False):
        envelopes.append((getattr(model, "rbf_envelope", "cosine"), float(getattr(model, "rbf_lower", 0.0)), cutoff,
                          float(getattr(model, "rbf_smooth_width", 0.0))))
    for kind, lower, upper, width in envelopes:
        if kind == "cosine":
            points += [lower, upper]
        elif kind == "shiftedcosine":
            points += [upper - width, upper]
    return sorted({p for p in points if 0.0 < p < cutoff})


def _aligned_start(model, options: FilterTableOptions):
    """(first node count, breakpoints on its nodes): (nodes - 1) = q * 2^k >= minNodes - 1 with the smallest
    q <= 256 that puts every breakpoint on a node; minNodes (q = 1 alignment only) when none does."""
    cutoff = float(model.cutoff)
    points = filterBreakpoints(model)
    for q in range(1, 257):
        if all(abs(p * q / cutoff - round(p * q / cutoff)) < 1e-9 * q for p in points):
            intervals = q
            while intervals < options.minNodes - 1:
                intervals *= 2
            if intervals + 1 <= options.maxNodes:
                return intervals + 1, len(points)
            break
    return options.minNodes, 0


def _tabulate(model64, nodes: int, storage: torch.dtype) -> Tensor:
    """[T, nodes, 2, F'] table (W, h W') at the nodes of a uniform grid over [0, r_c], in ``storage``."""
    cutoff = float(model64.cutoff)
    spacing = cutoff / (nodes - 1)
    grid = torch.linspace(0.0, cutoff, nodes, dtype=torch.float64)
    with torch.no_grad():
        w, dw = exact_filter(model64, grid)
    return torch.stack([w, dw * spacing], dim=2).to(storage).contiguous()


def _hermite_fp32(table: Tensor, spacing: float, dist: Tensor):
    """(W, dW/dd) [T, P, F'] of every block's table at float32 distances ``dist`` [P] < cutoff, in float32
    arithmetic step by step as the table kernels evaluate them (u = d / h with a float32 1 / h, s = u - floor(u))."""
    inv_h = torch.tensor(1.0 / spacing, dtype=torch.float32)
    u = dist.to(torch.float32) * inv_h
    k = u.clamp(0.0, table.shape[1] - 2.0).floor()
    s = (u - k)[None, :, None]
    index = k.to(torch.int64)
    lo, hi = table[:, index].to(torch.float32), table[:, index + 1].to(torch.float32)
    w0, d0, w1, d1 = lo[:, :, 0], lo[:, :, 1], hi[:, :, 0], hi[:, :, 1]
    # Difference form (exact in float32 for neighbouring nodes), as the kernels: W = w0 + s^2 (3 - 2s)(w1 - w0)
    # + s (1 - s)^2 d0 + s^2 (s - 1) d1, h W' = 6 s (1 - s)(w1 - w0) + (1 - s)(1 - 3s) d0 + s (3s - 2) d1.
    diff = w1 - w0
    t = 1.0 - s
    w = w0 + (s * s * (3.0 - 2.0 * s)) * diff + (s * t * t) * d0 - (s * s * t) * d1
    dw = ((6.0 * s * t) * diff + (t * (1.0 - 3.0 * s)) * d0 + (s * (3.0 * s - 2.0)) * d1) * inv_h
    return w.to(torch.float64), dw.to(torch.float64)


def _check_error(model64, table: Tensor, points: int, weight_power: float = 2.0, chunk: int = 8192):
    """(value error, derivative error) of ``table`` against the exact float64 filter on ``points`` check points
    inside every interval (never on a node) over [0, r_c): max over blocks of sqrt(sum rho dW^2 / sum rho W^2),
    rho = d^weight_power. fp32/fp16 tables are evaluated at float32 distances in float32 arithmetic (as the kernels),
    fp64 tables in float64."""
    cutoff = float(model64.cutoff)
    nodes = table.shape[1]
    spacing = cutoff / (nodes - 1)
    single = table.dtype != torch.float64
    frac = (torch.arange(points, dtype=torch.float64) + 0.5) / points
    dist = ((torch.arange(nodes - 1, dtype=torch.float64)[:, None] + frac[None, :]) * spacing).reshape(-1)
    if single:
        dist = dist.to(torch.float32).to(torch.float64).clamp_max(math.nextafter(cutoff, 0.0))
    sq = torch.zeros(4, table.shape[0], dtype=torch.float64)  # weighted sums of squares: dW, W, dW', W' per block
    for start in range(0, dist.shape[0], chunk):
        d = dist[start:start + chunk]
        with torch.no_grad():
            w, dw = exact_filter(model64, d)
            if single:
                wt, dwt = _hermite_fp32(table, spacing, d)
            else:
                wt = torch.stack([hermite_filter(table[t], spacing, cutoff, d) for t in range(table.shape[0])])
                dwt = _hermite_derivative(table, spacing, d)
        rho = d.pow(weight_power)[None, :, None]
        for row, val in enumerate(((wt - w), w, (dwt - dw), dw)):
            sq[row] += (rho * val.pow(2)).sum(dim=(1, 2))
    rel = (sq[[0, 2]] / sq[[1, 3]].clamp_min(1e-300)).sqrt().amax(dim=1)
    return float(rel[0]), float(rel[1])


def buildFilterTable(model, options: FilterTableOptions = None, warn: bool = True) -> FilterTable:
    """Tabulate every block's filter of ``model`` (a FlashSchNet; only ``filter_weights`` and ``cutoff`` are used).

    The node count starts at ``options.minNodes`` and doubles until the error on the check grid is within
    ``options.tolerance`` (or stops falling: the rounding floor, where W' gets worse as h shrinks), up to
    ``options.maxNodes``; the table with the smallest error is returned (``warn``: a warning when it misses the
    tolerance). Building a 4-block, 128-filter table takes about a second on one CPU core.
    The table is built on the CPU in float64 and stored in ``options.storage``; move it with ``.to(device)``.
    """
    options = options or FilterTableOptions()
    model64 = copy.deepcopy(model).to("cpu", torch.float64).eval()
    storage = STORAGE[options.storage]
    nodes, aligned = _aligned_start(model64, options)
    best = None
    while True:
        table = _tabulate(model64, nodes, storage)
        err_w, err_d = _check_error(model64, table, options.checkPoints, options.weightPower)
        current = FilterTable(table, float(model64.cutoff) / (nodes - 1), float(model64.cutoff), nodes, err_w,
                              err_d, float(options.tolerance), options.storage, float(options.weightPower),
                              64 if storage == torch.float64 else 32, aligned)
        # Finer grids stop helping once the rounding dominates (the rounding of W and of the Hermite sums, divided by
        # h, enters W'), so the doubling stops when the error no longer falls and the best table is kept.
        stalled = best is not None and max(err_w, err_d) >= max(best.errorValue, best.errorDerivative)
        if not stalled:
            best = current
        if current.meetsTolerance or stalled or 2 * nodes - 1 > options.maxNodes:
            break
        nodes = 2 * nodes - 1
    if warn and not best.meetsTolerance and options.storage != "fp16":
        warnings.warn(f"filter table: relative error {max(best.errorValue, best.errorDerivative):.2e} with "
                      f"{best.nodes} nodes exceeds the tolerance {options.tolerance:.1e}; raise maxNodes or the "
                      "tolerance, or use filterMode='exact'", stacklevel=2)
    return best


def attachFilterTable(model, table: FilterTable) -> None:
    """Make ``model`` evaluate its filters from ``table`` (filter_mode "table"); the table follows the model's
    device. ``model.filter_mode = "exact"`` switches back."""
    if table.table.shape[0] != len(model.blocks):
        raise ValueError(f"filter table has {table.table.shape[0]} blocks but the model has {len(model.blocks)}")
    device = model.mu.device
    model.filter_table = table.table.to(device)
    model.table_spacing = float(table.spacing)
    model.filter_mode = "table"


__all__ = ["FilterTableOptions", "FilterTable", "buildFilterTable", "attachFilterTable", "filterBreakpoints",
           "hermite_filter", "cfconv_table_reference", "exact_filter"]
