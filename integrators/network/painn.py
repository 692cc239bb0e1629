"""PaiNN-style equivariant message passing with explicit vector features, for the FlashMD learned step.

Architecture (Schütt, Unke, Gastegger, ICML 2021, "polarizable atom interaction neural network"), written here
from the paper's equations:

    scalar features  s_i  [N, C]         (rotation invariant)
    vector features  v_i  [N, 3, C]      (rotate as vectors; the channel axis is last)

    message (edge j -> i, r_ij = r_j - r_i, d = |r_ij|, u = r_ij / d):
        phi_ij = MLP(s_j) * (W rbf(d)) * fcut(d) / n_avg       [P, 3C]   (n_avg: typical neighbor count) split into (a_vv, a_s, a_vs)
        ds_i  += a_s
        dv_i  += a_vv * v_j + a_vs * u                          (u broadcast over channels)
    update:
        U v, V v (linear maps over channels, no bias, so they commute with rotations)
        (b_vv, b_sv, b_ss) = MLP([s, |V v|])
        v += b_vv * U v
        s += b_sv * <U v, V v> + b_ss

Scalar and vector branches are kept apart: every vector operation is a channel mixing (``VectorLinear``) or a
product with a scalar gate, which is what magnitude-direction quantization of the vector channels (GAQ) needs.

Inputs for FlashMD: atom types, edge vectors (nm) and the momenta in scaled form x = p / sqrt(m) / momentumScale,
which enter as the initial vector feature v0 = x w0 and the scalar |x|. Outputs two vectors per atom.
"""

import math
from typing import Tuple

import torch
from torch import Tensor, nn


def cosine_cutoff(d: Tensor, cutoff: float) -> Tensor:
    """0.5 (cos(pi d / rc) + 1) for d < rc, else 0."""
    return torch.where(d < cutoff, 0.5 * (torch.cos(math.pi * d / cutoff) + 1.0), torch.zeros_like(d))


class GaussianRBF(nn.Module):
    """Gaussian radial basis on [0, cutoff]: exp(-(d - mu_k)^2 / (2 w^2)), [P] -> [P, K]."""

    def __init__(self, num_rbf: int, cutoff: float):
        super().__init__()
        self.register_buffer("centers", torch.linspace(0.0, cutoff, num_rbf))
        self.width = cutoff / num_rbf

    def forward(self, d: Tensor) -> Tensor:
        return torch.exp(-0.5 * ((d.unsqueeze(-1) - self.centers) / self.width) ** 2)


class VectorLinear(nn.Module):
    """Channel mixing of vector features, [N, 3, C_in] -> [N, 3, C_out], no bias (rotation equivariant)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_in, c_out) / math.sqrt(c_in))

    def forward(self, v: Tensor) -> Tensor:
        return v @ self.weight


def _mlp(c_in: int, c_hidden: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(c_in, c_hidden), nn.SiLU(), nn.Linear(c_hidden, c_out))


class PaiNNMessage(nn.Module):
    """Message block: aggregate neighbor scalars and vectors into (ds [N, C], dv [N, 3, C])."""

    def __init__(self, channels: int, num_rbf: int, cutoff: float, neighbor_norm: float = 1.0):
        super().__init__()
        self.channels = channels
        self.cutoff = cutoff
        self.neighbor_norm = float(neighbor_norm)
        self.scalar_mlp = _mlp(channels, channels, 3 * channels)
        self.filter = nn.Linear(num_rbf, 3 * channels)

    def forward(self, s: Tensor, v: Tensor, src: Tensor, dst: Tensor, rbf: Tensor, unit: Tensor,
                fcut: Tensor) -> Tuple[Tensor, Tensor]:
        C = self.channels
        phi = self.scalar_mlp(s)[src] * self.filter(rbf) * (fcut / self.neighbor_norm).unsqueeze(-1)  # [P, 3C]
        a_vv, a_s, a_vs = phi[:, :C], phi[:, C:2 * C], phi[:, 2 * C:]
        ds = torch.zeros_like(s).index_add_(0, dst, a_s)
        msg_v = a_vv.unsqueeze(1) * v[src] + a_vs.unsqueeze(1) * unit.unsqueeze(-1)  # [P, 3, C]
        dv = torch.zeros_like(v).index_add_(0, dst, msg_v)
        return ds, dv


class PaiNNUpdate(nn.Module):
    """Update block: mix scalars and vectors within each atom."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        self.U = VectorLinear(channels, channels)
        self.V = VectorLinear(channels, channels)
        self.mlp = _mlp(2 * channels, channels, 3 * channels)

    def forward(self, s: Tensor, v: Tensor) -> Tuple[Tensor, Tensor]:
        C = self.channels
        Uv, Vv = self.U(v), self.V(v)
        norm = torch.sqrt((Vv * Vv).sum(1) + 1e-8)  # [N, C]
        b = self.mlp(torch.cat([s, norm], dim=-1))
        b_vv, b_sv, b_ss = b[:, :C], b[:, C:2 * C], b[:, 2 * C:]
        v = v + b_vv.unsqueeze(1) * Uv
        s = s + b_sv * (Uv * Vv).sum(1) + b_ss
        return s, v


class GatedVectorHead(nn.Module):
    """Readout of ``num_out`` vectors per atom: (v W) * gate(s), [N, 3, C] -> [N, 3, num_out]."""

    def __init__(self, channels: int, num_out: int):
        super().__init__()
        self.vec = VectorLinear(channels, num_out)
        self.gate = _mlp(channels, channels, num_out)

    def forward(self, s: Tensor, v: Tensor) -> Tensor:
        return self.vec(v) * self.gate(s).unsqueeze(1)


class PaiNN(nn.Module):
    """Equivariant network: (types, scaled momenta, edges) -> two vectors per atom.

    Parameters
    ----------
    num_types : int
        Number of atom types (type indices 0 .. num_types - 1).
    channels, num_layers, num_rbf : int
    cutoff : float
        Interaction cutoff, nm.
    neighbor_norm : float
        Messages are divided by this (about the mean number of neighbors), so that feature sizes do not grow with
        the neighbor count (dense liquids have ~50 neighbors within 0.5 nm).
    """

    def __init__(self, num_types: int, channels: int = 64, num_layers: int = 3, num_rbf: int = 16,
                 cutoff: float = 0.5, num_out: int = 2, neighbor_norm: float = 1.0):
        super().__init__()
        self.channels = channels
        self.cutoff = float(cutoff)
        self.embedding = nn.Embedding(num_types, channels)
        self.momentum_scalar = nn.Linear(1, channels)
        self.momentum_vector = VectorLinear(1, channels)
        self.rbf = GaussianRBF(num_rbf, cutoff)
        self.messages = nn.ModuleList([PaiNNMessage(channels, num_rbf, cutoff, neighbor_norm) for _ in range(num_layers)])
        self.updates = nn.ModuleList([PaiNNUpdate(channels) for _ in range(num_layers)])
        self.head = GatedVectorHead(channels, num_out)
        with torch.no_grad():  # start close to the physical baseline (free flight), small corrections
            self.head.vec.weight.mul_(0.01)

    def forward(self, types: Tensor, x: Tensor, src: Tensor, dst: Tensor, edge_vec: Tensor) -> Tensor:
        """types [N] int64, x [N, 3] scaled momenta, src/dst [P] int64 (no padding), edge_vec [P, 3] nm
        (r_src - r_dst, minimum image). Returns [N, 3, num_out]."""
        d = torch.sqrt((edge_vec * edge_vec).sum(-1) + 1e-12)
        unit = edge_vec / d.unsqueeze(-1)
        rbf = self.rbf(d)
        fcut = cosine_cutoff(d, self.cutoff)
        s = self.embedding(types) + self.momentum_scalar(torch.sqrt((x * x).sum(-1, keepdim=True) + 1e-12))
        v = self.momentum_vector(x.unsqueeze(-1))  # [N, 3, C]
        for message, update in zip(self.messages, self.updates):
            ds, dv = message(s, v, src, dst, rbf, unit, fcut)
            s, v = s + ds, v + dv
            s, v = update(s, v)
        return self.head(s, v)
