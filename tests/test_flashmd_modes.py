"""Molecular modes (integrators/modes.py): the translation / rotation / vibration split is exact and momentum-free,
the mode-share rescale keeps each mode's share and the energy, and FlashMDIntegrator(modeRescale=True) on a real
flexible-water Context keeps H exact and the mode shares across learned strides."""

import numpy as np
import pytest
import torch

from conftest import H_MASS, O_MASS, relaxed_water_box

from openmm import app, unit
import openmm as mm

from openmmflash.integrators.engine.flashmdintegrator import FlashMDIntegrator
from openmmflash.integrators.network.modelfile import FlashMDModel
from openmmflash.integrators.rescale.modes import (modeKinetic, modeShareRescale, modeTemperatures, moleculeGroups,
                                           splitModes)


def waters(M=6, seed=0):
    rng = np.random.default_rng(seed)
    masses = np.tile([O_MASS, H_MASS, H_MASS], M)
    shape = np.array([[0, 0, 0], [0.0957, 0, 0], [-0.024, 0.0927, 0]])
    q = (np.repeat(rng.uniform(0, 2, (M, 3)), 3, 0) + np.tile(shape, (M, 1)))
    groups = moleculeGroups(np.arange(3 * M).reshape(M, 3).tolist() + [[3 * M]])  # and one ion
    masses = np.append(masses, 22.99)
    q = np.vstack([q, [1.0, 1.0, 1.0]])
    return q, rng.standard_normal(q.shape), masses, groups


def test_split_is_exact_orthogonal_and_momentum_free():
    q, v, masses, groups = waters()
    V, *parts = splitModes(q, v, masses, groups)
    np.testing.assert_allclose(V + sum(parts), v, atol=1e-12)
    K = 0.5 * float((masses[:, None] * v * v).sum())
    assert 0.5 * masses.sum() * (V ** 2).sum() + modeKinetic(parts, masses).sum() == pytest.approx(K, rel=1e-12)
    for p in parts:
        np.testing.assert_allclose((masses[:, None] * p).sum(0), 0, atol=1e-10)
    # a rigid rotation of every molecule is all rotation; a uniform shift all System motion
    omega = np.array([0.3, -1.0, 2.0])
    com = np.zeros_like(q)
    for idx in groups[1]:
        com[idx] = (masses[idx, None] * q[idx]).sum(0) / masses[idx].sum()
    rigid = np.cross(omega, q - com)
    rigid[-1] = 0.0
    _, t, w, vib = splitModes(q, rigid, masses, groups)
    assert np.abs(vib).max() < 1e-12 and np.abs(t).max() < 1e-12 and np.abs(w - rigid).max() < 1e-12


def test_share_rescale_keeps_shares_energy_and_momentum():
    q, v, masses, groups = waters(seed=1)
    rng = np.random.default_rng(2)
    v1 = v + 0.2 * rng.standard_normal(v.shape)
    v1 += ((masses[:, None] * (v - v1)).sum(0) / masses.sum())  # the learned step keeps the momentum
    K = 0.5 * float((masses[:, None] * v * v).sum())
    out, reason = modeShareRescale(q, v, q, v1, masses, groups, K, maxRescale=2.0)
    assert reason is None
    assert 0.5 * float((masses[:, None] * out * out).sum()) == pytest.approx(K, rel=1e-12)
    np.testing.assert_allclose((masses[:, None] * out).sum(0), (masses[:, None] * v).sum(0), atol=1e-10)
    before = modeKinetic(splitModes(q, v, masses, groups)[1:], masses)
    after = modeKinetic(splitModes(q, out, masses, groups)[1:], masses)
    np.testing.assert_allclose(after / after.sum(), before / before.sum(), rtol=1e-10)
    assert not np.allclose(modeKinetic(splitModes(q, v1, masses, groups)[1:], masses) / after.sum(),
                           before / before.sum(), rtol=1e-3)  # the unshared step does change the shares
    _, reason = modeShareRescale(q, v, q, 3.0 * v1, masses, groups, K, maxRescale=1.25)
    assert reason.startswith("modes:")
    T = modeTemperatures(q, v, masses, groups)
    assert set(T) == {"translation", "rotation", "vibration"} and all(t > 0 for t in T.values())


@pytest.mark.parametrize("modes", [True, False])
def test_integrator_mode_rescale_on_water(modes):
    top, system, pos = relaxed_water_box(60)
    torch.manual_seed(2)
    model = FlashMDModel([1, 8], [H_MASS, O_MASS], 0.0005, 1.6, dict(channels=8, num_layers=1, num_rbf=8,
                                                                      cutoff=0.4))
    with torch.no_grad():
        model.network.head.vec.weight.mul_(3.0)
    integ = FlashMDIntegrator(model=model, randomSeed=3, maxRescale=2.0, modeRescale=modes)
    sim = app.Simulation(top, system, integ, mm.Platform.getPlatformByName("Reference"))
    sim.context.setPositions(pos)
    sim.context.setVelocitiesToTemperature(300 * unit.kelvin, 7)

    def shares_and_energy():
        st = sim.context.getState(getPositions=True, getVelocities=True, getEnergy=True)
        q = np.asarray(st.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
        v = np.asarray(st.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond))
        box = np.asarray(st.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer))
        k = modeKinetic(splitModes(q, v, integ._masses, integ._modeGroups, box)[1:], integ._masses)
        return k / k.sum(), (st.getPotentialEnergy() + st.getKineticEnergy()).value_in_unit(unit.kilojoule_per_mole)

    integ.setContext(sim.context)
    s0, e0 = shares_and_energy()
    sim.step(3)
    s1, e1 = shares_and_energy()
    assert integ.getNumLearnedSteps() == 3 and integ.getNumFallbacks() == 0
    assert abs(e1 - e0) < 1e-7 * abs(e0)
    if not modes:  # the global rescale lets the network move energy between modes: the check below can fail
        assert np.abs(s1 - s0).max() > 1e-4
        return
    np.testing.assert_allclose(s1, s0, atol=2e-6)
    assert set(integ.computeModeTemperatures()) == {"translation", "rotation", "vibration"}
    with pytest.raises(ValueError, match="modeRescale"):
        FlashMDIntegrator(model=model, rescaleEnergy=False, modeRescale=True)


def test_model_file_recommends_mode_rescale(tmp_path):
    from openmmflash.integrators.network.modelfile import loadModel, saveModel
    from openmmflash.integrators.engine.thermostats import FlashMDLangevinIntegrator
    model = FlashMDModel([1, 8], [H_MASS, O_MASS], 0.0005, 1.6, dict(channels=8, num_layers=1, num_rbf=8, cutoff=0.4))
    plain = str(tmp_path / "plain.pt")
    saveModel(model, plain)
    model.integratorDefaults = {"modeRescale": True}
    path = str(tmp_path / "modes.pt")
    saveModel(model, path)
    assert loadModel(path).integratorDefaults == {"modeRescale": True}
    assert loadModel(plain).integratorDefaults == {}
    assert FlashMDIntegrator(model=path).modeRescale and not FlashMDIntegrator(model=plain).modeRescale
    assert not FlashMDIntegrator(model=path, modeRescale=False).modeRescale  # the user's choice wins
    assert not FlashMDIntegrator(model=path, rescaleEnergy=False).modeRescale  # nothing to share without the rescale
    assert FlashMDLangevinIntegrator(300 * unit.kelvin, 10 / unit.picosecond, None, model=path).modeRescale
    assert loadModel("water-tip3pfb-8fs-npt").integratorDefaults == {"modeRescale": True}
