"""Plain PyTorch reference of the SchNet continuous-filter convolution (CFConv), with materialized edge tensors.

This is the ground truth every optimized kernel is tested against, and the performance baseline. All functions
are TorchScript-compatible and differentiable to any order (training needs forces of forces).

Math, for a directed pair j -> i with distance d (model length units, e.g. Angstrom), R Gaussians, F' filters::

    C(d)     = 0.5 (cos(pi d / r_c) + 1) [d < r_c]                       cosine cutoff
    e_k(d)   = exp(gamma (d - mu_k)^2) C_rbf(d),   mu = linspace(0, r_c, R),  gamma = -0.5 / (mu_1 - mu_0)^2
    W(d)     = (W2 tanh(W1 e + b1)) C(d)                                 filter, [F']
    m_i      = sum_{j in N(i)} x_j * W(d_ij)                             x = lin1(h), [N, F']

``C_rbf`` is ``C`` when the basis carries the cosine cutoff (CGSchNet with a CosineCutoff basis, the default) and 1
otherwise. Padding pairs (``dst < 0``) contribute nothing.
"""

import math
from typing import Tuple

import torch
from torch import Tensor


def cosine_cutoff(dist: Tensor, cutoff: float) -> Tensor:
    """0.5 (cos(pi d / r_c) + 1) for d < r_c, else 0. Shape of ``dist``."""
    inside = dist < cutoff
    value = 0.5 * (torch.cos(dist * (math.pi / cutoff)) + 1.0)
    return torch.where(inside, value, torch.zeros_like(value))


def gaussian_rbf(dist: Tensor, mu: Tensor, gamma: float, cutoff: float, rbf_cutoff: bool) -> Tensor:
    """Gaussian expansion exp(gamma (d - mu)^2), times the cosine cutoff if ``rbf_cutoff``. [P] -> [P, R]."""
    rbf = torch.exp(gamma * (dist.unsqueeze(-1) - mu) ** 2)
    if rbf_cutoff:
        rbf = rbf * cosine_cutoff(dist, cutoff).unsqueeze(-1)
    return rbf


def filter_mlp(dist: Tensor, mu: Tensor, gamma: float, cutoff: float, rbf_cutoff: bool, w1: Tensor, b1: Tensor,
               w2: Tensor) -> Tensor:
    """Filter W(d) = (tanh(e W1^T + b1) W2^T) C(d). dist [P], w1 [F', R], b1 [F'], w2 [F', F'] -> [P, F']."""
    rbf = gaussian_rbf(dist, mu, gamma, cutoff, rbf_cutoff)
    hidden = torch.tanh(torch.nn.functional.linear(rbf, w1, b1))
    return torch.nn.functional.linear(hidden, w2) * cosine_cutoff(dist, cutoff).unsqueeze(-1)


def cfconv_reference(x: Tensor, dist: Tensor, src: Tensor, dst: Tensor, mu: Tensor, w1: Tensor, b1: Tensor,
                     w2: Tensor, gamma: float, cutoff: float, rbf_cutoff: bool) -> Tensor:
    """Continuous-filter convolution m_i = sum_j x_j * W(d_ij) with materialized [P, F'] edge tensors.

    x: [N, F'] source features; dist: [P] pair distances; src, dst: [P] int64 bead indices (dst = -1 marks
    padding); returns m: [N, F'].
    """
    valid = dst >= 0
    src_c = torch.where(valid, src, torch.zeros_like(src))
    dst_c = torch.where(valid, dst, torch.zeros_like(dst))
    # Padding gets a distance beyond the cutoff, so its filter is exactly zero and its gradient too.
    safe_dist = torch.where(valid, dist, torch.full_like(dist, 2.0 * cutoff))
    w = filter_mlp(safe_dist, mu, gamma, cutoff, rbf_cutoff, w1, b1, w2)
    messages = x.index_select(0, src_c) * w
    out = torch.zeros_like(x)
    return out.index_add(0, dst_c, messages)


def pair_distances(positions: Tensor, src: Tensor, dst: Tensor, shifts: Tensor, cutoff: float) -> Tuple[Tensor, Tensor]:
    """Distances |r_src - r_dst + shift| of the listed pairs, differentiable in ``positions``.

    positions [N, 3], src/dst [P] (dst = -1 for padding), shifts [P, 3]. Padding pairs get a constant distance of
    2 r_c whose gradient is zero. Returns (dist [P], valid [P] bool).
    """
    valid = dst >= 0
    src_c = torch.where(valid, src, torch.zeros_like(src))
    dst_c = torch.where(valid, dst, torch.zeros_like(dst))
    vec = positions.index_select(0, src_c) - positions.index_select(0, dst_c) + shifts
    # Built without an indexed assignment: TorchScript lowers that to a host-to-device copy, which CUDA graph
    # capture refuses.
    far = torch.cat([torch.full_like(vec[:, :1], 2.0 * cutoff), torch.zeros_like(vec[:, 1:])], dim=1)
    vec = torch.where(valid.unsqueeze(-1), vec, far)
    return torch.linalg.vector_norm(vec, dim=-1), valid
