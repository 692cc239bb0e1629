"""FlashSchNetOps: the FlashSchNet model OpenMM runs, its steps routed through the ``torch.ops.openmmflash.*`` ops.

The maths is that of ``openmmflash.schnet.model.FlashSchNet``; this subclass only chooses the implementation:

- neighbor list: the ``neighbor_list`` op (Triton padded list for open replicas on CUDA);
- pair distances (table filters): ``pair_distances_rows``, d_ij = |r_j - r_i + s_ij| with a one-pass positions
  gradient over the destination rows (``OPENMMFLASH_ROW_DISTANCES=0``: the autograd scatter-adds instead);
- CFConv, table filters: ``cfconv_table`` (Hermite tables; scheme "pairs", each unordered pair once with atomics to
  the other end, or "rows", every directed pair from its destination row: ``OPENMMFLASH_TABLE_SCHEME``);
- CFConv, exact filters: ``cfconv_csr`` (fused Triton, CUDA float32, ``backend == "flash"``) or ``cfconv``.

Importing this module registers the ops. Every op has a reference implementation, so the model runs (to the same
numbers) on any device; the Triton kernels run where they apply.
"""

import copy
import os
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from openmmflash.plugin import ops  # noqa: F401  (registers torch.ops.openmmflash.*)
from openmmflash.schnet.config import FlashSchNetConfig
from openmmflash.schnet.model import FlashSchNet
from openmmflash.schnet.reference import pair_distances

TABLE_SCHEMES = ("pairs", "rows")


class FlashSchNetOps(FlashSchNet):
    """A FlashSchNet whose neighbor list, distances and CFConv run on the custom ops (build with ``fromModel``).

    Attributes: ``table_scheme`` ("pairs" | "rows"), ``row_distances`` (bool), ``table_kernels_on_cpu`` (bool:
    table kernels on CPU tensors too, through the Triton interpreter with ``TRITON_INTERPRET=1``, to check the
    float32 kernel arithmetic; otherwise the table op runs its torch reference on CPU).
    """

    table_scheme: str
    row_distances: bool
    table_kernels_on_cpu: bool

    def __init__(self, config: Optional[FlashSchNetConfig] = None):
        super().__init__(config)
        self._configure_ops()

    @classmethod
    def fromModel(cls, model: FlashSchNet) -> "FlashSchNetOps":
        """A copy of ``model`` (weights, buffers, filter tables, metadata) that runs on the ops."""
        fast = copy.deepcopy(model)
        fast.__class__ = cls
        fast._configure_ops()
        return fast

    def _configure_ops(self) -> None:
        self.table_scheme = os.environ.get("OPENMMFLASH_TABLE_SCHEME", "pairs")
        if self.table_scheme not in TABLE_SCHEMES:
            raise ValueError(f"OPENMMFLASH_TABLE_SCHEME must be one of {TABLE_SCHEMES}, got {self.table_scheme!r}")
        self.row_distances = os.environ.get("OPENMMFLASH_ROW_DISTANCES", "1") == "1"
        self.table_kernels_on_cpu = False

    def plainCopy(self) -> FlashSchNet:
        """A copy as a plain FlashSchNet (differentiable twice, no ops)."""
        plain = copy.deepcopy(self)
        plain.__class__ = FlashSchNet
        for name in ("table_scheme", "row_distances", "table_kernels_on_cpu"):
            delattr(plain, name)
        return plain

    def fused(self, values: Tensor) -> bool:
        """Whether the fused exact-filter kernels apply: ``backend == "flash"``, Gaussian/cosine basis, CUDA fp32."""
        return (self.backend == "flash" and self.gaussian_cosine and values.is_cuda
                and values.dtype == torch.float32)

    def neighbor_list(self, positions: Tensor, num_replicas: int, box: Optional[Tensor],
                      capacity: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        src, dst, shifts, num = torch.ops.openmmflash.neighbor_list(positions.detach(), num_replicas, self.cutoff,
                                                                    box, capacity)
        return src, dst, shifts, num

    def pair_geometry(self, positions: Tensor, pairs: List[Tensor]) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        if self.filter_mode == "table" and self.row_distances:
            rowptr = torch.ops.openmmflash.pair_rowptr(pairs[1], positions.shape[0])
            dist = torch.ops.openmmflash.pair_distances_rows(positions, pairs[0], pairs[1], pairs[2], rowptr,
                                                             self.cutoff, positions.is_cuda)
            return dist, pairs[1] >= 0, rowptr
        dist, valid = pair_distances(positions, pairs[0], pairs[1], pairs[2], self.cutoff)
        return dist, valid, None

    def pair_layout(self, dist: Tensor, src: Tensor, dst: Tensor, num_nodes: int,
                    rowptr: Optional[Tensor]) -> List[Tensor]:
        """Table filters: [rowptr (, halfptr for the pairs scheme)]; fused exact filters: [rowptr, perm,
        rowptr_src] (``pair_csr``); otherwise []."""
        if self.filter_mode == "table":
            offsets = rowptr if rowptr is not None else torch.ops.openmmflash.pair_rowptr(dst, num_nodes)
            if self.table_scheme == "pairs" and (dist.is_cuda or self.table_kernels_on_cpu):
                return [offsets, torch.ops.openmmflash.pair_halfptr(src, dst, num_nodes)]
            return [offsets]
        if self.fused(dist):
            offsets, perm, rowptr_src = torch.ops.openmmflash.pair_csr(src, dst, num_nodes)
            return [offsets, perm, rowptr_src]
        return []

    def block_conv(self, t: int, x: Tensor, dist: Tensor, src: Tensor, dst: Tensor, w1: Tensor, b1: Tensor,
                   w2: Tensor, layout: List[Tensor]) -> Tensor:
        if self.filter_mode == "table":
            halfptr: Optional[Tensor] = layout[1] if len(layout) > 1 else None
            return torch.ops.openmmflash.cfconv_table(x, dist, src, dst, layout[0], self.filter_table[t],
                                                      self.table_spacing, self.cutoff,
                                                      x.is_cuda or self.table_kernels_on_cpu, halfptr)
        if len(layout) == 3 and self.fused(x):
            return self.fused_conv(x, dist, src, dst, w1, b1, w2, layout)
        return self.filter_conv(x, dist, src, dst, w1, b1, w2)

    def fused_conv(self, x: Tensor, dist: Tensor, src: Tensor, dst: Tensor, w1: Tensor, b1: Tensor, w2: Tensor,
                   csr: List[Tensor]) -> Tensor:
        """The fused exact-filter CFConv (``cfconv_csr``) over the CSR layout [rowptr, perm, rowptr_src]."""
        return torch.ops.openmmflash.cfconv_csr(x, dist, src, dst, csr[0], csr[1], csr[2], self.mu, w1, b1, w2,
                                                self.gamma, self.cutoff, self.rbf_cutoff, self.filter_precision)

    def filter_conv(self, x: Tensor, dist: Tensor, src: Tensor, dst: Tensor, w1: Tensor, b1: Tensor,
                    w2: Tensor) -> Tensor:
        if not self.gaussian_cosine:
            return self.general_conv(x, dist, src, dst, w1, b1, w2)
        if self.fused(x):
            offsets, perm, rowptr_src = torch.ops.openmmflash.pair_csr(src, dst, x.shape[0])
            return self.fused_conv(x, dist, src, dst, w1, b1, w2, [offsets, perm, rowptr_src])
        return torch.ops.openmmflash.cfconv(x, dist, src, dst, self.mu, w1, b1, w2, self.gamma, self.cutoff,
                                            self.rbf_cutoff)
