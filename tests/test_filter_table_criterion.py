"""How ``buildFilterTable`` picks the grid: the error of the table as the float32 kernels evaluate it, weighted by
d^2, kinks of the filter on nodes, and the force module's fallback to exact filters."""

import copy
import os
import warnings

import pytest
import torch

from conftest import make_model
from openmmflash.plugin import ops  # noqa: F401  (registers torch.ops.openmmflash.*)
from openmmflash.plugin.kernels.cfconv_table import build_rowptr, cfconv_table_backward, cfconv_table_forward
from openmmflash.schnet.filtertable import (FilterTableOptions, _hermite_fp32, buildFilterTable, exact_filter,
                                            filterBreakpoints)

MLCG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "mlcg")
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


def _build(model, nodes, storage="fp32", **options):
    return buildFilterTable(model, FilterTableOptions(minNodes=nodes, maxNodes=nodes, storage=storage, **options),
                            warn=False)


@pytest.mark.skipif(not INTERPRETED, reason="the table kernels run on CPU in the Triton interpreter")
def test_check_evaluates_the_table_as_the_kernels_do():
    """The builder's float32 evaluation (``_hermite_fp32``) gives the kernels' W and dW/dd: one pair per
    destination bead from a source with x = 1, so m = W(d) and dL/dd = sum_f W'_f(d) for dL/dm = 1."""
    model = make_model(numFilters=11, numRbf=9, rbfType="expnormal", cutoff=5.0)
    table = _build(model, 257)
    block = table.table[0]
    gen = torch.Generator().manual_seed(4)
    dist = (torch.rand(37, generator=gen, dtype=torch.float64) * 5.0).float()
    pairs = dist.shape[0]
    dst = torch.arange(pairs)
    src = torch.full((pairs,), pairs)
    x = torch.ones(pairs + 1, 11)
    rowptr = build_rowptr(dst, pairs + 1)
    w_kernel = cfconv_table_forward(x, dist, src, rowptr, block, table.spacing, 5.0)[:pairs]
    _, dw_kernel = cfconv_table_backward(torch.ones(pairs + 1, 11), x, dist, src, rowptr, block, table.spacing, 5.0)
    w, dw = _hermite_fp32(table.table, table.spacing, dist.double())
    assert torch.allclose(w_kernel.double(), w[0], rtol=0, atol=1e-6 * float(w[0].abs().max()))
    assert torch.allclose(dw_kernel.double(), dw[0].sum(1), rtol=0, atol=1e-6 * float(dw[0].abs().sum(1).max()))


def test_rounding_makes_fine_float32_grids_worse():
    """The rounding of W_k and of the Hermite sums, divided by h, enters W': in float32 the measured dW/dd error
    grows once the grid is fine enough, while the float64 table's keeps falling (resolution, h^3)."""
    model = make_model(numFilters=16, numRbf=24, rbfType="expnormal", cutoff=5.0)
    fp32 = [_build(model, n).errorDerivative for n in (513, 2049, 8193)]
    fp64 = [_build(model, n, "fp64").errorDerivative for n in (513, 2049, 8193)]
    assert fp64[2] < fp64[1] < fp64[0]
    assert fp32[2] > fp32[1] and fp32[2] > 10 * fp64[2]
    assert _build(model, 513).evaluationBits == 32 and _build(model, 513, "fp64").evaluationBits == 64


def test_weighting_by_pair_density_on_the_imported_mlcg_model():
    """mlcg's chignolin CA model (ExpNormal, beta ~ 276): weighted by d^2 the check accepts 1,025 nodes; every
    distance alike (weightPower=0, dominated by the error at short range, where no CA pairs are) it wants a grid
    twice as fine, with a larger error."""
    from openmmflash.mlcg.importer import importMlcg

    model = importMlcg(os.path.join(MLCG, "schnet_cln_ca_specialized_model_and_config.pt"), includePriors=False)
    weighted = buildFilterTable(model)
    assert weighted.meetsTolerance and weighted.nodes == 1025 and weighted.weightPower == 2.0
    flat = buildFilterTable(model, FilterTableOptions(weightPower=0.0), warn=False)
    assert flat.nodes > weighted.nodes and flat.errorDerivative > weighted.errorDerivative


def test_kinks_of_the_filter_fall_on_nodes():
    """A shifted-cosine filter envelope (ramp from 5.5 to 7) and a basis with a lower bound 0.5: both kinks are
    grid nodes ((nodes - 1) a multiple of 14), and the table is more accurate than an unaligned one as fine."""
    model = make_model(numFilters=12, numRbf=16, rbfType="expnormal", rbfLower=0.5, cutoff=7.0,
                       filterCutoffType="shiftedcosine", filterSmoothWidth=1.5)
    assert filterBreakpoints(model) == pytest.approx([0.5, 5.5])
    table = buildFilterTable(model, warn=False)
    assert (table.nodes - 1) % 14 == 0 and table.breakpointsOnNodes == 2
    aligned = _build(model, 449)              # 14 * 32 intervals: 0.5 and 5.5 on nodes
    unaligned = _build(model, 513)            # 512 intervals: neither
    assert aligned.breakpointsOnNodes == 2 and unaligned.breakpointsOnNodes == 0
    assert aligned.errorDerivative < 0.2 * unaligned.errorDerivative   # measured: 5.5e-6 vs 5.9e-5
    assert filterBreakpoints(make_model(cutoff=5.0)) == []


def test_weighted_error_matches_a_direct_measurement():
    """The reported error equals sqrt(sum d^2 dW'^2 / sum d^2 W'^2) re-measured at random distances (float32
    evaluation), within sampling scatter."""
    model = make_model(numFilters=8, numRbf=12, rbfType="expnormal", cutoff=5.0)
    table = _build(model, 513)
    gen = torch.Generator().manual_seed(0)
    d = (torch.rand(20000, generator=gen, dtype=torch.float64) * 5.0).float().double().clamp_max(4.9999)
    w, dw = exact_filter(copy.deepcopy(model).double(), d)
    wt, dwt = _hermite_fp32(table.table, table.spacing, d)
    rho = (d * d)[None, :, None]
    direct = float(((rho * (dwt - dw.detach()) ** 2).sum() / (rho * dw.detach() ** 2).sum()).sqrt())
    assert direct == pytest.approx(table.errorDerivative, rel=0.3)


def test_bad_weight_power():
    with pytest.raises(ValueError, match="weightPower"):
        FilterTableOptions(weightPower=-1.0)


def test_force_module_falls_back_to_exact_filters(cg_fragment):
    """Default filter mode: a table that cannot meet the tolerance gives way to exact filters, said in a warning
    and in filter_table_info (fallbackExact); filterMode="table" keeps the table."""
    from openmmflash.plugin.forcemodule import createFlashSchNetModule

    top, pos = cg_fragment
    model = make_model(rbfType="expnormal")
    strict = FilterTableOptions(tolerance=1e-9, maxNodes=513)
    with pytest.warns(UserWarning, match="using exact filters"):
        module = createFlashSchNetModule(model, top, filterTable=strict)
    info = module.filter_table_info
    assert info["fallbackExact"] == 1.0 and info["meetsTolerance"] == 0.0 and info["nodes"] >= 129
    assert module.filter_mode == "exact" and module.model.filter_mode == "exact"
    exact = createFlashSchNetModule(model, top, filterMode="exact")
    p = torch.tensor(pos, dtype=torch.float32)
    assert torch.equal(module(p)[1], exact(p)[1])
    with pytest.warns(UserWarning, match="exceeds the tolerance"):
        kept = createFlashSchNetModule(model, top, filterMode="table", filterTable=strict)
    assert kept.filter_mode == "table" and kept.filter_table_info["fallbackExact"] == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        default = createFlashSchNetModule(model, top)
    assert default.filter_table_info["fallbackExact"] == 0.0 and default.model.filter_mode == "table"
