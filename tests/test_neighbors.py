"""The batched neighbor list against a NumPy brute force (pairs compared after sorting)."""

import os

import numpy as np
import pytest
import torch

from openmmflash.neighbors import NeighborList, build_neighbor_list, check_box, check_capacity


def numpy_pairs(pos, replicas, cutoff, box=None):
    n = len(pos) // replicas
    pairs = []
    for b in range(replicas):
        for i in range(n):
            for j in range(n):
                if i == j:
                    continue
                d = pos[b * n + j] - pos[b * n + i]
                if box is not None:
                    for k in (2, 1, 0):
                        d = d - box[k] * np.round(d[k] / box[k, k])
                if np.linalg.norm(d) < cutoff:
                    pairs.append((b * n + j, b * n + i))
    return sorted(pairs)


def as_sorted(src, dst):
    keep = dst >= 0
    return sorted(zip(src[keep].tolist(), dst[keep].tolist()))


@pytest.mark.parametrize("replicas,n", [(1, 1), (1, 7), (3, 5), (2, 13)])
def test_exact_list_matches_brute_force(replicas, n):
    pos = np.random.default_rng(n).uniform(0, 3, size=(replicas * n, 3))
    src, dst, shifts, num = build_neighbor_list(torch.tensor(pos), replicas, 1.5, None, 0)
    assert as_sorted(src, dst) == numpy_pairs(pos, replicas, 1.5)
    assert int(num) == len(src)
    assert torch.all(dst[1:] >= dst[:-1])  # destination-sorted (CSR order)
    assert torch.count_nonzero(shifts) == 0


@pytest.mark.parametrize("triclinic", [False, True])
def test_periodic_minimum_image(triclinic):
    box = np.diag([3.0, 3.2, 3.4])
    if triclinic:
        box[1, 0], box[2, 0], box[2, 1] = 0.8, -1.1, 0.9
    pos = np.random.default_rng(5).uniform(0, 3, size=(23, 3))
    src, dst, shifts, _ = build_neighbor_list(torch.tensor(pos), 1, 1.2, torch.tensor(box), 0)
    assert as_sorted(src, dst) == numpy_pairs(pos, 1, 1.2, box)
    vec = pos[src.numpy()] - pos[dst.numpy()] + shifts.numpy()
    assert np.all(np.linalg.norm(vec, axis=1) < 1.2)
    assert np.abs(shifts.numpy()).max() > 0  # some pairs cross the boundary


def test_padded_capacity_and_overflow():
    pos = torch.tensor(np.random.default_rng(1).uniform(0, 2, size=(2 * 9, 3)))
    src, dst, shifts, num = build_neighbor_list(pos, 2, 1.0, None, 0)
    exact = as_sorted(src, dst)
    psrc, pdst, pshifts, pnum = build_neighbor_list(pos, 2, 1.0, None, len(exact) + 10)
    assert psrc.shape == (len(exact) + 10,) and int(pnum) == len(exact)
    assert as_sorted(psrc, pdst) == exact
    assert torch.all(psrc[len(exact):] == -1) and torch.all(pdst[len(exact):] == -1)
    small = len(exact) - 3
    _, _, _, onum = build_neighbor_list(pos, 2, 1.0, None, small)
    assert int(onum) == len(exact)
    with pytest.raises(RuntimeError, match="neighbor list overflow.*larger capacity"):
        check_capacity(onum, small)


def test_empty_list():
    pos = torch.tensor([[0.0, 0.0, 0.0], [5.0, 0.0, 0.0], [0.0, 9.0, 0.0]])
    src, dst, shifts, num = build_neighbor_list(pos, 1, 1.0, None, 0)
    assert src.numel() == 0 and int(num) == 0
    psrc, pdst, _, pnum = build_neighbor_list(pos, 1, 1.0, None, 4)
    assert torch.all(pdst == -1) and int(pnum) == 0


def test_box_checks():
    with pytest.raises(ValueError, match="too small for the cutoff"):
        check_box(torch.eye(3) * 2.0, 1.5)
    bad = torch.eye(3) * 5.0
    bad[0, 1] = 0.3
    with pytest.raises(ValueError, match="reduced form"):
        check_box(bad, 1.0)


def test_verlet_skin_rebuilds_only_when_needed():
    rng = np.random.default_rng(2)
    pos = torch.tensor(rng.uniform(0, 3, size=(30, 3)))
    nl = NeighborList(cutoff=1.0, skin=0.4)
    nl.update(pos)
    moved = pos + 0.05
    src, dst, _ = nl.update(moved)
    assert nl.numBuilds == 1
    # Every pair within the cutoff at the moved positions is in the reused list.
    exact = set(numpy_pairs(moved.numpy(), 1, 1.0))
    assert exact <= set(as_sorted(src, dst))
    far = pos.clone()
    far[0] += 0.3
    nl.update(far)
    assert nl.numBuilds == 2
    with pytest.raises(ValueError, match="NaN"):
        nl.update(torch.full((30, 3), float("nan")))


KERNEL_DEVICES = [pytest.param("cpu", marks=pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                                                               reason="CPU kernels need the interpreter")),
                  pytest.param("cuda", marks=pytest.mark.cuda)]


@pytest.mark.parametrize("device", KERNEL_DEVICES)
@pytest.mark.parametrize("replicas,n,spread", [(1, 1, 1.0), (3, 5, 1.0), (2, 150, 3.0), (1, 4, 50.0)])
def test_open_list_kernels_match_torch(device, replicas, n, spread):
    """The two-pass Triton list equals build_neighbor_list slot by slot (order, padding, count), also past the
    capacity (the first `capacity` pairs kept, the true count returned), for one bead, several tiles per row
    (n = 150 > BLOCK_J) and no pairs at all."""
    from openmmflash.plugin.kernels.neighborlist import neighbor_list_open

    gen = torch.Generator().manual_seed(n)
    pos = (torch.randn(replicas * n, 3, generator=gen) * spread).to(device)
    exact = int(build_neighbor_list(pos, replicas, 2.5, None, 0)[3])
    for capacity in (exact + 17, max(1, exact - 5)):
        want = build_neighbor_list(pos, replicas, 2.5, None, capacity)
        got = neighbor_list_open(pos, replicas, 2.5, capacity)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        assert torch.equal(got[2], torch.zeros_like(want[2])) and int(got[3]) == int(want[3]) == exact
    with pytest.raises(ValueError, match="padded"):
        neighbor_list_open(pos, replicas, 2.5, 0)
