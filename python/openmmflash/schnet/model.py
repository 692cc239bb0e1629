"""FlashSchNet: a SchNet coarse-grained potential with exactly the semantics of CGSchNet (mlcg ``StandardSchNet``).

::

    h_i^0     = Embedding[z_i]                                            [N, F]
    x_i       = lin1(h_i^t)            (F -> F', no bias)                 [N, F']
    m_i       = sum_{j in N(i)} x_j * W_t(d_ij)                           CFConv, see schnet.reference
    h_i^{t+1} = h_i^t + lin(tanh(lin2(m_i)))   (lin2: F' -> F, lin: F -> F)
    eps_i     = MLP_[F, *readoutHidden, 1](h_i^T)  (tanh between layers, no bias on the last layer)
    E_b       = sum_{i in replica b} eps_i ;       F_i = -dE/dr_i

Positions and the cutoff are in the model's length unit (``config.lengthUnit``, Angstrom by default) and energies in
its energy unit (kcal/mol by default); ``openmmflash.plugin`` converts at the OpenMM boundary (nm, kJ/mol).

This model is plain PyTorch, differentiable twice (training needs gradients of forces). The steps the fused kernels
replace are methods (``neighbor_list``, ``pair_geometry``, ``pair_layout``, ``block_conv``) that
``openmmflash.plugin.opsmodel.FlashSchNetOps``, the model OpenMM runs, overrides with ``torch.ops.openmmflash.*``.
"""

import math
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from openmmflash.neighbors import build_neighbor_list
from openmmflash.schnet.basis import cutoff_envelope, initial_basis, radial_basis
from openmmflash.schnet.config import FlashSchNetConfig
from openmmflash.schnet.filtertable import cfconv_table_reference
from openmmflash.schnet.modelfile import foreignReader, readModelFile, resolveModelPath, saveModel
from openmmflash.schnet.reference import cfconv_reference, pair_distances


class InteractionBlock(nn.Module):
    """One SchNet interaction block: filter MLP [R, F', F'], lin1, lin2, lin (weights only; math in FlashSchNet)."""

    def __init__(self, hidden: int, filters: int, num_rbf: int):
        super().__init__()
        self.filter1 = nn.Linear(num_rbf, filters)
        self.filter2 = nn.Linear(filters, filters, bias=False)
        self.lin1 = nn.Linear(hidden, filters, bias=False)
        self.lin2 = nn.Linear(filters, hidden)
        self.lin = nn.Linear(hidden, hidden)


class FlashSchNet(nn.Module):
    """SchNet CG potential. ``forward(positions [N, 3], types [N], ...) -> energies [B]`` in model units."""

    def __init__(self, config: Optional[FlashSchNetConfig] = None):
        super().__init__()
        self.config = config if config is not None else FlashSchNetConfig()
        c = self.config
        self.cutoff = float(c.cutoff)
        self.rbf_cutoff = bool(c.rbfCutoff)
        self.backend = str(c.backend)      # "flash" | "reference" (the fused kernels of FlashSchNetOps, or not)
        self.filter_precision = str(c.filterPrecision)  # "fp32" | "w16a16" (flash filter MLP)
        # "exact" (filter MLP per pair) or "table" (Hermite tables of every block's filter, [T, nodes, 2, F'] with
        # values and spacing * dW/dd at nodes spacing apart; built by openmmflash.schnet.filtertable, not saved).
        self.filter_mode = "exact"
        self.register_buffer("filter_table", torch.zeros(0, 0, 2, 0), persistent=False)
        self.table_spacing = 1.0
        # Bead-type table, CG mapping, prior parameters, provenance: see openmmflash.schnet.modelfile.
        self.metadata = {}
        self.embedding = nn.Embedding(c.numBeadTypes, c.hiddenChannels)
        # Basis and envelopes (openmmflash.schnet.basis); Gaussian/cosine models take the fused-kernel path.
        self.rbf_type = str(c.rbfType)
        self.rbf_lower = float(c.rbfLower)
        self.rbf_envelope = str(c.rbfCutoffType) if c.rbfCutoff else "identity"
        self.rbf_smooth_width = float(c.rbfSmoothWidth)
        self.filter_envelope = str(c.filterCutoffType)
        self.filter_lower = float(c.filterCutoffLower)
        self.filter_upper = float(c.filterUpper)
        self.filter_smooth_width = float(c.filterSmoothWidth)
        self.gaussian_cosine = bool(c.isGaussianCosine)
        self.max_num_neighbors = int(c.maxNumNeighbors)
        mu, betas = initial_basis(c.rbfType, c.numRbf, c.rbfLower, c.cutoff)
        self.register_buffer("mu", mu)     # Gaussian centres, or ExpNormal means
        # ExpNormal widths; an empty, unsaved buffer for the Gaussian basis (its model files are unchanged).
        self.register_buffer("rbf_betas", betas, persistent=c.rbfType != "gaussian")
        spacing = (c.cutoff - c.rbfLower) / (c.numRbf - 1)
        self.gamma = float(-0.5 / spacing ** 2 if c.rbfGamma is None else c.rbfGamma)
        self.blocks = nn.ModuleList([InteractionBlock(c.hiddenChannels, c.numFilters, c.numRbf)
                                     for _ in range(c.numInteractions)])
        widths = [c.hiddenChannels] + list(c.readoutHidden) + [1]
        self.readout = nn.ModuleList([nn.Linear(widths[k], widths[k + 1],
                                                bias=k + 2 < len(widths) or bool(c.readoutLastBias))
                                      for k in range(len(widths) - 1)])
        self.reset_parameters()

    def reset_parameters(self, seed: Optional[int] = None) -> None:
        """Xavier-uniform weights, zero biases, unit-normal embeddings (deterministic if ``seed`` is given)."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        with torch.no_grad():
            for p in self.parameters():
                if p.dim() >= 2:
                    bound = math.sqrt(6.0 / (p.shape[0] + p.shape[1]))
                    p.copy_(torch.rand(p.shape, generator=gen) * 2 * bound - bound)
                else:
                    p.zero_()
            self.embedding.weight.copy_(torch.randn(self.embedding.weight.shape, generator=gen))

    @classmethod
    def load(cls, pathOrName: str, device: str = "cpu") -> "FlashSchNet":
        """Load a model file, or a bundled model by name (see :func:`loadModel`)."""
        return loadModel(pathOrName, device)

    def save(self, path: str, **metadata) -> None:
        """Write this model and its metadata to one file (see ``openmmflash.schnet.modelfile.saveModel``)."""
        saveModel(self, path, **metadata)

    def extra_repr(self) -> str:
        c = self.config
        return (f"F={c.hiddenChannels}, F'={c.numFilters}, R={c.numRbf}, T={c.numInteractions}, "
                f"cutoff={c.cutoff} {c.lengthUnit}, energy in {c.energyUnit}")

    def neighbor_pairs(self, positions: Tensor, num_replicas: int, box: Optional[Tensor], capacity: int) -> List[Tensor]:
        """[src, dst, shifts, num_pairs] within the cutoff, per replica (see openmmflash.neighbors).

        A padded list (``capacity > 0``) that overflowed where no host check ran (inside a CUDA graph, or without
        the ops) gets NaN shifts, so the energy and forces are NaN (OpenMM then stops with a NaN error) instead of
        silently missing pairs; outside graphs the ``neighbor_list`` op raises a clear error first.
        """
        src, dst, shifts, num = self.neighbor_list(positions, num_replicas, box, capacity)
        if capacity > 0:
            shifts = shifts.masked_fill(num > capacity, float("nan"))
        return [src, dst, shifts, num]

    def neighbor_list(self, positions: Tensor, num_replicas: int, box: Optional[Tensor],
                      capacity: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """(src, dst, shifts, num_pairs) of ``openmmflash.neighbors.build_neighbor_list``."""
        src, dst, shifts, num = build_neighbor_list(positions, num_replicas, self.cutoff, box, capacity)
        return src, dst, shifts, num

    def pair_geometry(self, positions: Tensor, pairs: List[Tensor]) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        """(dist [P], valid [P], destination offsets [N + 1] or None) of the pairs [src, dst, shifts, num]."""
        dist, valid = pair_distances(positions, pairs[0], pairs[1], pairs[2], self.cutoff)
        return dist, valid, None

    def filter_conv(self, x: Tensor, dist: Tensor, src: Tensor, dst: Tensor, w1: Tensor, b1: Tensor,
                    w2: Tensor) -> Tensor:
        """CFConv m [N, F'] of x [N, F'] over pairs (dist, src, dst [P], dst-sorted, dst = -1 padding), filter
        weights w1 [F', R], b1 [F'], w2 [F', F'].

        (Weights are passed rather than the block so that TorchScript can compile models of different shapes in one
        process: a ``block: InteractionBlock`` argument binds to the first compiled InteractionBlock type.)
        Models with another basis or envelope (imported mlcg models) run ``general_conv``.
        """
        if not self.gaussian_cosine:
            return self.general_conv(x, dist, src, dst, w1, b1, w2)
        return cfconv_reference(x, dist, src, dst, self.mu, w1, b1, w2, self.gamma, self.cutoff, self.rbf_cutoff)

    def filter_of(self, dist: Tensor, w1: Tensor, b1: Tensor, w2: Tensor) -> Tensor:
        """Filter C(d) MLP(rbf(d)) [P, F'] of one block (weights w1 [F', R], b1 [F'], w2 [F', F']), any basis."""
        rbf_env = cutoff_envelope(dist, self.rbf_envelope, self.rbf_lower, self.cutoff, self.rbf_smooth_width)
        rbf = radial_basis(dist, self.rbf_type, self.mu, self.rbf_betas, self.gamma, self.rbf_lower, self.cutoff,
                           rbf_env)
        hidden = torch.tanh(torch.nn.functional.linear(rbf, w1, b1))
        envelope = cutoff_envelope(dist, self.filter_envelope, self.filter_lower, self.filter_upper,
                                   self.filter_smooth_width)
        return torch.nn.functional.linear(hidden, w2) * envelope.unsqueeze(-1)

    def filter_weights(self, distances: Tensor) -> Tensor:
        """W_t(d) = C(d) MLP_t(rbf(d)) [T, P, F'] of every interaction block t at distances [P] (model length
        unit): exactly what multiplies lin1(x_j) in the CFConv (used to tabulate filters)."""
        out: List[Tensor] = []
        for block in self.blocks:
            out.append(self.filter_of(distances, block.filter1.weight, block.filter1.bias, block.filter2.weight))
        return torch.stack(out)

    def general_conv(self, x: Tensor, dist: Tensor, src: Tensor, dst: Tensor, w1: Tensor, b1: Tensor,
                     w2: Tensor) -> Tensor:
        """CFConv with materialized [P, F'] edge tensors for any basis/envelope (dst = -1 padding adds nothing)."""
        valid = dst >= 0
        src_c = torch.where(valid, src, torch.zeros_like(src))
        dst_c = torch.where(valid, dst, torch.zeros_like(dst))
        safe_dist = torch.where(valid, dist, torch.full_like(dist, 2.0 * self.cutoff))
        w = self.filter_of(safe_dist, w1, b1, w2) * valid.unsqueeze(-1).to(x.dtype)
        return torch.zeros_like(x).index_add(0, dst_c, x.index_select(0, src_c) * w)

    def pair_layout(self, dist: Tensor, src: Tensor, dst: Tensor, num_nodes: int,
                    rowptr: Optional[Tensor]) -> List[Tensor]:
        """Index arrays that depend only on the pair list, built once per call for ``block_conv`` (none here)."""
        return []

    def block_conv(self, t: int, x: Tensor, dist: Tensor, src: Tensor, dst: Tensor, w1: Tensor, b1: Tensor,
                   w2: Tensor, layout: List[Tensor]) -> Tensor:
        """CFConv m [N, F'] of interaction block ``t``: its filter table (``filter_mode == "table"``, inference with
        fixed weights) or its filter MLP (weights w1, b1, w2); ``layout`` from ``pair_layout``."""
        if self.filter_mode == "table":
            return cfconv_table_reference(x, dist, src, dst, self.filter_table[t], self.table_spacing, self.cutoff)
        return self.filter_conv(x, dist, src, dst, w1, b1, w2)

    def atom_energies(self, types: Tensor, dist: Tensor, src: Tensor, dst: Tensor,
                      rowptr: Optional[Tensor] = None) -> Tensor:
        """Per-bead energies eps_i [N] from bead types [N] and the pair list (dist [P], src/dst [P]; destination
        offsets ``rowptr`` [N + 1] if already built)."""
        h = self.embedding(types)
        layout = self.pair_layout(dist, src, dst, h.shape[0], rowptr)  # once per call, not once per block
        t = 0
        for block in self.blocks:
            x = block.lin1(h)
            m = self.block_conv(t, x, dist, src, dst, block.filter1.weight, block.filter1.bias, block.filter2.weight,
                                layout)
            h = h + block.lin(torch.tanh(block.lin2(m)))
            t += 1
        for k, layer in enumerate(self.readout):
            h = layer(h)
            if k + 1 < len(self.readout):
                h = torch.tanh(h)
        return h.squeeze(-1)

    def forward(self, positions: Tensor, types: Tensor, num_replicas: int = 1, box: Optional[Tensor] = None,
                capacity: int = 0) -> Tensor:
        """Energy per replica [B] (model units) of positions [B * n, 3] (model length unit) with types [B * n]."""
        if types.shape[0] != positions.shape[0]:
            raise ValueError(f"got {positions.shape[0]} positions but {types.shape[0]} bead types")
        pairs = self.neighbor_pairs(positions, num_replicas, box, capacity)
        dist, valid, rowptr = self.pair_geometry(positions, pairs)
        if self.max_num_neighbors > 0:
            # mlcg keeps at most max_num_neighbors per bead (an arbitrary subset): where that would bind, the
            # energy is NaN rather than silently different (no host sync, so CUDA graphs keep working).
            counts = torch.zeros(positions.shape[0], dtype=dist.dtype, device=dist.device).index_add(
                0, torch.where(valid, pairs[1], torch.zeros_like(pairs[1])), valid.to(dist.dtype))
            too_many = (counts > float(self.max_num_neighbors)).any()
            dist = torch.where(too_many, torch.full_like(dist, float("nan")), dist)
        eps = self.atom_energies(types, dist, pairs[0], pairs[1], rowptr)
        return eps.reshape(num_replicas, -1).sum(1)

    def energy_and_forces(self, positions: Tensor, types: Tensor, num_replicas: int = 1,
                          box: Optional[Tensor] = None, create_graph: bool = False):
        """(energies [B], forces [N, 3]) in model units via autograd; ``create_graph`` for force matching."""
        positions = positions if positions.requires_grad else positions.detach().requires_grad_(True)
        energy = self.forward(positions, types, num_replicas, box)
        (grad,) = torch.autograd.grad(energy.sum(), positions, create_graph=create_graph)
        return energy, -grad


def loadModel(pathOrName: str, device: Optional[str] = "cpu"):
    """Load a FlashSchNet model from a file path, a bundled model name or a file of another format with a
    registered reader (mlcg files once ``openmmflash.mlcg`` is imported, which ``openmmflash.plugin`` does; see
    ``openmmflash.schnet.modelfile.MODEL_READERS``). Returns a FlashSchNet in eval mode."""
    path = resolveModelPath(pathOrName)
    foreign = foreignReader(path)
    if foreign is not None:
        return foreign(path).to(device).eval()
    payload = readModelFile(path)
    model = FlashSchNet(FlashSchNetConfig.fromDict(payload["config"]))
    model.load_state_dict(payload["stateDict"])
    model.metadata = dict(payload.get("metadata", {}))
    return model.to(device).eval()
