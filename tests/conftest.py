"""Shared test configuration: seeds, platforms and the ``cuda`` marker.

Triton kernels run compiled on a machine with a CUDA GPU and through the interpreter (TRITON_INTERPRET=1) where
there is none; the variable must be set before triton is imported. An explicit TRITON_INTERPRET in the environment
is kept as it is, and OPENMMFLASH_TEST_CUDA=1 asks for the compiled kernels (never the interpreter).
"""

import os

import torch  # (before openmm; importing torch does not import triton)

if "TRITON_INTERPRET" not in os.environ and not os.environ.get("OPENMMFLASH_TEST_CUDA") \
        and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
SHARED_DATA = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))

HAS_CUDA = torch.cuda.is_available()

# One libtorch thread: its OpenMP threads otherwise spin against OpenMM's CPU-platform threads (about 10x slower
# force evaluations on a 2-core machine).
torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords and not HAS_CUDA:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)
    yield


# --- FlashSchNet fixtures: a small model and a 9-residue CG fragment (45 beads) -----------------------------------

PRIORS = {
    "bonds": {"N-CA": {"x0": 1.46, "k": 100.0}, "CA-C": {"x0": 1.52, "k": 100.0}, "C-N": {"x0": 1.33, "k": 120.0},
              "C-O": {"x0": 1.23, "k": 150.0}, "CA-CB": {"x0": 1.53, "k": 90.0}},
    "angles": {"N-CA-C": {"cos0": -0.35, "k": 20.0}, "CA-C-N": {"cos0": -0.45, "k": 25.0},
               "C-N-CA": {"cos0": -0.5, "k": 25.0}},
    "dihedrals": {"C-N-CA-C": {"v0": 0.1, "k1": [0.1, 0.2], "k2": [0.3, 0.05]},
                  "C-N-CA-C:GLY": {"v0": 0.0, "k1": [0.4], "k2": [-0.2]},
                  "N-CA-C-N": {"v0": 0.0, "k1": [0.15, 0.0, 0.1], "k2": [0.2, 0.1, 0.0]}},
    "impropers": {"N-CB-C-CA": {"phi0": 0.6, "k": 5.0}},
    "repulsion": {"CA-CA": {"sigma": 4.0}, "*": {"sigma": 3.0}},
}


@pytest.fixture(scope="session")
def cg_fragment():
    """(CG topology, positions (n, 3) nm) of the first 9 residues of the 1ENH-like benchmark structure."""
    from openmmflash.cg.structure import loadProtein

    return loadProtein(os.path.join(DATA, "cg_fragment.pdb"))


def make_model(seed=7, cutoff=8.0, **config):
    from openmmflash.cg.mapping import CGMapping
    from openmmflash.schnet.config import FlashSchNetConfig
    from openmmflash.schnet.model import FlashSchNet

    table = CGMapping("5bead").defaultBeadTypes()
    values = dict(numBeadTypes=len(table), hiddenChannels=16, numFilters=12, numRbf=10, numInteractions=2,
                  cutoff=cutoff, readoutHidden=[8])
    values.update(config)
    model = FlashSchNet(FlashSchNetConfig(**values))
    model.reset_parameters(seed)
    with torch.no_grad():  # non-zero biases so every parameter matters
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)))
    model.metadata = {"beadTypes": table, "mapping": "5bead", "priors": PRIORS}
    return model


@pytest.fixture
def model():
    return make_model()


# --- FlashMD fixture: learned-step training pairs of a tiny flexible-water box (CPU platform) --------------------

WATER_STRIDE = 0.002  # ps


@pytest.fixture(scope="session")
def water_pairs(tmp_path_factory):
    """(pairs .npz path, System, Topology, positions): 2 starts x 5 pairs at a 2 fs stride, 300 K, 1.2 nm box."""
    from openmmflash.integrators.training.data import flexibleWaterBox, generatePairs, saveDataset, speciesOf

    top, system, pos = flexibleWaterBox(1.2, 0.5)
    data = generatePairs(system, pos, speciesOf(top), [300.0], WATER_STRIDE, startsPerTemperature=2,
                         pairsPerStart=5, pairSpacing=0.01, equilibration=0.05, platform="CPU", progress=False)
    path = str(tmp_path_factory.mktemp("water_pairs") / "pairs.npz")
    saveDataset(path, data)
    return path, system, top, pos


H_MASS, O_MASS = 1.007947, 15.99943  # amu, the water model's species masses


def relaxed_water_box(iterations):
    """(Topology, System, positions (n, 3) nm numpy) of the 1.2 nm flexible-water box, energy-minimized once on
    the CPU platform (``iterations`` steps) so that every test starts from a sane structure."""
    import numpy as np
    import openmm as mm
    from openmm import unit

    from openmmflash.integrators.training.data import flexibleWaterBox

    top, system, pos = flexibleWaterBox(1.2, 0.5)
    ctx = mm.Context(system, mm.VerletIntegrator(0.0005), mm.Platform.getPlatformByName("CPU"))
    ctx.setPositions(pos)
    mm.LocalEnergyMinimizer.minimize(ctx, 10.0, iterations)
    pos = ctx.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    return top, system, np.asarray(pos)
