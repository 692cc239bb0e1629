"""The cube-map codebook index returns the same nearest codeword as a search over the whole codebook."""

import pytest
import torch

from openmmflash.gaq.codebook import nearestCodeword, sphereCodebook
from openmmflash.gaq.codebookindex import CodebookIndex


def unit(n, seed=0, dtype=torch.float32):
    u = torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (u / u.norm(dim=1, keepdim=True)).to(dtype)


def check_same_as_full_search(codebook, u):
    full = (u @ codebook.T).argmax(1)
    got = CodebookIndex(codebook).nearest(u)
    best, chosen = (u * codebook[full]).sum(1), (u * codebook[got]).sum(1)
    assert torch.all(chosen >= best - 1e-6)        # never a worse codeword (only float ties may differ)
    assert (got == full).float().mean() > 0.999


@pytest.mark.parametrize("bits", [6, 10])
def test_sphere_codebooks(bits):
    check_same_as_full_search(sphereCodebook(bits), unit(50_000, seed=bits))


def test_any_codebook_odd_size_and_coarse_cells():
    """The candidate bound does not assume a uniform codebook: random, clustered codewords, 101 of them, and a
    deliberately coarse map (large cells, many candidates)."""
    c = unit(101, seed=7, dtype=torch.float64)
    c = torch.cat([c[:60], (c[60:] + torch.tensor([0.0, 0.0, 3.0], dtype=torch.float64))])
    c = c / c.norm(dim=1, keepdim=True)
    u = unit(20_000, seed=8, dtype=torch.float64)
    check_same_as_full_search(c, u)
    coarse = CodebookIndex(c, resolution=2)
    assert torch.equal(coarse.nearest(u), (u @ c.T).argmax(1))
    assert coarse.width > CodebookIndex(c).width


def test_cube_edges_corners_and_zero_vectors():
    c = sphereCodebook(8)
    axes = torch.eye(3)
    edges = torch.tensor([[1.0, 1.0, 0.0], [0.0, -1.0, 1.0], [1.0, 1.0, 1.0], [-1.0, 1.0, -1.0]])
    u = torch.cat([axes, -axes, edges / edges.norm(dim=1, keepdim=True)])
    check_same_as_full_search(c, u)
    assert CodebookIndex(c).nearest(torch.zeros(2, 3)).tolist() == [0, 0]


def test_nearest_codeword_uses_the_index_and_stays_odd():
    c = sphereCodebook(10)
    u = unit(5_000, seed=3)
    i, j = nearestCodeword(u, c), nearestCodeword(-u, c)
    assert torch.equal(c[j], -c[i])
