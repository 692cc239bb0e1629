"""Radial bases and cutoff envelopes of mlcg's SchNet (``mlcg.nn.radial_basis``, ``mlcg.nn.cutoff``), plain torch.

Distances d [P] in the model's length unit; every function is TorchScript-compatible and differentiable::

    envelope "cosine", lo = 0      0.5 (cos(pi d / up) + 1) [d < up]
    envelope "cosine", lo > 0      0.5 (cos(pi (2 (d - lo) / (up - lo) + 1)) + 1) [lo < d < up]
    envelope "identity"            1
    envelope "shiftedcosine"       1 for d <= up - w;  0.5 + 0.5 cos(pi (d - up + w) / w) up to up;  0 beyond
    basis "gaussian"               exp(gamma (d - mu_k)^2) * envelope(d)                      [P, R]
    basis "expnormal"              exp(-beta_k (exp(alpha (lo - d)) - mu_k)^2) * envelope(d),  alpha = 5 / (up - lo)

``cutoff_envelope`` with "cosine" and lo = 0 equals ``openmmflash.schnet.reference.cosine_cutoff``.
"""

import math

import torch
from torch import Tensor


def cutoff_envelope(dist: Tensor, kind: str, lower: float, upper: float, smooth_width: float) -> Tensor:
    """Envelope C(d) of ``kind`` ("cosine", "identity", "shiftedcosine"); shape of ``dist``."""
    zero = torch.zeros_like(dist)
    if kind == "identity":
        return torch.ones_like(dist)
    if kind == "shiftedcosine":
        start = upper - smooth_width
        ramp = 0.5 + 0.5 * torch.cos(math.pi * (dist - start) / smooth_width)
        value = torch.where(dist > start, ramp, torch.ones_like(dist))
        return torch.where(dist > upper, zero, value)
    if lower > 0.0:
        value = 0.5 * (torch.cos(math.pi * (2.0 * (dist - lower) / (upper - lower) + 1.0)) + 1.0)
        return torch.where((dist < upper) & (dist > lower), value, zero)
    value = 0.5 * (torch.cos(dist * (math.pi / upper)) + 1.0)
    return torch.where(dist < upper, value, zero)


def radial_basis(dist: Tensor, kind: str, mu: Tensor, betas: Tensor, gamma: float, lower: float, upper: float,
                 envelope: Tensor) -> Tensor:
    """Basis functions [P, R] of ``kind`` ("gaussian", "expnormal") times ``envelope`` [P] (the basis's own)."""
    d = dist.unsqueeze(-1)
    if kind == "expnormal":
        alpha = 5.0 / (upper - lower)
        value = torch.exp(-betas * (torch.exp(alpha * (lower - d)) - mu) ** 2)
    else:
        value = torch.exp(gamma * (d - mu) ** 2)
    return value * envelope.unsqueeze(-1)


def initial_basis(kind: str, num_rbf: int, lower: float, upper: float):
    """mlcg's initial (mu [R], betas [R] or empty) of a basis between ``lower`` and ``upper``."""
    if kind == "expnormal":
        start = math.exp(lower - upper)
        mu = torch.linspace(start, 1.0, num_rbf)
        return mu, torch.full((num_rbf,), (2.0 / num_rbf * (1.0 - start)) ** -2)
    return torch.linspace(lower, upper, num_rbf), torch.zeros(0)
