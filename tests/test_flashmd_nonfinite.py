"""FlashMD integrators refuse NaN or infinite positions and velocities before asking OpenMM for any energy.

Without the check, NaN positions crashed the process on the Reference platform with PME (heap corruption in the
reciprocal-space sum) and were carried on silently with CutoffPeriodic. Real System: a Modeller water box (flexible
TIP3P-FB, PME or CutoffPeriodic) with the bundled water-tip3pfb-8fs model.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch  # noqa: F401  (before openmm)

from openmmflash import FlashMDIntegrator, FlashMDLangevinIntegrator
from openmmflash.integrators.training.data import flexibleWaterBox
from openmmflash.integrators.engine.statecheck import NonFiniteStateError
from openmmflash.stack import import_openmm

openmm = import_openmm()
MODEL = "water-tip3pfb-8fs"


@pytest.fixture(scope="module")
def water():
    return flexibleWaterBox(1.6, 0.7)


def _context(water, method, platform, langevin=False):
    topology, system, positions = water
    system = openmm.XmlSerializer.clone(system)
    if method == "cutoff":
        for force in system.getForces():
            if isinstance(force, openmm.NonbondedForce):
                force.setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic)
    device = "cuda" if platform == "CUDA" else "cpu"
    integ = (FlashMDLangevinIntegrator(300, 1.0, model=MODEL, device=device, randomSeed=3) if langevin
             else FlashMDIntegrator(model=MODEL, device=device, randomSeed=3))
    context = openmm.Context(system, integ, openmm.Platform.getPlatformByName(platform))
    context.setPositions(positions)
    context.setVelocitiesToTemperature(300, 5)
    return context, integ


def _refused(water, method, platform, what, langevin=False):
    context, integ = _context(water, method, platform, langevin)
    integ.step(1)  # a finite state steps as usual
    state = context.getState(getPositions=True, getVelocities=True)
    q = state.getPositions(asNumpy=True).value_in_unit(openmm.unit.nanometer)
    v = state.getVelocities(asNumpy=True).value_in_unit(openmm.unit.nanometer / openmm.unit.picosecond)
    if what == "positions":
        q = q.copy()
        q[[7, 200]] = [np.nan, 0.0, 0.0]
        context.setPositions(q)
    else:
        v = v.copy()
        v[3, 1] = np.inf
        context.setVelocities(v)
    fallbacks = integ.getNumFallbacks()
    with pytest.raises(NonFiniteStateError, match=rf"the Context's {what} are not finite \(NaN or infinite\) for "
                                                  rf"{2 if what == 'positions' else 1} of 387 particles .*at step 1: "
                                                  "a FlashMD integrator refuses to step"):
        integ.step(3)
    assert context.getStepCount() == 1 and integ.getNumFallbacks() == fallbacks  # nothing was stepped


@pytest.mark.parametrize("platform", ["Reference", "CPU"])
@pytest.mark.parametrize("method", ["pme", "cutoff"])
@pytest.mark.parametrize("what", ["positions", "velocities"])
def test_nonfinite_state_is_refused(water, platform, method, what):
    if platform == "Reference" and method == "pme" and what == "positions":
        pytest.skip("run in a subprocess below: a regression would crash the test process")
    _refused(water, method, platform, what)


def test_nonfinite_positions_with_pme_on_reference_do_not_crash():
    code = ("import sys; sys.path.insert(0, {tests!r}); import test_flashmd_nonfinite as t\n"
            "from openmmflash.integrators.training.data import flexibleWaterBox\n"
            "t._refused(flexibleWaterBox(1.6, 0.7), 'pme', 'Reference', 'positions')\n"
            "t._refused(flexibleWaterBox(1.6, 0.7), 'pme', 'Reference', 'positions', langevin=True)\n"
            "print('refused')").format(tests=os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0 and proc.stdout.strip().endswith("refused"), proc.stderr[-3000:]


def test_langevin_refuses_too(water):
    _refused(water, "cutoff", "CPU", "positions", langevin=True)


def test_error_is_an_openmm_exception(water):
    context, integ = _context(water, "cutoff", "CPU")
    positions = np.full((387, 3), np.nan)
    context.setPositions(positions)
    with pytest.raises(openmm.OpenMMException, match="FlashMD integrator refuses"):
        integ.step(1)


@pytest.mark.cuda
@pytest.mark.parametrize("what", ["positions", "velocities"])
def test_nonfinite_state_is_refused_on_cuda(water, what):
    _refused(water, "pme", "CUDA", what)
