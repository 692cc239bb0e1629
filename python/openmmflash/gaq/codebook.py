"""Antipodally symmetric, nearly uniform direction codebooks on the unit sphere.

A codebook of K = 2^bits unit vectors holds K/2 representatives and their negatives (codeword k + K/2 = -codeword k),
so a nearest-codeword quantizer is exactly odd: Q(-u) = -Q(u). The representatives start from a Fibonacci lattice
on the upper hemisphere and are spread by minimizing the Riesz energy sum 1/|c_i - c_j| over the whole antipodal set
(projected gradient descent on the sphere), which makes the cells nearly equal.

Resolution: for K nearly uniform points the spacing is about sqrt(4 pi / K) rad and the covering angle (the largest
angle between any direction and its nearest codeword) about 0.6 of that.
"""

import functools
import math

import torch

from openmmflash.gaq.codebookindex import codebookIndex
from openmmflash.gaq.kernels import nearest_codeword, nearest_codeword_indexed, triton_usable

MAX_BITS = 14
INDEX_MIN_CODEWORDS = 64  # below this a full search is as cheap as the index
# Nearest-codeword search for float32 on CUDA: "kernel" (Triton, all K codewords per direction), "index-kernel" (Triton,
# the cube-map cell's candidates only) or "index" (the cube-map index in PyTorch ops). bench_gaq.py --speed-only
# times all three: on an H100 (results/gaq_speed_search.json, frame W4A8, K = 1024) the index kernel made the
# CUDA-graphed model call 1.33x / 1.16x / 1.18x faster than the full scan at 1 / 8 / 64 replicas and the plain call
# 1.17x faster at 64 (launch-bound and within 3 % at 1 and 8); the PyTorch index was slowest (and not graph-capturable).
CUDA_SEARCH = "index-kernel"
CUDA_SEARCHES = ("kernel", "index-kernel", "index")


@functools.lru_cache(maxsize=None)
def _codebook_cpu(bits: int, iterations: int) -> torch.Tensor:
    half = 2 ** (bits - 1)
    k = torch.arange(half, dtype=torch.float64) + 0.5
    z = 1.0 - k / half                              # equal-area bands on the upper hemisphere, z in (0, 1)
    phi = k * math.pi * (3.0 - math.sqrt(5.0))       # golden angle
    r = torch.sqrt(1.0 - z * z)
    reps = torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], dim=1)
    step = 0.5 / math.sqrt(2 * half)
    for _ in range(iterations if half > 1 else 0):
        points = torch.cat([reps, -reps])
        diff = reps.unsqueeze(1) - points.unsqueeze(0)              # [half, K, 3]
        dist = diff.norm(dim=-1)
        dist.fill_diagonal_(float("inf"))
        # Riesz s=1 energy gradient on each representative (its negative moves with it by construction).
        force = (diff / dist.unsqueeze(-1) ** 3).sum(1)
        force = force - (force * reps).sum(1, keepdim=True) * reps    # tangent part
        scale = step / (force.norm(dim=1, keepdim=True).max() + 1e-30)
        reps = reps + scale * force
        reps = reps / reps.norm(dim=1, keepdim=True)
    return torch.cat([reps, -reps]).to(torch.float32)


def sphereCodebook(bits: int, iterations: int = 40, device=None) -> torch.Tensor:
    """K = 2**bits unit vectors, shape (K, 3), with codeword k + K/2 == -codeword k. bits in 1 .. 14."""
    if not isinstance(bits, int) or not 1 <= bits <= MAX_BITS:
        raise ValueError(f"direction codebook bits must be an integer in 1..{MAX_BITS}, got {bits!r}")
    return _codebook_cpu(bits, iterations).to(device)


def nearestCodeword(directions: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest codeword (largest dot product) of each unit vector. (..., 3) -> (...,) int64.

    float32 on CUDA uses a Triton kernel (``CUDA_SEARCH``: by default the cube-map index kernel
    kernels.nearest_codeword_indexed for codebooks of 64 or more entries, else the full scan kernels.nearest_codeword;
    no [M, K] score matrix either way); codebooks of 64 or more entries elsewhere the exact cube-map index in PyTorch
    (``codebookindex``: ~5 candidate dots per direction instead of K); small codebooks chunked matmuls.
    """
    if CUDA_SEARCH not in CUDA_SEARCHES:
        raise ValueError(f"codebook.CUDA_SEARCH must be one of {CUDA_SEARCHES}, got {CUDA_SEARCH!r}")
    if (directions.is_cuda and CUDA_SEARCH != "index" and triton_usable(directions)
            and codebook.dtype == torch.float32):
        if CUDA_SEARCH == "index-kernel" and codebook.shape[0] >= INDEX_MIN_CODEWORDS:
            return nearest_codeword_indexed(directions.reshape(-1, 3), codebook).reshape(directions.shape[:-1])
        return nearest_codeword(directions.reshape(-1, 3), codebook).reshape(directions.shape[:-1])
    flat = directions.reshape(-1, 3).to(codebook.dtype)
    if codebook.shape[0] >= INDEX_MIN_CODEWORDS:
        return codebookIndex(codebook).nearest(flat).reshape(directions.shape[:-1])
    index = torch.empty(flat.shape[0], dtype=torch.int64, device=flat.device)
    chunk = max(1, 2 ** 24 // codebook.shape[0])   # bound the [M, K] score matrix
    for start in range(0, flat.shape[0], chunk):
        index[start:start + chunk] = (flat[start:start + chunk] @ codebook.T).argmax(dim=1)
    return index.reshape(directions.shape[:-1])


def coveringAngle(codebook: torch.Tensor, samples: int = 200_000, seed: int = 0) -> float:
    """Largest angle (rad) between a random direction and its nearest codeword, estimated by sampling."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(samples, 3, generator=gen, dtype=torch.float64)
    u = u / u.norm(dim=1, keepdim=True)
    c = codebook.to(torch.float64).cpu()
    best = torch.cat([(u[s:s + 20000] @ c.T).max(dim=1).values for s in range(0, samples, 20000)])
    return float(torch.arccos(best.clamp(-1, 1)).max())
