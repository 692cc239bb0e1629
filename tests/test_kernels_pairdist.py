"""Pair distances with the one-pass gradient (plugin/kernels/pairdist.py) against ``pair_distances`` with autograd.

On CPU the kernels run through the Triton interpreter; the ``cuda`` copies run the compiled kernels.
"""

import os

import pytest
import torch

from openmmflash.neighbors import build_neighbor_list
from openmmflash.plugin import ops  # noqa: F401  (registers torch.ops.openmmflash.*)
from openmmflash.schnet.reference import pair_distances

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
DEVICES = [pytest.param("cpu", marks=pytest.mark.skipif(not INTERPRETED, reason="CPU kernels need the interpreter")),
           pytest.param("cuda", marks=pytest.mark.cuda)]


def _both(pos, src, dst, shifts, cutoff, half=False):
    """((dist, dL/dpos) of the kernel op, (dist, dL/dpos) of pair_distances) for a random upstream (zero on the
    pairs with source < destination when ``half``, as the table kernels' pair scheme leaves it)."""
    out = []
    for kernel in (True, False):
        p = pos.clone().requires_grad_(True)
        if kernel:
            rowptr = torch.ops.openmmflash.pair_rowptr(dst, pos.shape[0])
            dist = torch.ops.openmmflash.pair_distances_rows(p, src, dst, shifts, rowptr, cutoff, True)
        else:
            dist = pair_distances(p, src, dst, shifts, cutoff)[0]
        up = torch.randn(dist.shape, generator=torch.Generator().manual_seed(1)).to(pos.device)
        if half:
            up = torch.where(src > dst, up, torch.zeros_like(up))
        (grad,) = torch.autograd.grad(dist, p, up)
        out.append((dist.detach(), grad))
    return out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("capacity", [0, 500])
@pytest.mark.parametrize("box", [None, [[6.0, 0, 0], [1.0, 6.5, 0], [-0.5, 1.2, 7.0]]])
@pytest.mark.parametrize("half", [False, True])
def test_distances_match_autograd(device, capacity, box, half):
    """Three replicas of 9 beads, exact and padded lists, open and triclinic periodic boxes."""
    gen = torch.Generator().manual_seed(0)
    pos = (torch.randn(27, 3, generator=gen) * 2.0).to(device)
    box_t = None if box is None else torch.tensor(box, device=device)
    src, dst, shifts, _ = build_neighbor_list(pos, 3, 2.9, box_t, capacity)
    assert int((dst >= 0).sum()) > 30
    if box is not None:
        assert bool((shifts.abs() > 0).any())  # images really used
    (d, g), (d_ref, g_ref) = _both(pos, src, dst, shifts, 2.9, half)
    assert torch.allclose(d, d_ref, rtol=1e-6, atol=1e-6)
    assert float((g - g_ref).norm() / g_ref.norm()) < 1e-5


@pytest.mark.parametrize("device", DEVICES)
def test_unsorted_list_and_edge_cases(device):
    """Rows in any source order (no symmetry or ordering needed), no pairs, one bead."""
    gen = torch.Generator().manual_seed(3)
    pos = (torch.randn(14, 3, generator=gen) * 1.5).to(device)
    src, dst, shifts, _ = build_neighbor_list(pos, 2, 3.0, None, 0)
    order = torch.argsort(dst * 100 - src)  # sources descending within each row
    src, dst, shifts = src[order], dst[order], shifts[order]
    (d, g), (d_ref, g_ref) = _both(pos, src, dst, shifts, 3.0)
    assert torch.allclose(d, d_ref, rtol=1e-6, atol=1e-6)
    assert float((g - g_ref).norm() / g_ref.norm()) < 1e-5
    # No pairs at all, and a single bead: zero gradient, no error.
    far = torch.tensor([[0.0, 0, 0], [50.0, 0, 0]], device=device)
    for p in (far, far[:1]):
        s, d, sh, _ = build_neighbor_list(p, 1, 3.0, None, 0)
        (dist, g), _ = _both(p, s, d, sh, 3.0)
        assert dist.shape == (0,) and not g.any()


@pytest.mark.parametrize("device", DEVICES)
def test_nan_shifts_propagate(device):
    """An overflowed padded list gets NaN shifts (model.neighbor_pairs): the distances are NaN too."""
    pos = (torch.randn(8, 3, generator=torch.Generator().manual_seed(2))).to(device)
    src, dst, shifts, _ = build_neighbor_list(pos, 1, 3.0, None, 0)
    shifts = torch.full_like(shifts, float("nan"))
    rowptr = torch.ops.openmmflash.pair_rowptr(dst, 8)
    dist = torch.ops.openmmflash.pair_distances_rows(pos, src, dst, shifts, rowptr, 3.0, True)
    assert torch.isnan(dist).all()
