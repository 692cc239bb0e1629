"""FlashSchNet as an OpenMM force: TorchForce and PythonForce against the model's own autograd forces."""

import copy

import numpy as np
import pytest
import torch

from conftest import make_model
from openmmflash.cg.mapping import beadTypesFromTopology
from openmmflash.plugin.replicas import replicate
from openmmflash.plugin.torchforce import addFlashSchNetForce
from openmmflash.stack import import_openmm

openmm = import_openmm()
unit = openmm.unit
BACKENDS = ["torchforce", "pythonforce"]
CUDA = pytest.param("CUDA", marks=pytest.mark.cuda)
PLATFORMS = ["Reference", "CPU", CUDA]


def bare_system(n, box=None):
    system = openmm.System()
    for _ in range(n):
        system.addParticle(12.0)
    if box is not None:
        system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) for row in box])
    return system


def make_context(system, platform="Reference"):
    """A Context on ``platform``; CUDA in double precision, so float64 comparisons hold there too."""
    properties = {"Precision": "double"} if platform == "CUDA" else {}
    return openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform),
                          properties)


@pytest.fixture(params=["Reference", CUDA])
def platform(request):
    return request.param


def evaluate(system, positions, platform="Reference", box=None):
    """(energy kJ/mol, forces (N, 3) kJ/mol/nm) of ``system`` at ``positions`` (nm)."""
    context = make_context(system, platform)
    if box is not None:
        context.setPeriodicBoxVectors(*[openmm.Vec3(*row) for row in box])
    context.setPositions(positions)
    state = context.getState(getEnergy=True, getForces=True)
    return (state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
            state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))


def model_reference(model, positions, types, replicas=1, box=None):
    """Energy (kJ/mol) and forces (kJ/mol/nm) from the model itself in float64 (plain autograd, no ops)."""
    m = copy.deepcopy(model).double()
    pos = torch.tensor(np.asarray(positions) * 10.0, dtype=torch.float64)
    box_a = None if box is None else torch.tensor(np.asarray(box) * 10.0, dtype=torch.float64)
    energy, forces = m.energy_and_forces(pos, torch.tensor(types), replicas, box_a)
    return float(energy.sum().detach()) * 4.184, forces.detach().numpy() * 41.84


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("platform", PLATFORMS)
def test_force_equals_model_autograd_float64(model, cg_fragment, backend, platform):
    top, pos = cg_fragment
    system = bare_system(top.getNumAtoms())
    addFlashSchNetForce(system, model, top, backend=backend, precision="double")
    energy, forces = evaluate(system, pos, platform)
    types = beadTypesFromTopology(top, model.metadata["beadTypes"])
    ref_energy, ref_forces = model_reference(model, pos, types)
    assert energy == pytest.approx(ref_energy, rel=1e-12, abs=1e-10)
    np.testing.assert_allclose(forces, ref_forces, rtol=1e-10, atol=1e-9)
    assert np.abs(ref_forces).max() > 1.0  # a meaningful comparison, not zeros


@pytest.mark.parametrize("backend", BACKENDS)
def test_single_precision_close_to_double(model, cg_fragment, backend):
    top, pos = cg_fragment
    results = []
    for precision in ("single", "double"):
        system = bare_system(top.getNumAtoms())
        addFlashSchNetForce(system, model, top, backend=backend, precision=precision)
        results.append(evaluate(system, pos))
    (e32, f32), (e64, f64) = results
    assert e32 == pytest.approx(e64, rel=1e-5)
    # float32 arithmetic: relative error far under 1e-4 of the force scale
    assert np.abs(f32 - f64).max() < 1e-4 * np.abs(f64).max()


def test_float32_and_float64_positions(model, cg_fragment):
    from openmmflash.plugin.torchforce import createFlashSchNetModule

    top, pos = cg_fragment
    module = createFlashSchNetModule(model, top, precision="double")
    e64, f64 = module(torch.tensor(pos, dtype=torch.float64))
    e32, f32 = module(torch.tensor(pos, dtype=torch.float32))
    assert e64.dtype == torch.float64 and f64.dtype == torch.float64
    assert e32.dtype == torch.float32 and f32.dtype == torch.float32
    assert float(e32) == pytest.approx(float(e64), rel=1e-6)
    np.testing.assert_allclose(f32.numpy(), f64.numpy(), rtol=1e-4, atol=1e-4 * float(f64.abs().max()))


def test_forces_are_minus_energy_gradient(model, cg_fragment, platform):
    top, pos = cg_fragment
    system = bare_system(top.getNumAtoms())
    addFlashSchNetForce(system, model, top, precision="double")
    context = make_context(system, platform)
    _, forces = evaluate(system, pos, platform)
    h = 1e-5
    rng = np.random.default_rng(3)
    for atom, axis in zip(rng.choice(len(pos), 6, replace=False), rng.integers(0, 3, 6)):
        energies = []
        for sign in (1, -1):
            shifted = pos.copy()
            shifted[atom, axis] += sign * h
            context.setPositions(shifted)
            energies.append(context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
        numeric = -(energies[0] - energies[1]) / (2 * h)
        assert numeric == pytest.approx(forces[atom, axis], rel=1e-6, abs=1e-6)


def random_rotation(seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def test_rotation_translation_invariance(model, cg_fragment, platform):
    top, pos = cg_fragment
    system = bare_system(top.getNumAtoms())
    addFlashSchNetForce(system, model, top, precision="double")
    energy, forces = evaluate(system, pos, platform)
    rot = random_rotation(11)
    moved = (pos - pos.mean(0)) @ rot.T + np.array([3.0, -2.0, 7.5])
    energy2, forces2 = evaluate(system, moved, platform)
    assert energy2 == pytest.approx(energy, rel=1e-10)
    np.testing.assert_allclose(forces2, forces @ rot.T, rtol=1e-8, atol=1e-8)


def test_replicas_are_independent_copies(model, cg_fragment, platform):
    top, pos = cg_fragment
    n = top.getNumAtoms()
    single = bare_system(n)
    addFlashSchNetForce(single, model, top, precision="double")
    energy1, forces1 = evaluate(single, pos, platform)

    replicas = 3
    rtop, _, rpos = replicate(top, None, pos, replicas, spacing=0.0)  # copies on top of each other
    system = bare_system(replicas * n)
    addFlashSchNetForce(system, model, rtop, replicas=replicas, precision="double")
    energy3, forces3 = evaluate(system, rpos, platform)
    assert energy3 == pytest.approx(replicas * energy1, rel=1e-12)
    for b in range(replicas):
        np.testing.assert_allclose(forces3[b * n:(b + 1) * n], forces1, rtol=1e-10, atol=1e-10)

    # Deform replica 1: replicas 0 and 2 feel nothing of it (they overlap it in space).
    deformed = rpos.copy()
    deformed[n:2 * n] += np.random.default_rng(0).normal(scale=0.05, size=(n, 3))
    energy_d, forces_d = evaluate(system, deformed, platform)
    np.testing.assert_allclose(forces_d[:n], forces1, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(forces_d[2 * n:], forces1, rtol=1e-10, atol=1e-10)
    assert abs(energy_d - energy3) > 1e-3


@pytest.mark.parametrize("triclinic", [False, True])
def test_periodic_box_matches_unwrapped_molecule(model, cg_fragment, triclinic, platform):
    """A molecule split across the periodic boundary has the energy of the whole molecule (large box)."""
    top, pos = cg_fragment
    n = top.getNumAtoms()
    free = bare_system(n)
    addFlashSchNetForce(free, model, top, precision="double", periodic=False)
    energy_free, forces_free = evaluate(free, pos, platform)

    box = np.diag([3.5, 3.6, 3.7])
    if triclinic:
        box[1, 0], box[2, 0], box[2, 1] = 1.1, -0.9, 1.2
    # Move the molecule across the box corner, then wrap every bead into the box (splitting the molecule).
    shifted = pos - pos.mean(0) + 0.2
    frac = shifted @ np.linalg.inv(box)
    wrapped = (frac - np.floor(frac)) @ box
    assert not np.allclose(wrapped, shifted)  # really split
    periodic = bare_system(n, box)
    addFlashSchNetForce(periodic, model, top, precision="double", periodic=True)
    assert periodic.usesPeriodicBoundaryConditions()
    energy_p, forces_p = evaluate(periodic, wrapped, platform, box=box)
    assert energy_p == pytest.approx(energy_free, rel=1e-10)
    np.testing.assert_allclose(forces_p, forces_free, rtol=1e-8, atol=1e-8)


def test_periodic_images_interact_in_a_small_box(cg_fragment, platform):
    """With a box just over twice the cutoff, beads near opposite faces interact through the boundary."""
    top, pos = cg_fragment
    n = top.getNumAtoms()
    model = make_model(cutoff=6.0)
    box = np.diag([1.25, 1.25, 1.25]) * 1.0
    compact = pos - pos.mean(0)
    compact = compact / np.abs(compact).max() * 0.55 + 0.625
    periodic = bare_system(n, box)
    addFlashSchNetForce(periodic, model, top, precision="double", periodic=True)
    free = bare_system(n)
    addFlashSchNetForce(free, model, top, precision="double", periodic=False)
    energy_p, forces_p = evaluate(periodic, compact, platform, box=box)
    energy_f, _ = evaluate(free, compact, platform)
    types = beadTypesFromTopology(top, model.metadata["beadTypes"])
    ref_energy, ref_forces = model_reference(model, compact, types, box=box)
    assert energy_p == pytest.approx(ref_energy, rel=1e-12)
    np.testing.assert_allclose(forces_p, ref_forces, rtol=1e-10, atol=1e-9)
    assert abs(energy_p - energy_f) > 1e-3  # images matter here


@pytest.mark.parametrize("backend", BACKENDS)
def test_serialization_and_deepcopy(model, cg_fragment, backend, platform):
    top, pos = cg_fragment
    system = bare_system(top.getNumAtoms())
    addFlashSchNetForce(system, model, top, backend=backend, precision="double")
    energy, forces = evaluate(system, pos, platform)
    xml = openmm.XmlSerializer.serialize(system)
    restored = openmm.XmlSerializer.deserialize(xml)
    energy_x, forces_x = evaluate(restored, pos, platform)
    energy_c, forces_c = evaluate(copy.deepcopy(system), pos, platform)
    # Bitwise on the CPU platforms; CUDA sums pair messages with atomics, in a varying order.
    assert energy_x == pytest.approx(energy, rel=1e-13) and energy_c == pytest.approx(energy, rel=1e-13)
    np.testing.assert_allclose(forces_x, forces, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(forces_c, forces, rtol=1e-11, atol=1e-11)


def test_simulation_runs_with_priors(model, cg_fragment):
    from openmmflash.plugin.cgsystem import createCGSystem

    top, pos = cg_fragment
    system = createCGSystem(top, model)
    names = [f.getName() for f in system.getForces()]
    assert "FlashSchNet" in names and sum("prior" in name for name in names) == 5
    simulation = openmm.app.Simulation(top, system, openmm.LangevinMiddleIntegrator(300, 1.0, 0.002),
                                       openmm.Platform.getPlatformByName("CPU"))
    simulation.context.setPositions(pos)
    simulation.minimizeEnergy(maxIterations=20)
    simulation.step(20)
    state = simulation.context.getState(getPositions=True, getEnergy=True)
    assert np.isfinite(state.getPositions(asNumpy=True)._value).all()
    assert simulation.currentStep == 20


@pytest.mark.cuda
@pytest.mark.parametrize("backend", BACKENDS)
def test_cuda_single_precision(model, cg_fragment, backend):
    """The CUDA platform's default (single) precision passes float32 positions; the model runs in float32."""
    top, pos = cg_fragment
    system = bare_system(top.getNumAtoms())
    addFlashSchNetForce(system, model, top, backend=backend, precision="single")
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CUDA"))
    context.setPositions(pos)
    state = context.getState(getEnergy=True, getForces=True)
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    types = beadTypesFromTopology(top, model.metadata["beadTypes"])
    ref_energy, ref_forces = model_reference(model, pos, types)
    assert state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) == pytest.approx(ref_energy, rel=1e-5)
    assert np.abs(forces - ref_forces).max() < 1e-4 * np.abs(ref_forces).max()


@pytest.mark.cuda
def test_cuda_graphs_survive_energy_only_evaluations(model, cg_fragment):
    """openmm-torch captures one graph for force evaluations and one for energy-only ones (getState(getEnergy),
    reporters, the minimizer) but reads the outputs of the graph captured last: forces after an energy-only
    evaluation must still be those of the current positions."""
    top, pos = cg_fragment
    types = beadTypesFromTopology(top, model.metadata["beadTypes"])
    system = bare_system(top.getNumAtoms())
    addFlashSchNetForce(system, model, top, precision="single", neighborCapacity=4096, useCUDAGraphs=True,
                        CUDAGraphWarmupSteps=2)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CUDA"))
    rng = np.random.default_rng(5)
    for call in range(4):
        x = np.asarray(pos) + 0.01 * rng.standard_normal(np.shape(pos))
        context.setPositions(x)
        ref_energy, ref_forces = model_reference(model, x, types)
        energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        assert energy == pytest.approx(ref_energy, rel=1e-5)
        x = x + 0.01 * rng.standard_normal(np.shape(pos))  # move: stale forces would be those of the last call
        context.setPositions(x)
        ref_energy, ref_forces = model_reference(model, x, types)
        forces = context.getState(getForces=True).getForces(asNumpy=True).value_in_unit(
            unit.kilojoule_per_mole / unit.nanometer)
        assert np.abs(forces - ref_forces).max() < 1e-4 * np.abs(ref_forces).max()


@pytest.mark.cuda
def test_cuda_graphed_pythonforce_matches_reference(model, cg_fragment):
    """The PythonForce's own CUDA graph: warm-up calls, capture, then replays on new positions all equal the
    model's float64 autograd forces (the graph reads each step's positions, not the captured ones)."""
    top, pos = cg_fragment
    types = beadTypesFromTopology(top, model.metadata["beadTypes"])
    system = bare_system(top.getNumAtoms())
    addFlashSchNetForce(system, model, top, backend="pythonforce", precision="single", neighborCapacity=4096,
                        useCUDAGraphs=True, CUDAGraphWarmupSteps=2)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CUDA"))
    rng = np.random.default_rng(3)
    for call in range(5):  # 2 eager warm-up calls (the second captures), then 3 replays
        x = np.asarray(pos) + 0.01 * rng.standard_normal(np.shape(pos))
        context.setPositions(x)
        state = context.getState(getEnergy=True, getForces=True)
        forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        ref_energy, ref_forces = model_reference(model, x, types)
        assert state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) == pytest.approx(ref_energy,
                                                                                                   rel=1e-5)
        assert np.abs(forces - ref_forces).max() < 1e-4 * np.abs(ref_forces).max()


def test_pythonforce_graphs_need_fixed_capacity(model, cg_fragment):
    top, _ = cg_fragment
    system = bare_system(top.getNumAtoms())
    with pytest.raises(ValueError, match="neighborCapacity"):
        addFlashSchNetForce(system, model, top, backend="pythonforce", useCUDAGraphs=True)


def test_replicated_system_with_priors(model, cg_fragment):
    """replicate() copies the priors of a one-molecule System; with the force added for B replicas the energy is
    B times the single molecule's."""
    from openmmflash.plugin.cgsystem import createCGSystem

    top, pos = cg_fragment
    single = createCGSystem(top, model, removeCMMotion=False, precision="double")
    energy1, _ = evaluate(single, pos)
    priors_only = createCGSystem(top, model, addModelForce=False, removeCMMotion=False)
    rtop, rsystem, rpos = replicate(top, priors_only, pos, 4)
    addFlashSchNetForce(rsystem, model, rtop, replicas=4, precision="double")
    assert rsystem.getNumParticles() == 4 * top.getNumAtoms()
    energy4, forces4 = evaluate(rsystem, rpos)
    assert energy4 == pytest.approx(4 * energy1, rel=1e-10)
    with pytest.raises(ValueError, match="cannot replicate a PythonForce"):
        system = createCGSystem(top, model, backend="pythonforce")
        replicate(top, system, pos, 2)
