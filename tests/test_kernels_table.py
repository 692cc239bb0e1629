"""Tabulated filters (schnet/filtertable.py) and the table CFConv kernels (plugin/kernels/cfconv_table.py).

Interpolation against the exact float64 filter, kernels against the plain torch reference (forward and gradients,
odd sizes, empty lists, one bead, pairs at the cutoff and on grid nodes), and the OpenMM force with filterMode
"table" against "exact" on the Reference and CPU platforms. On CPU the kernels run through the Triton interpreter.
"""

import copy
import os
import warnings

import numpy as np
import pytest
import torch

from conftest import make_model
from openmmflash.cg.inputchecks import UnseenResiduesWarning
from openmmflash.neighbors import build_neighbor_list
from openmmflash.plugin import ops  # noqa: F401  (registers torch.ops.openmmflash.*)
from openmmflash.plugin.kernels.cfconv_table import build_rowptr
from openmmflash.plugin.opsmodel import FlashSchNetOps
from openmmflash.schnet.filtertable import (FilterTableOptions, buildFilterTable, cfconv_table_reference,
                                            exact_filter, hermite_filter)
from openmmflash.schnet.reference import cfconv_reference, pair_distances

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
DEVICES = [pytest.param("cpu", marks=pytest.mark.skipif(not INTERPRETED, reason="CPU kernels need the interpreter")),
           pytest.param("cuda", marks=pytest.mark.cuda)]


def _rel(a, b):
    return float((a - b).detach().norm() / b.detach().norm().clamp_min(1e-30))


def _gaussian_model(filters=7, rbf=11, blocks=2, cutoff=5.0, rbf_cutoff=True, seed=3):
    return make_model(seed=seed, cutoff=cutoff, numFilters=filters, numRbf=rbf, numInteractions=blocks,
                      hiddenChannels=9, rbfCutoff=rbf_cutoff)


@pytest.mark.parametrize("rbf_cutoff", [True, False])
def test_table_meets_tolerance_against_float64_filter(rbf_cutoff):
    """Odd R/F' Gaussian models: the built table's error, re-measured here at random distances, is within the
    tolerance it reports, and W' of the table is the derivative of its W."""
    model = _gaussian_model(rbf_cutoff=rbf_cutoff)
    table = buildFilterTable(model, FilterTableOptions(tolerance=1e-5))
    assert table.meetsTolerance and table.table.shape == (2, table.nodes, 2, 7)
    assert table.table.dtype == torch.float32
    m64 = copy.deepcopy(model).double()
    d = torch.rand(3000, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * model.cutoff
    w, dw = exact_filter(m64, d)
    for t in range(2):
        dd = d.clone().requires_grad_(True)
        wt = hermite_filter(table.table[t].double(), table.spacing, model.cutoff, dd)
        jac = torch.stack([torch.autograd.grad(wt[:, f].sum(), dd, retain_graph=True)[0] for f in range(7)], 1)
        assert _rel(wt.detach(), w[t]) < 2e-5
        assert _rel(jac, dw[t]) < 2e-5
    # Coarser tolerance, fewer nodes; the error falls as h^4 (W) and h^3 (W') with the spacing.
    coarse = buildFilterTable(model, FilterTableOptions(tolerance=1e-3, minNodes=17))
    assert coarse.nodes < table.nodes and coarse.meetsTolerance


def test_table_values_at_nodes_cutoff_and_nan():
    model = _gaussian_model()
    table = buildFilterTable(model, FilterTableOptions(tolerance=1e-5))
    m64 = copy.deepcopy(model).double()
    nodes = torch.tensor([0.0, table.spacing, 7 * table.spacing, model.cutoff - table.spacing], dtype=torch.float64)
    w, _ = exact_filter(m64, nodes)
    wt = hermite_filter(table.table[0].double(), table.spacing, model.cutoff, nodes)
    assert _rel(wt, w[0]) < 1e-6  # at nodes: the stored values (fp32 rounding only)
    beyond = torch.tensor([model.cutoff, model.cutoff * 1.5], dtype=torch.float64)
    assert torch.equal(hermite_filter(table.table[0].double(), table.spacing, model.cutoff, beyond),
                       torch.zeros(2, 7, dtype=torch.float64))
    nan = hermite_filter(table.table[0], table.spacing, model.cutoff, torch.tensor([float("nan"), 1.0]))
    assert torch.isnan(nan[0]).all() and torch.isfinite(nan[1]).all()


def test_table_storage_and_bad_options():
    model = _gaussian_model()
    half = buildFilterTable(model, FilterTableOptions(storage="fp16", tolerance=1e-8, maxNodes=513))
    assert half.table.dtype == torch.float16 and not half.meetsTolerance  # fp16 rounding floor, reported
    assert half.errorValue < 2e-3
    with pytest.raises(ValueError, match="storage"):
        FilterTableOptions(storage="int8")
    with pytest.raises(ValueError, match="tolerance"):
        FilterTableOptions(tolerance=0.0)


def _problem(device, replicas, beads, filters, cutoff=3.0, spread=1.5, capacity=0, seed=0, nodes=33):
    gen = torch.Generator().manual_seed(seed)
    pos = (torch.randn(replicas * beads, 3, generator=gen) * spread).to(device)
    src, dst, shifts, _ = build_neighbor_list(pos, replicas, cutoff, None, capacity)
    table = torch.randn(nodes, 2, filters, generator=gen)
    table[-1] = 0.0  # W and W' vanish at the cutoff, as every real table does
    x = torch.randn(replicas * beads, filters, generator=gen)
    return pos, src, dst, shifts, x.to(device), table.to(device), cutoff / (nodes - 1), cutoff


SCHEMES = ["rows", "pairs"]


def _kernel_and_reference(pos, src, dst, shifts, x, table, spacing, cutoff, scheme="rows"):
    results = []
    for kernel in (True, False):
        xx = x.clone().requires_grad_(True)
        pp = pos.clone().requires_grad_(True)
        dist, _ = pair_distances(pp, src, dst, shifts, cutoff)
        rowptr = torch.ops.openmmflash.pair_rowptr(dst, x.shape[0])
        halfptr = torch.ops.openmmflash.pair_halfptr(src, dst, x.shape[0]) if scheme == "pairs" else None
        if kernel:
            out = torch.ops.openmmflash.cfconv_table(xx, dist, src, dst, rowptr, table, spacing, cutoff, True,
                                                     halfptr)
        else:
            out = cfconv_table_reference(xx, dist, src, dst, table, spacing, cutoff)
        upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(7)).to(out.device)
        grads = torch.autograd.grad(out, (xx, pp), upstream, allow_unused=True)
        results.append((out.detach(), [torch.zeros_like(t) if g is None else g for g, t in zip(grads, (xx, pp))]))
    return results


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("capacity", [0, 400])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_table_cfconv_matches_reference(device, capacity, scheme):
    """Odd F' = 5, two replicas, exact and padded lists: output, dL/dx (by pair symmetry) and dL/dpositions."""
    pos, src, dst, shifts, x, table, spacing, cutoff = _problem(device, 2, 9, 5, capacity=capacity)
    assert int((dst >= 0).sum()) > 20
    (out, grads), (ref, ref_grads) = _kernel_and_reference(pos, src, dst, shifts, x, table, spacing, cutoff,
                                                           scheme)
    assert _rel(out, ref) < 1e-5
    assert _rel(grads[0], ref_grads[0]) < 1e-5
    assert _rel(grads[1], ref_grads[1]) < 1e-5


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("scheme", SCHEMES)
def test_table_cfconv_fp16_table(device, scheme):
    """fp16 table (and fp16 feature gathers with per-tensor scales) against the reference with the same table."""
    pos, src, dst, shifts, x, table, spacing, cutoff = _problem(device, 2, 7, 19, seed=4)
    x = x * 1e3  # the per-tensor scale keeps large features finite in fp16
    (out, grads), (ref, ref_grads) = _kernel_and_reference(pos, src, dst, shifts, x, table.half(), spacing, cutoff,
                                                           scheme)
    assert 0 < _rel(out, ref) < 2e-3
    assert _rel(grads[0], ref_grads[0]) < 2e-3 and _rel(grads[1], ref_grads[1]) < 2e-3


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("scheme", SCHEMES)
def test_table_cfconv_edge_cases(device, scheme):
    """Empty list, one bead, pairs exactly at the cutoff and on grid nodes, wide F' (two 16-column blocks)."""
    # Far apart: no pairs at all.
    pos = torch.tensor([[0.0, 0, 0], [10.0, 0, 0], [0, 10.0, 0]], device=device)
    x = torch.randn(3, 5, device=device)
    table = torch.randn(9, 2, 5, device=device)
    src, dst, shifts, _ = build_neighbor_list(pos, 1, 3.0, None, 0)
    (out, grads), _ = _kernel_and_reference(pos, src, dst, shifts, x, table, 3.0 / 8, 3.0, scheme)
    assert src.shape[0] == 0 and torch.equal(out, torch.zeros_like(out)) and not grads[1].any()
    # One bead.
    (out1, _), _ = _kernel_and_reference(pos[:1], *build_neighbor_list(pos[:1], 1, 3.0, None, 0)[:3], x[:1],
                                         table, 3.0 / 8, 3.0, scheme)
    assert out1.shape == (1, 5) and not out1.any()
    # Distances exactly on grid nodes (0.375, 0.75, 1.5) and at the cutoff (3.0, which gets no filter).
    line = torch.tensor([[0.0, 0, 0], [0.375, 0, 0], [1.125, 0, 0], [2.625, 0, 0], [3.375, 0, 0]], device=device)
    xs = torch.randn(5, 21, device=device)
    tab = torch.randn(9, 2, 21, device=device)
    tab[-1] = 0.0
    src, dst, shifts, _ = build_neighbor_list(line, 1, 3.0001, None, 0)
    dist, _ = pair_distances(line, src, dst, shifts, 3.0)
    assert bool((dist == 3.0).any())
    rowptr = torch.ops.openmmflash.pair_rowptr(dst, 5)
    halfptr = torch.ops.openmmflash.pair_halfptr(src, dst, 5) if scheme == "pairs" else None
    got = torch.ops.openmmflash.cfconv_table(xs, dist, src, dst, rowptr, tab, 3.0 / 8, 3.0, True, halfptr)
    ref = cfconv_table_reference(xs, dist, src, dst, tab, 3.0 / 8, 3.0)
    assert _rel(got, ref) < 1e-6
    # Bead 0's neighbours sit on nodes 1, 3 and 7: its message is sum_j x_j * W(node) with the stored values.
    expected = xs[1] * tab[1, 0] + xs[2] * tab[3, 0] + xs[3] * tab[7, 0]
    assert torch.allclose(got[0], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("scheme", SCHEMES)
def test_table_cfconv_nan_distances_propagate(device, scheme):
    """An overflowed padded list gets NaN distances: the table path gives NaN, as the exact filter does."""
    pos, src, dst, shifts, x, table, spacing, cutoff = _problem(device, 1, 6, 5)
    dist, _ = pair_distances(pos, src, dst, shifts, cutoff)
    dist = dist.masked_fill(torch.arange(dist.shape[0], device=device) == 0, float("nan"))
    rowptr = torch.ops.openmmflash.pair_rowptr(dst, x.shape[0])
    halfptr = torch.ops.openmmflash.pair_halfptr(src, dst, x.shape[0]) if scheme == "pairs" else None
    out = torch.ops.openmmflash.cfconv_table(x, dist, src, dst, rowptr, table, spacing, cutoff, True, halfptr)
    assert torch.isnan(out[dst[0]]).all()


@pytest.mark.parametrize("capacity", [0, 300])
def test_halfptr_marks_first_pair_with_larger_source(capacity):
    """halfptr[i] is the first pair of row i with source > i (rows ascending), for exact and padded lists."""
    _, src, dst, *_ = _problem("cpu", 3, 7, 4, capacity=capacity)
    rowptr = build_rowptr(dst, 21)
    halfptr = torch.ops.openmmflash.pair_halfptr(src, dst, 21)
    for i in range(21):
        row = src[rowptr[i]:rowptr[i + 1]]
        assert bool((row[1:] > row[:-1]).all())
        assert int(halfptr[i]) == int(rowptr[i]) + int((row < i).sum())
    assert int((src[(dst >= 0)] > dst[(dst >= 0)]).sum()) == int((rowptr[1:] - halfptr).sum()) > 0


def test_rowptr_matches_csr():
    from openmmflash.plugin.kernels.csr import build_csr

    _, src, dst, *_ = _problem("cpu", 3, 7, 4, capacity=300)
    assert torch.equal(build_rowptr(dst, 21), build_csr(src, dst, 21)[0])


def test_model_table_mode_close_to_exact():
    """Whole model (2 blocks, odd R/F'): energies and forces from the table within 1e-5 of the float64 model."""
    from openmmflash.schnet.filtertable import attachFilterTable

    model = _gaussian_model(filters=13, rbf=9, cutoff=6.0).double()
    gen = torch.Generator().manual_seed(2)
    pos = torch.randn(2 * 11, 3, generator=gen, dtype=torch.float64) * 2.0
    types = torch.randint(0, 5, (11,), generator=gen).repeat(2)
    e_ref, f_ref = model.energy_and_forces(pos, types, 2)
    table_model = copy.deepcopy(model)
    attachFilterTable(table_model, buildFilterTable(model, FilterTableOptions(tolerance=1e-6, storage="fp64")))
    for m in (table_model, FlashSchNetOps.fromModel(table_model)):
        e, f = m.energy_and_forces(pos, types, 2)
        assert _rel(e, e_ref) < 1e-6 and _rel(f, f_ref) < 1e-5
        assert _rel(f, f_ref) > 0  # really the table
    with pytest.raises(ValueError, match="blocks"):
        attachFilterTable(model, buildFilterTable(_gaussian_model(blocks=3)))


@pytest.mark.cuda
@pytest.mark.parametrize("scheme", SCHEMES)
def test_model_table_kernels_match_table_reference(scheme):
    """The float32 model in table mode on CUDA (kernels) vs the plain torch table path on CPU."""
    from openmmflash.schnet.filtertable import attachFilterTable

    model = _gaussian_model(filters=11, rbf=7, cutoff=4.0)
    attachFilterTable(model, buildFilterTable(model))
    model = FlashSchNetOps.fromModel(model)
    model.table_scheme = scheme
    pos = torch.randn(2 * 8, 3, generator=torch.Generator().manual_seed(5)) * 1.5
    types = torch.arange(8).repeat(2) % 5
    e_cpu, f_cpu = model.energy_and_forces(pos, types, 2)
    model = model.to("cuda")
    e_gpu, f_gpu = model.energy_and_forces(pos.cuda(), types.cuda(), 2)
    assert _rel(e_gpu.cpu(), e_cpu) < 1e-5 and _rel(f_gpu.cpu(), f_cpu) < 1e-5


@pytest.mark.parametrize("platform", ["Reference", "CPU"])
def test_openmm_force_table_vs_exact(cg_fragment, platform):
    """The TorchForce with filterMode "table" (default in single precision) against "exact", on a real OpenMM
    Context; the measured table error is in the force's metadata."""
    from openmmflash.plugin.torchforce import addFlashSchNetForce, filterTableInfo
    from openmmflash.stack import import_openmm

    openmm = import_openmm()
    unit = openmm.unit
    model = make_model()
    top, pos = cg_fragment
    results, infos = [], []
    for mode in ("table", "exact"):
        system = openmm.System()
        for _ in range(top.getNumAtoms()):
            system.addParticle(12.0)
        # The System owns the force: read its metadata while the System exists.
        infos.append(filterTableInfo(addFlashSchNetForce(system, model, top, filterMode=mode)))
        context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform))
        context.setPositions(pos)
        state = context.getState(getEnergy=True, getForces=True)
        results.append((state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
                        state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)))
    (e_t, f_t), (e_x, f_x) = results
    assert e_t == pytest.approx(e_x, rel=1e-5)
    assert np.linalg.norm(f_t - f_x) / np.linalg.norm(f_x) < 2e-5
    info = infos[0]
    assert info["nodes"] >= 129 and info["errorDerivative"] <= info["tolerance"] and info["storageBits"] == 32
    assert infos[1] == {}


def test_force_module_rebuilds_tables_when_weights_change(cg_fragment):
    from openmmflash.plugin.torchforce import createFlashSchNetModule

    top, pos = cg_fragment
    module = createFlashSchNetModule(make_model(), top)
    p = torch.tensor(pos, dtype=torch.float32)
    e0 = float(module(p)[0])
    old = module.model.filter_table.clone()
    with torch.no_grad():
        module.model.blocks[0].filter2.weight.mul_(1.5)
    e1 = float(module(p)[0])
    assert not torch.equal(old, module.model.filter_table) and e1 != e0
    exact = createFlashSchNetModule(make_model(), top, filterMode="exact")
    with torch.no_grad():
        exact.model.blocks[0].filter2.weight.mul_(1.5)
    assert float(exact(p)[0]) == pytest.approx(e1, rel=1e-5)
    with pytest.raises(ValueError, match="filterMode"):
        createFlashSchNetModule(make_model(), top, filterMode="fast")


def test_table_has_no_weight_gradient():
    model = _gaussian_model()
    table = buildFilterTable(model).table[0].requires_grad_(True)
    x = torch.randn(4, 7)
    src, dst = torch.tensor([1, 0]), torch.tensor([0, 1])
    dist = torch.tensor([1.0, 1.0])
    out = torch.ops.openmmflash.cfconv_table(x, dist, src, dst, build_rowptr(dst, 4), table, 5.0 / 128, 5.0, False)
    with pytest.raises(RuntimeError, match="filterMode='exact'"):
        out.sum().backward()


def test_exact_and_table_reference_agree_with_cfconv_reference():
    """cfconv_table_reference with a fine float64 table equals the exact cfconv_reference (same pairs)."""
    model = _gaussian_model(filters=6, rbf=8, blocks=1, cutoff=3.0).double()
    table = buildFilterTable(model, FilterTableOptions(tolerance=1e-7, storage="fp64"))
    pos, src, dst, shifts, x, *_ = _problem("cpu", 1, 10, 6)
    x = x.double()
    dist, _ = pair_distances(pos.double(), src, dst, shifts, 3.0)
    b = model.blocks[0]
    ref = cfconv_reference(x, dist, src, dst, model.mu, b.filter1.weight, b.filter1.bias, b.filter2.weight,
                           model.gamma, 3.0, True)
    got = cfconv_table_reference(x, dist, src, dst, table.table[0], table.spacing, 3.0)
    assert _rel(got, ref) < 1e-6


@pytest.mark.parametrize("name", ["chignolin", "3a4r"])
def test_bundled_models_table_forces_within_1e4(cg_fragment, name):
    """Bundled (trained) models: forces with filterMode "table" in single precision within 1e-4 (RMSE / RMS) of
    the exact model in float64; the doctor's one-line report names the table's nodes and error."""
    from openmmflash.doctor import filter_table_report
    from openmmflash.plugin.torchforce import createFlashSchNetModule

    top, pos = cg_fragment
    p64 = torch.tensor(pos, dtype=torch.float64)
    with warnings.catch_warnings():
        # the fragment holds residues outside some models' training sets: the table's accuracy is what is checked
        warnings.simplefilter("ignore", UnseenResiduesWarning)
        _, f_exact = createFlashSchNetModule(name, top, precision="double", filterMode="exact")(p64)
        table = createFlashSchNetModule(name, top, filterMode="table")
    _, f_table = table(p64.float())
    assert _rel(f_table.double(), f_exact) < 1e-4
    assert table.filter_table_info["errorDerivative"] <= 1e-5
    assert f"filter tables of {name}: {int(table.filter_table_info['nodes'])} nodes" in filter_table_report(name)


@pytest.mark.parametrize("basis", [dict(rbfType="expnormal"), dict(rbfLower=1.0, filterCutoffType="cosine")])
def test_other_bases_table_forces(cg_fragment, basis):
    """Models with an ExpNormal basis or a lower basis bound (mlcg options): the tables come from the model's own
    filter_weights and the table forces stay within 1e-4 of float64 exact."""
    from openmmflash.plugin.forcemodule import createFlashSchNetModule

    top, pos = cg_fragment
    model = make_model(numRbf=9, numFilters=11, **basis)
    p64 = torch.tensor(pos, dtype=torch.float64)
    _, f_exact = createFlashSchNetModule(model, top, precision="double", filterMode="exact")(p64)
    table = createFlashSchNetModule(model, top, filterMode="table")
    _, f_table = table(p64.float())
    assert table.filter_table_info["meetsTolerance"] == 1.0
    assert _rel(f_table.double(), f_exact) < 1e-4 and _rel(f_table.double(), f_exact) > 0
