"""Quantizing the FlashMD PaiNN in place: equivariance by method, branch split, bad schemes."""

import pytest
import torch

from openmmflash.gaq.quantize import branchParameters, parseScheme, quantizeModel, setObserving
from openmmflash.integrators.network.modelfile import FlashMDModel
from openmmflash.neighbors import build_neighbor_list


def small_model(seed=0):
    torch.manual_seed(seed)
    return FlashMDModel([1, 8], [1.008, 15.999], 0.008,
                        config=dict(channels=16, num_layers=2, num_rbf=8, cutoff=0.5)).double()


def inputs(seed=1, n=24):
    gen = torch.Generator().manual_seed(seed)
    q = torch.rand(n, 3, generator=gen, dtype=torch.float64) * 0.9
    src, dst, shifts, _ = build_neighbor_list(q, 1, 0.5, None, 0)
    types = torch.randint(0, 2, (n,), generator=gen)
    x = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    return types, x, src, dst, q[src] - q[dst] + shifts


def equivariance_error(model, data):
    types, x, src, dst, edges = data
    rot = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5)))[0]
    rot = rot if torch.det(rot) > 0 else -rot
    with torch.no_grad():
        rotated = model.network(types, x @ rot.T, src, dst, edges @ rot.T)
        expected = torch.einsum("ij,njk->nik", rot, model.network(types, x, src, dst, edges))
    return float((rotated - expected).norm() / expected.norm())


@pytest.mark.parametrize("method", ["frame", "mddq", "naive"])
def test_quantized_model_runs_and_stays_close(method):
    data = inputs()
    model = small_model()
    with torch.no_grad():
        reference = model.network(*data)
    quantizeModel(model, "w8a8", method, dirBits=8)
    with torch.no_grad():
        out = model.network(*data)
    assert out.shape == reference.shape and torch.isfinite(out).all()
    assert float((out - reference).norm() / reference.norm()) < 0.5


def test_frame_method_keeps_equivariance_naive_does_not():
    data = inputs()
    errors = {}
    for method in ("frame", "naive"):
        model = quantizeModel(small_model(), "w4a8", method, dirBits=8)
        with torch.no_grad():
            model.network(*data)  # calibrate
        setObserving(model, False)
        errors[method] = equivariance_error(model, data)
    assert errors["frame"] < 1e-3 * errors["naive"]
    fp = small_model()
    assert equivariance_error(fp, data) < 1e-12


def test_branch_parameters_split():
    model = quantizeModel(small_model(), "w4a8", "frame")
    groups = branchParameters(model)
    assert groups["vector"] and groups["scalar"]
    assert not {id(p) for p in groups["vector"]} & {id(p) for p in groups["scalar"]}
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert sum(p.numel() for g in groups.values() for p in g) == total


def test_bad_schemes_refused():
    for bad in ("w3a8", "int4", "w4a2", ""):
        with pytest.raises(ValueError, match="unknown quantization scheme"):
            parseScheme(bad)
    assert parseScheme("W4A8") == (4, 8)
    with pytest.raises(ValueError, match="unknown vector quantization method"):
        quantizeModel(small_model(), "w4a8", "polar")
    model = quantizeModel(small_model(), "w8a8")
    with pytest.raises(ValueError, match="already quantized"):
        quantizeModel(model, "w4a8")
