"""FlashSchNet with the flash backend: dispatch, configuration, TorchScript, and on CUDA energies and forces against
the reference model (fp32 to 1e-5 relative, W16A16 force RMSE under 1 % of the force RMS)."""

import pytest
import torch

from openmmflash.plugin.opsmodel import FlashSchNetOps
from openmmflash.schnet.config import FlashSchNetConfig
from openmmflash.schnet.model import FlashSchNet


def _model(**kw):
    config = FlashSchNetConfig(numBeadTypes=4, hiddenChannels=24, numFilters=20, numRbf=9, numInteractions=2,
                               cutoff=5.0, readoutHidden=[12], **kw)
    model = FlashSchNet(config)
    model.reset_parameters(seed=3)
    return model


def _system(device, replicas=2, beads=11):
    gen = torch.Generator().manual_seed(5)
    pos = (torch.randn(replicas * beads, 3, generator=gen) * 2.5).to(device)
    types = torch.randint(0, 4, (replicas * beads,), generator=gen).to(device)
    return pos, types


def test_config_validates_backend_and_filter_precision():
    with pytest.raises(ValueError, match="unknown backend 'triton'"):
        FlashSchNetConfig(backend="triton")
    with pytest.raises(ValueError, match="unknown filterPrecision 'fp8'"):
        FlashSchNetConfig(filterPrecision="fp8")
    assert FlashSchNetConfig.fromDict(FlashSchNetConfig(filterPrecision="w16a16").toDict()).filterPrecision == "w16a16"


def test_cpu_uses_reference_and_scripts():
    """On CPU the flash backend dispatches to the reference op; the model still scripts with the ops."""
    pos, types = _system("cpu")
    plain = _model(backend="flash", filterPrecision="w16a16")
    e_ref, f_ref = plain.energy_and_forces(pos, types, 2)
    scripted = torch.jit.script(FlashSchNetOps.fromModel(plain))
    p = pos.clone().requires_grad_(True)
    energy = scripted(p, types, 2, None, 0)
    (grad,) = torch.autograd.grad(energy.sum(), p)
    assert torch.allclose(energy, e_ref, rtol=1e-6, atol=1e-6)
    assert torch.allclose(-grad, f_ref, rtol=1e-5, atol=1e-6)


def test_training_path_double_backward_unchanged():
    """The plain model keeps the differentiable reference: forces of forces exist (training)."""
    pos, types = _system("cpu", replicas=1, beads=6)
    model = _model()
    energy, forces = model.energy_and_forces(pos, types, 1, create_graph=True)
    loss = forces.square().sum()
    loss.backward()
    assert model.blocks[0].filter1.weight.grad is not None
    assert float(model.blocks[0].filter1.weight.grad.abs().sum()) > 0


@pytest.mark.cuda
@pytest.mark.parametrize("filter_precision,tolerance", [("fp32", 1e-5), ("w16a16", 1e-2)])
@pytest.mark.parametrize("capacity", [0, 400])
def test_cuda_flash_model_matches_reference(filter_precision, tolerance, capacity):
    pos, types = _system("cuda")
    results = []
    for backend in ("reference", "flash"):
        model = FlashSchNetOps.fromModel(_model(backend=backend, filterPrecision=filter_precision)).cuda()
        for prm in model.parameters():
            prm.requires_grad_(False)
        p = pos.clone().requires_grad_(True)
        energy = model(p, types, 2, None, capacity)
        (grad,) = torch.autograd.grad(energy.sum(), p)
        results.append((energy.detach(), -grad))
    (e_ref, f_ref), (e, f) = results
    assert float((e - e_ref).abs().max() / e_ref.abs().max()) < tolerance
    rmse = float((f - f_ref).square().mean().sqrt() / f_ref.square().mean().sqrt())
    assert rmse < tolerance


def test_padded_overflow_poisons_instead_of_dropping_pairs():
    """Where no host check runs (graphs; here: without the ops) an overflowing padded list gives NaN energies,
    a list with room gives the exact energy; with the ops the overflow is a clear error."""
    pos, types = _system("cpu", replicas=1, beads=9)
    model = _model()
    exact = model(pos, types, 1, None, 0)
    pairs = int(model.neighbor_pairs(pos, 1, None, 0)[3])
    assert pairs > 4
    assert torch.allclose(model(pos, types, 1, None, pairs + 3), exact, rtol=1e-6, atol=1e-6)
    assert bool(torch.isnan(model(pos, types, 1, None, pairs - 1)).all())
    with pytest.raises(RuntimeError, match="neighbor list overflow"):
        FlashSchNetOps.fromModel(model)(pos, types, 1, None, pairs - 1)


@pytest.mark.parametrize("variant,scheme,rowdist", [("table_rows", "rows", False), ("table_pairs_rowdist", "pairs", True),
                                                    ("table", "pairs", True)])
def test_benchmark_variant_reaches_the_ops_model(monkeypatch, variant, scheme, rowdist):
    """bench_flashschnet's OpenMM workers build their force with createFlashSchNetForce: the variant's table scheme
    and distance path must reach that force's FlashSchNetOps through the worker's environment."""
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples", "benchmarks"))
    import bench_flashschnet as bench

    monkeypatch.delenv("OPENMMFLASH_TABLE_SCHEME", raising=False)
    monkeypatch.delenv("OPENMMFLASH_ROW_DISTANCES", raising=False)
    for key, value in bench.variant_environ(variant).items():
        monkeypatch.setenv(key, value)
    ops = FlashSchNetOps.fromModel(_model())
    assert (ops.table_scheme, ops.row_distances) == (scheme, rowdist)
