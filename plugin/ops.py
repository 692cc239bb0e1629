"""The ``torch.ops.openmmflash.*`` custom ops: the seam through which OpenMM-facing code reaches the kernels.

Importing this module registers the ops (it must happen before a model that calls them is scripted, loaded by
TorchForce or deserialized from XML). Each op has a fake (meta) implementation and, where differentiable, an
autograd registration, so TorchScript, eager PyTorch, TorchForce and PythonForce all run the same code.

- ``neighbor_list(positions [N,3], num_replicas, cutoff, box [3,3]?, capacity) -> (src, dst, shifts, num_pairs)``
  (see ``openmmflash.neighbors``; not differentiable, pass detached positions). Padded lists of open replicas on
  CUDA come from the two-pass Triton kernels of ``openmmflash.plugin.kernels.neighborlist`` (same list).
- ``cfconv(x [N,F'], dist [P], src [P], dst [P], mu [R], w1 [F',R], b1 [F'], w2 [F',F'], gamma, cutoff,
  rbf_cutoff) -> m [N,F']`` (see ``openmmflash.schnet.reference``); backward gives gradients with respect to x,
  dist and the filter weights by recomputing the forward (no edge tensor is kept between forward and backward).
- ``pair_csr(src [P], dst [P], num_nodes) -> (rowptr [N+1], perm [P], rowptr_src [N+1])`` and
  ``cfconv_csr(x, dist, src, dst, rowptr, perm, rowptr_src, mu, w1, b1, w2, gamma, cutoff, rbf_cutoff, precision)``:
  the fused Triton CFConv (``openmmflash.plugin.kernels.cfconv``), CUDA float32, ``precision`` "fp32" | "w16a16"
  (the model's ``filterPrecision``);
  same result as ``cfconv``, backward by recomputation over source-grouped segments (itself an op,
  ``cfconv_csr_backward``, so that torch.compile sees the Triton backward as opaque too).
- ``pair_rowptr(dst [P], num_nodes) -> rowptr [N+1]``, ``pair_halfptr(src, dst, num_nodes) -> halfptr [N]`` and
  ``cfconv_table(x, dist, src, dst, rowptr, table [nodes,2,F'], spacing, cutoff, kernel, halfptr=None)``: CFConv
  with the filter interpolated from a Hermite table (``openmmflash.plugin.kernels.cfconv_table``; inference,
  symmetric pair lists; with ``halfptr`` each unordered pair once); backward ``cfconv_table_backward``.
- ``pair_distances_rows(positions, src, dst, shifts, rowptr, cutoff, kernel) -> dist [P]``: pair distances with a
  one-pass positions gradient over the rows (``openmmflash.plugin.kernels.pairdist``), used by the table path.

The host checks of ``neighbor_list`` (finite positions, capacity overflow) synchronize with the device, so they are
skipped while a CUDA graph is being captured; callers that replay graphs check ``num_pairs`` outside the graph.
"""

from typing import Optional, Tuple

import torch
from torch import Tensor

from openmmflash.neighbors import build_neighbor_list, check_box, check_capacity, check_finite
from openmmflash.plugin.kernels import cfconv as _flash_cfconv  # noqa: F401  (registers pair_csr, cfconv_csr)
from openmmflash.plugin.kernels import cfconv_table as _table_cfconv  # noqa: F401  (pair_rowptr, cfconv_table)
from openmmflash.plugin.kernels import pairdist as _pairdist  # noqa: F401  (pair_distances_rows)
from openmmflash.plugin.kernels.neighborlist import neighbor_list_open
from openmmflash.schnet.reference import cfconv_reference


@torch.library.custom_op("openmmflash::neighbor_list", mutates_args=())
def neighbor_list(positions: Tensor, num_replicas: int, cutoff: float, box: Optional[Tensor],
                  capacity: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    capturing = positions.is_cuda and torch.cuda.is_current_stream_capturing()
    if not capturing:
        check_finite(positions)
        if box is not None:
            check_box(box, cutoff)
    if box is None and capacity > 0 and positions.is_cuda and positions.dtype == torch.float32:
        src, dst, shifts, num = neighbor_list_open(positions, num_replicas, cutoff, capacity)
    else:
        src, dst, shifts, num = build_neighbor_list(positions, num_replicas, cutoff, box, capacity)
    if not capturing:
        check_capacity(num, capacity)
    return src, dst, shifts, num


@neighbor_list.register_fake
def _neighbor_list_fake(positions, num_replicas, cutoff, box, capacity):
    size = capacity if capacity > 0 else torch.library.get_ctx().new_dynamic_size()
    index = positions.new_empty((size,), dtype=torch.int64)
    return index, torch.empty_like(index), positions.new_empty((size, 3)), positions.new_empty((), dtype=torch.int64)


def _neighbor_list_setup(ctx, inputs, output):
    pass


def _neighbor_list_backward(ctx, grad_src, grad_dst, grad_shifts, grad_num):
    # Pairs are piecewise constant in the positions: no gradient. Registered (rather than left out) because
    # torch.jit.freeze, which TorchForce applies, drops the detach() in front of this op.
    return None, None, None, None, None


neighbor_list.register_autograd(_neighbor_list_backward, setup_context=_neighbor_list_setup)


@torch.library.custom_op("openmmflash::cfconv", mutates_args=())
def cfconv(x: Tensor, dist: Tensor, src: Tensor, dst: Tensor, mu: Tensor, w1: Tensor, b1: Tensor, w2: Tensor,
           gamma: float, cutoff: float, rbf_cutoff: bool) -> Tensor:
    return cfconv_reference(x, dist, src, dst, mu, w1, b1, w2, gamma, cutoff, rbf_cutoff)


@cfconv.register_fake
def _cfconv_fake(x, dist, src, dst, mu, w1, b1, w2, gamma, cutoff, rbf_cutoff):
    return torch.empty_like(x)


def _cfconv_setup(ctx, inputs, output):
    x, dist, src, dst, mu, w1, b1, w2, gamma, cutoff, rbf_cutoff = inputs
    ctx.save_for_backward(x, dist, src, dst, mu, w1, b1, w2)
    ctx.params = (gamma, cutoff, rbf_cutoff)


def _cfconv_backward(ctx, grad_out):
    x, dist, src, dst, mu, w1, b1, w2 = ctx.saved_tensors
    wanted = [ctx.needs_input_grad[k] for k in (0, 1, 5, 6, 7)]
    leaves = [t.detach().requires_grad_(need) for t, need in zip((x, dist, w1, b1, w2), wanted)]
    with torch.enable_grad():
        out = cfconv_reference(leaves[0], leaves[1], src, dst, mu, leaves[2], leaves[3], leaves[4], *ctx.params)
        inputs = [t for t, need in zip(leaves, wanted) if need]
        grads = list(torch.autograd.grad(out, inputs, grad_out)) if inputs else []
    full = [grads.pop(0) if need else None for need in wanted]
    return full[0], full[1], None, None, None, full[2], full[3], full[4], None, None, None


cfconv.register_autograd(_cfconv_backward, setup_context=_cfconv_setup)
