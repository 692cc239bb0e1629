"""Flash CFConv kernels (plugin/kernels/cfconv.py) against the plain PyTorch reference, forward and gradients.

On CPU the Triton kernels run through the interpreter (tests/conftest.py sets TRITON_INTERPRET=1), so sizes are
tiny and odd; the ``cuda`` copies run the compiled kernels (run them with OPENMMFLASH_TEST_CUDA=1 on a GPU).
"""

import os

import pytest
import torch

from openmmflash.neighbors import build_neighbor_list
from openmmflash.plugin import ops  # noqa: F401  (registers torch.ops.openmmflash.*)
from openmmflash.schnet.reference import cfconv_reference, pair_distances

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
DEVICES = [pytest.param("cpu", marks=pytest.mark.skipif(not INTERPRETED, reason="CPU kernels need the interpreter")),
           pytest.param("cuda", marks=pytest.mark.cuda)]
# Tolerances on ||flash - reference|| / ||reference||:
# fp32: tf32x3 dots on the GPU and exact fp32 in the interpreter; both differ from the reference only by summation
#       order, far under 1e-5.
# w16a16: fp16 operands (11-bit mantissa, relative rounding 2^-11 ~ 5e-4) through two layers and their VJPs with
#       fp32 accumulation: a few 1e-4 expected, 5e-3 allowed.
TOLERANCES = {"fp32": 1e-5, "w16a16": 5e-3}


def _rel(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def _problem(device, replicas, beads, filters, rbf, cutoff=3.0, spread=1.5, capacity=0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    pos = (torch.randn(replicas * beads, 3, generator=gen) * spread).to(device)
    src, dst, shifts, _ = build_neighbor_list(pos, replicas, cutoff, None, capacity)
    n = replicas * beads
    params = dict(mu=torch.linspace(0.0, cutoff, rbf), gamma=-0.5 / (cutoff / (rbf - 1)) ** 2, cutoff=cutoff,
                  w1=torch.randn(filters, rbf, generator=gen) * 0.4, b1=torch.randn(filters, generator=gen) * 0.1,
                  w2=torch.randn(filters, filters, generator=gen) * 0.4)
    params = {k: v.to(device) if torch.is_tensor(v) else v for k, v in params.items()}
    x = torch.randn(n, filters, generator=gen).to(device)
    return pos, src, dst, shifts, x, params


def _both(pos, src, dst, shifts, x, p, precision, rbf_cutoff):
    """(flash output, reference output, flash grads, reference grads) w.r.t. (x, positions)."""
    results = []
    for flash in (True, False):
        xx = x.clone().requires_grad_(True)
        pp = pos.clone().requires_grad_(True)
        dist, _ = pair_distances(pp, src, dst, shifts, p["cutoff"])
        if flash:
            rowptr, perm, rowptr_src = torch.ops.openmmflash.pair_csr(src, dst, x.shape[0])
            out = torch.ops.openmmflash.cfconv_csr(xx, dist, src, dst, rowptr, perm, rowptr_src, p["mu"], p["w1"],
                                                   p["b1"], p["w2"], p["gamma"], p["cutoff"], rbf_cutoff, precision)
        else:
            out = cfconv_reference(xx, dist, src, dst, p["mu"], p["w1"], p["b1"], p["w2"], p["gamma"], p["cutoff"],
                                   rbf_cutoff)
        upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(7)).to(out.device)
        grads = torch.autograd.grad(out, (xx, pp), upstream, allow_unused=True)
        results.append((out.detach(), [torch.zeros_like(t) if g is None else g for g, t in zip(grads, (xx, pp))]))
    return results


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("precision", ["fp32", "w16a16"])
@pytest.mark.parametrize("rbf_cutoff", [True, False])
def test_cfconv_matches_reference(device, precision, rbf_cutoff):
    """Odd sizes (F' = 5, R = 7), two replicas, exact list: output, dL/dx and dL/dpositions."""
    pos, src, dst, shifts, x, p = _problem(device, replicas=2, beads=7, filters=5, rbf=7)
    assert int((dst >= 0).sum()) > 10
    (out, grads), (ref, ref_grads) = _both(pos, src, dst, shifts, x, p, precision, rbf_cutoff)
    tol = TOLERANCES[precision]
    assert _rel(out, ref) < tol
    assert _rel(grads[0], ref_grads[0]) < tol
    assert _rel(grads[1], ref_grads[1]) < tol
    if precision == "w16a16":
        assert _rel(out, ref) > 0  # really quantized, not the fp32 path


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("precision", ["fp32", "w16a16"])
def test_cfconv_many_neighbors_padded(device, precision):
    """One dense replica of 37 beads (36 neighbors > one 32-pair tile), F' = 20, R = 9, padded capacity."""
    pos, src, dst, shifts, x, p = _problem(device, replicas=1, beads=37, filters=20, rbf=9, cutoff=8.0, spread=0.8,
                                           capacity=37 * 36 + 13)
    assert int((dst < 0).sum()) == 13 and int((dst >= 0).sum()) == 37 * 36
    (out, grads), (ref, ref_grads) = _both(pos, src, dst, shifts, x, p, precision, True)
    tol = TOLERANCES[precision]
    assert _rel(out, ref) < tol and _rel(grads[0], ref_grads[0]) < tol and _rel(grads[1], ref_grads[1]) < tol


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("tile", [(16, 4, 3, 16), (32, 4, 1, 32)])
def test_cfconv_tile_shapes_sparse(device, tile, monkeypatch):
    """Small tiles over a sparse list: more than 16 beads per tile, beads split across tiles and programs, two
    column chunks of the second filter layer (F' = 20 padded to 32, chunks of 16)."""
    from openmmflash.plugin.kernels import cfconv as kernels

    for key in list(kernels.TILES):
        monkeypatch.setitem(kernels.TILES, key, tile)
    pos, src, dst, shifts, x, p = _problem(device, replicas=1, beads=41, filters=20, rbf=5, cutoff=1.5, spread=2.5,
                                           capacity=300)
    valid = int((dst >= 0).sum())
    assert 30 < valid < 300  # 24 beads in one 32-pair tile: two one-hot steps of 16
    (out, grads), (ref, ref_grads) = _both(pos, src, dst, shifts, x, p, "fp32", True)
    assert _rel(out, ref) < 1e-5 and _rel(grads[0], ref_grads[0]) < 1e-5 and _rel(grads[1], ref_grads[1]) < 1e-5


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("beads,spread,capacity", [(1, 1.0, 0), (5, 100.0, 0), (5, 100.0, 6)])
def test_cfconv_degenerate(device, beads, spread, capacity):
    """One bead, no pair within the cutoff, and an all-padding list: zero messages and gradients, all rows written."""
    pos, src, dst, shifts, x, p = _problem(device, replicas=1, beads=beads, filters=5, rbf=7, spread=spread,
                                           capacity=capacity)
    assert int((dst >= 0).sum()) == 0
    (out, grads), (ref, _) = _both(pos, src, dst, shifts, x, p, "fp32", True)
    assert torch.equal(out, torch.zeros_like(ref))
    assert torch.equal(grads[0], torch.zeros_like(x)) and torch.equal(grads[1], torch.zeros_like(pos))


@pytest.mark.parametrize("device", DEVICES)
def test_cfconv_weight_gradients_fall_back_to_reference(device):
    """Weight gradients (not fused) come from the reference recomputation and equal its autograd."""
    pos, src, dst, shifts, x, p = _problem(device, replicas=1, beads=6, filters=5, rbf=7)
    dist, _ = pair_distances(pos, src, dst, shifts, p["cutoff"])
    ws = [p[k].clone().requires_grad_(True) for k in ("w1", "b1", "w2")]
    csr = torch.ops.openmmflash.pair_csr(src, dst, x.shape[0])
    out = torch.ops.openmmflash.cfconv_csr(x, dist, src, dst, *csr, p["mu"], *ws, p["gamma"], p["cutoff"], True,
                                           "fp32")
    ref = cfconv_reference(x, dist, src, dst, p["mu"], *ws, p["gamma"], p["cutoff"], True)
    got = torch.autograd.grad(out.square().sum(), ws)
    want = torch.autograd.grad(ref.square().sum(), ws)
    for g, w in zip(got, want):
        assert _rel(g, w) < 1e-5


@pytest.mark.parametrize("device", DEVICES)
def test_cfconv_rejects_bad_input(device):
    pos, src, dst, shifts, x, p = _problem(device, replicas=1, beads=4, filters=5, rbf=7)
    dist, _ = pair_distances(pos, src, dst, shifts, p["cutoff"])
    csr = torch.ops.openmmflash.pair_csr(src, dst, x.shape[0])
    args = (p["mu"], p["w1"], p["b1"], p["w2"], p["gamma"], p["cutoff"], True)
    with pytest.raises(ValueError, match="unknown precision 'int8'"):
        torch.ops.openmmflash.cfconv_csr(x, dist, src, dst, *csr, *args, "int8")
    with pytest.raises(ValueError, match="computes in float32"):
        torch.ops.openmmflash.cfconv_csr(x.double(), dist.double(), src, dst, *csr, *args, "fp32")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("precision,tma,gather16", [("fp32", True, False), ("fp32", False, False),
                                                    ("w16a16", True, True), ("w16a16", False, True),
                                                    ("w16a16", True, False)])
def test_cfconv_aligned_weight_and_gather_variants(device, precision, tma, gather16, monkeypatch):
    """16-aligned sizes (F' = 32, R = 16), where the weights go through TMA descriptors (when ``tma``), in two
    column chunks (descriptor row offsets), and fp16 gathers (``gather16``) of features far beyond fp16's range
    (|x| ~ 1e6: only the per-tensor scale keeps them finite)."""
    from openmmflash.plugin.kernels import cfconv as kernels

    monkeypatch.setattr(kernels, "USE_TMA", tma)  # forced on or off for every kernel
    monkeypatch.setattr(kernels, "GATHER16", gather16)
    for key in list(kernels.TILES):
        monkeypatch.setitem(kernels.TILES, key, (32, 4, 1, 16))
    pos, src, dst, shifts, x, p = _problem(device, replicas=2, beads=9, filters=32, rbf=16)
    x = x * 1e6
    (out, grads), (ref, ref_grads) = _both(pos, src, dst, shifts, x, p, precision, True)
    tol = TOLERANCES[precision]
    assert torch.isfinite(out).all() and torch.isfinite(grads[1]).all()
    assert _rel(out, ref) < tol and _rel(grads[0], ref_grads[0]) < tol and _rel(grads[1], ref_grads[1]) < tol
    if device == "cuda" and tma:
        expect = torch.cuda.get_device_capability()[0] >= 9
        assert kernels.KERNEL_INFO[f"fwd/{precision}"]["tma"] == expect
