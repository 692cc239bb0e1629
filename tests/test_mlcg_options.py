"""Every mlcg SchNet option FlashSchNet converts, against an independent implementation of mlcg's formulas.

The classes below are stand-ins named exactly like mlcg's (``mlcg.nn.schnet.StandardSchNet``, ...) and written
from mlcg's definitions; ``torch.save`` pickles them by those names, so the files look like mlcg files to the
importer, which reads them without these classes.
"""

import math
import os
import sys
import types

import pytest
import torch
from torch import nn

from openmmflash.mlcg.importer import importMlcg
from openmmflash.mlcg.schnetconvert import UnsupportedModelError
from openmmflash.plugin.forcemodule import FlashSchNetForceModule

MODULES = ["mlcg", "mlcg.nn", "mlcg.nn.schnet", "mlcg.nn.mlp", "mlcg.nn.cutoff", "mlcg.nn.gradients",
           "mlcg.nn.radial_basis", "mlcg.nn.radial_basis.gaussian", "mlcg.nn.radial_basis.exp_normal",
           "mlcg.nn.radial_basis.exp_spaced"]


def _named(module, cls):
    cls.__module__, cls.__qualname__ = module, cls.__name__
    return cls


def _build_fake_mlcg():
    class CosineCutoff(nn.Module):
        def __init__(self, cutoff_lower=0.0, cutoff_upper=5.0):
            super().__init__()
            self.cutoff_lower, self.cutoff_upper = cutoff_lower, cutoff_upper

        def forward(self, d):
            lo, up = self.cutoff_lower, self.cutoff_upper
            if lo > 0:
                c = 0.5 * (torch.cos(math.pi * (2 * (d - lo) / (up - lo) + 1.0)) + 1.0)
                return c * (d < up).to(d.dtype) * (d > lo).to(d.dtype)
            return 0.5 * (torch.cos(d * math.pi / up) + 1.0) * (d < up).to(d.dtype)

    class IdentityCutoff(nn.Module):
        def __init__(self, cutoff_lower=0, cutoff_upper=math.inf):
            super().__init__()
            self.cutoff_lower, self.cutoff_upper = cutoff_lower, cutoff_upper

        def forward(self, d):
            return torch.ones_like(d)

    class ShiftedCosineCutoff(nn.Module):
        def __init__(self, cutoff=5.0, smooth_width=0.5):
            super().__init__()
            self.cutoff_lower, self.cutoff_upper, self.smooth_width = 0, cutoff, smooth_width

        def forward(self, d):
            c = torch.ones_like(d)
            mask = d > self.cutoff_upper - self.smooth_width
            c[mask] = 0.5 + 0.5 * torch.cos(math.pi * (d[mask] - self.cutoff_upper + self.smooth_width)
                                            / self.smooth_width)
            c[d > self.cutoff_upper] = 0.0
            return c

    class GaussianBasis(nn.Module):
        def __init__(self, cutoff, num_rbf=50):
            super().__init__()
            self.cutoff = IdentityCutoff(0, cutoff) if isinstance(cutoff, (int, float)) else cutoff
            self.num_rbf = num_rbf
            offset = torch.linspace(self.cutoff.cutoff_lower, self.cutoff.cutoff_upper, num_rbf)
            self.register_buffer("offset", offset)
            self.register_buffer("coeff", -0.5 / (offset[1] - offset[0]) ** 2)

        def forward(self, d):
            d = d.unsqueeze(-1)
            return torch.exp(self.coeff * (d - self.offset) ** 2) * self.cutoff(d)

    class ExpNormalBasis(nn.Module):
        def __init__(self, cutoff, num_rbf=50):
            super().__init__()
            self.cutoff = CosineCutoff(0, cutoff) if isinstance(cutoff, (int, float)) else cutoff
            self.num_rbf = num_rbf
            lo, up = self.cutoff.cutoff_lower, self.cutoff.cutoff_upper
            self.alpha = 5.0 / (up - lo)
            start = torch.exp(torch.scalar_tensor(-up + lo))
            self.register_buffer("means", torch.linspace(start, 1, num_rbf))
            self.register_buffer("betas", torch.tensor([(2 / num_rbf * (1 - start)) ** -2] * num_rbf))

        def forward(self, d):
            d = d.unsqueeze(-1)
            return self.cutoff(d) * torch.exp(-self.betas * (torch.exp(self.alpha * (-d + self.cutoff.cutoff_lower))
                                                             - self.means) ** 2)

    class SpacedExpBasis(ExpNormalBasis):
        pass

    class MLP(nn.Module):
        def __init__(self, layer_widths, activation_func, last_bias=True):
            super().__init__()
            layers = []
            for w_in, w_out in zip(layer_widths[:-2], layer_widths[1:-1]):
                layers += [nn.Linear(w_in, w_out), activation_func]
            layers.append(nn.Linear(layer_widths[-2], layer_widths[-1], bias=last_bias))
            self.layers = nn.Sequential(*layers)

        def forward(self, x):
            return self.layers(x)

    class CFConv(nn.Module):
        def __init__(self, filter_network, cutoff, in_channels, out_channels, num_filters, aggr="add"):
            super().__init__()
            self.lin1 = nn.Linear(in_channels, num_filters, bias=False)
            self.lin2 = nn.Linear(num_filters, out_channels)
            self.filter_network, self.cutoff, self.aggr = filter_network, cutoff, aggr

        def forward(self, x, edge_index, d, rbf):
            w = self.filter_network(rbf) * self.cutoff(d).view(-1, 1)
            x = self.lin1(x)
            msg = x[edge_index[0]] * w                      # source -> target
            x = torch.zeros_like(x).index_add(0, edge_index[1], msg)
            return self.lin2(x)

    class InteractionBlock(nn.Module):
        def __init__(self, cfconv, hidden_channels, activation):
            super().__init__()
            self.conv, self.activation = cfconv, activation
            self.lin = nn.Linear(hidden_channels, hidden_channels)

        def forward(self, x, edge_index, d, rbf):
            return self.lin(self.activation(self.conv(x, edge_index, d, rbf)))

    class StandardSchNet(nn.Module):
        def __init__(self, rbf_layer, cutoff, output_hidden_layer_widths, hidden_channels=128, embedding_size=100,
                     num_filters=128, num_interactions=3, activation=None, max_num_neighbors=1000, aggr="add"):
            super().__init__()
            activation = activation if activation is not None else nn.Tanh()
            self.embedding_layer = nn.Embedding(embedding_size, hidden_channels)
            self.rbf_layer = rbf_layer
            self.max_num_neighbors, self.self_interaction = max_num_neighbors, False
            blocks = []
            for _ in range(num_interactions):
                net = MLP([rbf_layer.num_rbf, num_filters, num_filters], activation, last_bias=False)
                blocks.append(InteractionBlock(CFConv(net, cutoff, hidden_channels, hidden_channels, num_filters,
                                                      aggr), hidden_channels, activation))
            self.interaction_blocks = nn.Sequential(*blocks)
            self.output_network = MLP([hidden_channels] + output_hidden_layer_widths + [1], activation,
                                      last_bias=False)

        def forward(self, pos, atom_types):
            n = pos.shape[0]
            i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
            d_all = (pos[:, None] - pos[None]).norm(dim=-1)
            mask = (i != j) & (d_all < self.rbf_layer.cutoff.cutoff_upper)
            edge_index = torch.stack([j[mask], i[mask]])
            d = (pos[edge_index[0]] - pos[edge_index[1]]).norm(dim=-1)
            rbf = self.rbf_layer(d)
            x = self.embedding_layer(atom_types)
            for block in self.interaction_blocks:
                x = x + block(x, edge_index, d, rbf)
            return self.output_network(x).sum()

    class GradientsOut(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

    where = {"CosineCutoff": "mlcg.nn.cutoff", "IdentityCutoff": "mlcg.nn.cutoff",
             "ShiftedCosineCutoff": "mlcg.nn.cutoff", "GaussianBasis": "mlcg.nn.radial_basis.gaussian",
             "ExpNormalBasis": "mlcg.nn.radial_basis.exp_normal", "SpacedExpBasis": "mlcg.nn.radial_basis.exp_spaced",
             "MLP": "mlcg.nn.mlp", "CFConv": "mlcg.nn.schnet", "InteractionBlock": "mlcg.nn.schnet",
             "StandardSchNet": "mlcg.nn.schnet", "GradientsOut": "mlcg.nn.gradients"}
    local = dict(locals())
    return {name: _named(module, local[name]) for name, module in where.items()}


@pytest.fixture
def mlcg(monkeypatch):
    """The stand-in classes, importable under mlcg's module names while the test runs (for pickling)."""
    classes = _build_fake_mlcg()
    for name in MODULES:
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    for name, cls in classes.items():
        setattr(sys.modules[cls.__module__], name, cls)
    return types.SimpleNamespace(**classes)


def _randomize(model, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)


CASES = {
    "gaussian-cosine": lambda m: dict(rbf_layer=m.GaussianBasis(m.CosineCutoff(0.0, 6.0), 20),
                                      cutoff=m.CosineCutoff(0.0, 6.0), output_hidden_layer_widths=[16]),
    "gaussian-identity-lowercosine": lambda m: dict(rbf_layer=m.GaussianBasis(6.0, 18),
                                                    cutoff=m.CosineCutoff(1.0, 6.0),
                                                    output_hidden_layer_widths=[16, 8]),
    "expnormal-shifted": lambda m: dict(rbf_layer=m.ExpNormalBasis(m.CosineCutoff(0.5, 7.0), 24),
                                        cutoff=m.ShiftedCosineCutoff(7.0, 1.5), output_hidden_layer_widths=[12]),
    "expnormal-shifted-basis": lambda m: dict(rbf_layer=m.ExpNormalBasis(m.ShiftedCosineCutoff(6.5, 1.0), 16),
                                              cutoff=m.CosineCutoff(0.0, 6.5), output_hidden_layer_widths=[]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_options_match_mlcg_formulas(mlcg, tmp_path, case):
    torch.manual_seed(0)
    schnet = mlcg.StandardSchNet(**CASES[case](mlcg), hidden_channels=24, embedding_size=7, num_filters=16,
                                 num_interactions=2, max_num_neighbors=50)
    _randomize(schnet, 3)
    path = str(tmp_path / "model.pt")
    torch.save(mlcg.GradientsOut(schnet), path)
    model = importMlcg(path, includePriors=False).double()
    assert model.config.hiddenChannels == 24 and model.config.numFilters == 16
    assert model.gaussian_cosine == (case == "gaussian-cosine")
    schnet = schnet.double()
    pos = (torch.rand(13, 3, dtype=torch.float64) * 9.0)
    z = torch.randint(0, 7, (13,))
    pos_ref = pos.clone().requires_grad_(True)
    e_ref = schnet(pos_ref, z)
    (f_ref,) = torch.autograd.grad(e_ref, pos_ref)
    e, f = model.energy_and_forces(pos, z)
    assert abs(e.item() - e_ref.item()) <= 1e-10 * abs(e_ref.item())
    assert torch.allclose(f, -f_ref, rtol=0, atol=1e-10 * f_ref.abs().max().item())
    # The OpenMM-boundary module (custom ops, as TorchForce runs it): nm and kJ/mol.
    module = FlashSchNetForceModule(model, z, 13, precision="double")
    with torch.enable_grad():
        e_mm, f_mm = module(pos / 10.0)
    assert abs(e_mm.item() / 4.184 - e_ref.item()) <= 1e-10 * abs(e_ref.item())
    assert torch.allclose(f_mm / 41.84, -f_ref, rtol=0, atol=1e-10 * f_ref.abs().max().item())
    # filter_weights: W_t(d) = C(d) MLP_t(rbf(d)) for every block, the filter the CFConv applies.
    d = torch.linspace(0.05, model.cutoff - 1e-3, 37, dtype=torch.float64)
    table = model.filter_weights(d)
    assert table.shape == (2, 37, 16)
    for t, block in enumerate(schnet.interaction_blocks):
        expected = block.conv.filter_network(schnet.rbf_layer(d)) * block.conv.cutoff(d).view(-1, 1)
        assert torch.allclose(table[t], expected, rtol=0, atol=1e-12)


def test_max_num_neighbors_that_would_bind_gives_nan(mlcg, tmp_path):
    schnet = mlcg.StandardSchNet(**CASES["gaussian-cosine"](mlcg), hidden_channels=8, embedding_size=3,
                                 num_filters=8, num_interactions=1, max_num_neighbors=3)
    path = str(tmp_path / "model.pt")
    torch.save(schnet, path)
    model = importMlcg(path, includePriors=False)
    assert model.config.maxNumNeighbors == 3
    z = torch.zeros(5, dtype=torch.int64)
    e_far, _ = model.energy_and_forces(torch.arange(5.0).repeat_interleave(3).view(5, 3) * 10, z)
    assert torch.isfinite(e_far).all()
    e_close, _ = model.energy_and_forces(torch.rand(5, 3), z)   # 4 neighbours each, mlcg would keep 3
    assert torch.isnan(e_close).all()


@pytest.mark.parametrize("change, message", [
    (lambda m, s: setattr(s.interaction_blocks[0], "activation", nn.ReLU()), "ReLU"),
    (lambda m, s: setattr(s.output_network.layers, "1", nn.SiLU()), "SiLU"),
    (lambda m, s: setattr(s, "rbf_layer", m.SpacedExpBasis(6.0, 20)), "SpacedExpBasis"),
    (lambda m, s: setattr(s.interaction_blocks[1].conv, "aggr", "mean"), "aggregation 'mean'"),
    (lambda m, s: setattr(s.interaction_blocks[0].conv, "cutoff", nn.Identity()), "Identity"),
])
def test_unsupported_options_are_named(mlcg, tmp_path, change, message):
    schnet = mlcg.StandardSchNet(**CASES["gaussian-cosine"](mlcg), hidden_channels=8, embedding_size=3,
                                 num_filters=8, num_interactions=2)
    change(mlcg, schnet)
    path = str(tmp_path / "model.pt")
    torch.save(schnet, path)
    with pytest.raises(UnsupportedModelError, match=message):
        importMlcg(path, includePriors=False)


@pytest.mark.parametrize("device", [
    pytest.param("cpu", marks=pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                                                 reason="the table kernels run on CPU in the Triton interpreter")),
    pytest.param("cuda", marks=pytest.mark.cuda)])
@pytest.mark.parametrize("case", sorted(CASES))
def test_default_single_path_matches_float64(mlcg, tmp_path, case, device):
    """The force module's default float32 path (tabulated filters, or exact ones where no table meets the
    tolerance; on CUDA the kernels, on the CPU the same Triton kernels in the interpreter) vs the float64 model at
    the same float32 positions: energy and forces within 1e-5."""
    schnet = mlcg.StandardSchNet(**CASES[case](mlcg), hidden_channels=24, embedding_size=7, num_filters=16,
                                 num_interactions=2)
    _randomize(schnet, 5)
    path = str(tmp_path / "model.pt")
    torch.save(schnet, path)
    model = importMlcg(path, includePriors=False)
    gen = torch.Generator().manual_seed(11)
    nm = (torch.rand(40, 3, dtype=torch.float64, generator=gen) * 1.2).float()
    z = torch.randint(0, 7, (40,), generator=gen)
    e64, f64 = FlashSchNetForceModule(model, z, 40, precision="double")(nm.double())
    fast = FlashSchNetForceModule(model, z, 40, precision="single").to(device)
    fast.model.table_kernels_on_cpu = True
    with torch.enable_grad():
        e32, f32 = fast(nm.to(device))
    assert abs(e32.item() - e64.item()) <= 1e-5 * abs(e64.item())
    assert (f32.double().cpu() - f64).norm() <= 1e-5 * f64.norm()
