"""CSR layout of a destination-sorted pair list, built on the device without host synchronization.

The flash CFConv reduces messages per destination (forward) and per source (backward) without atomics, so it needs

- ``rowptr`` [N + 1]: pairs of destination i are rows rowptr[i] .. rowptr[i+1]-1 of the (dst-sorted) pair list;
- ``perm`` [P] and ``rowptr_src`` [N + 1]: perm[rowptr_src[j] .. rowptr_src[j+1]-1] are the pairs whose source is j.

Padding pairs (dst = -1) sort past every bead and so belong to no segment. Both offsets come from a binary search of
every bead index in the sorted keys (``torch.searchsorted``) and the source order from a stable radix sort of 32-bit
keys; all shapes are fixed by (N, P), so the build can be captured in a CUDA graph.

Caution: the pair list must be sorted by destination with padding last, as ``openmmflash.neighbors`` returns it;
this is checked on CPU tensors only (a check on the GPU would need a host synchronization).
"""

from typing import Tuple

import torch
from torch import Tensor


def build_csr(src: Tensor, dst: Tensor, num_nodes: int) -> Tuple[Tensor, Tensor, Tensor]:
    """(rowptr [N+1] int64, perm [P] int64, rowptr_src [N+1] int64) of pairs src/dst [P] (dst = -1: padding)."""
    if src.shape != dst.shape or src.dim() != 1:
        raise ValueError(f"src and dst must be 1-d of equal length, got {tuple(src.shape)} and {tuple(dst.shape)}")
    if num_nodes >= 2 ** 31 - 1 or src.shape[0] >= 2 ** 31 - 1:
        raise ValueError(f"CSR build supports fewer than 2^31 beads and pairs, got {num_nodes} and {src.shape[0]}")
    valid = dst >= 0
    beyond = torch.full_like(dst, num_nodes)
    dst_key = torch.where(valid, dst, beyond).to(torch.int32)
    src_key = torch.where(valid, src, beyond).to(torch.int32)
    if not dst_key.is_cuda and dst_key.shape[0] > 1 and bool((dst_key[1:] < dst_key[:-1]).any()):
        raise ValueError("the flash CFConv needs pairs sorted by destination with padding (dst = -1) last, as "
                         "openmmflash.neighbors.build_neighbor_list returns them; sort them with "
                         "torch.sort(dst, stable=True) or use the reference backend")
    nodes = torch.arange(num_nodes + 1, dtype=torch.int32, device=dst.device)
    rowptr = torch.searchsorted(dst_key, nodes)
    src_sorted, perm = torch.sort(src_key, stable=True)
    rowptr_src = torch.searchsorted(src_sorted, nodes)
    return rowptr, perm, rowptr_src
