"""GAQ quantization-aware training, the ``openmmflash quantize`` command and a quantized model in the FlashMD
integrators, on a tiny flexible-water box (CPU platform)."""

import os

import numpy as np
import pytest
import torch

import openmm as mm
from openmm import app, unit

from openmmflash.cli import main as cli_main
from openmmflash.integrators.training.qat import BranchSchedule, QATSchedule, quantizationAwareTraining
from openmmflash.integrators.training.data import loadDataset
from openmmflash.integrators.network.modelfile import FlashMDModel, loadModel, saveModel
from openmmflash.integrators.engine.thermostats import FlashMDLangevinIntegrator
from openmmflash.integrators.training.trainer import Trainer

from conftest import WATER_STRIDE as STRIDE  # ps


@pytest.fixture(scope="module")
def water(water_pairs, tmp_path_factory):
    path, system, top, pos = water_pairs
    data = loadDataset(path)
    folder = tmp_path_factory.mktemp("gaq")
    torch.manual_seed(0)
    model = FlashMDModel([1, 8], [float(data["masses"][data["types"] == z][0]) for z in (1, 8)], STRIDE, 1.6,
                         config=dict(channels=16, num_layers=2, num_rbf=8, cutoff=0.4, neighbor_norm=10.0))
    model_path = str(folder / "fp32.pt")
    saveModel(model, model_path)
    return path, model_path, system, top, pos, folder


def train_loss(model, data_path):
    trainer = Trainer(data_path, model=model, batchSize=4, seed=0, device="cpu")
    idx = np.arange(len(trainer.q0))
    with torch.no_grad():
        return float(trainer.loss(idx, augment=False)[0])


def test_few_qat_steps_lower_the_loss(water):
    data, model_path, *_ = water
    fast = QATSchedule(scalar=BranchSchedule(lr=3e-3, rampFraction=0.0, freezeFraction=0.0),
                       vector=BranchSchedule(lr=2e-3, rampFraction=0.0, freezeFraction=0.0))
    common = dict(scheme="w8a8", method="frame", dirBits=8, batchSize=2, calibrationBatches=2, schedule=fast,
                  device="cpu", progress=False, seed=3)
    calibrated = quantizationAwareTraining(model_path, data, steps=0, **common)
    trained = quantizationAwareTraining(model_path, data, steps=25, **common)
    before, after = train_loss(calibrated, data), train_loss(trained, data)
    assert after < 0.9 * before
    qat = trained.gaq["qat"]
    assert qat["steps"] == 25 and qat["lossHistory"] and np.isfinite(qat["lossAfterQAT"])
    assert trained.validation["numValidationPairs"] >= 1
    # the input model is not modified; the result ends at the scheme's bits with frozen observers
    assert not getattr(loadModel(model_path), "gaq", None)
    assert all(not m.observe and m.bits == 8 for m in trained.modules() if hasattr(m, "amax"))


def test_progressive_schedule_reaches_target_bits():
    s = BranchSchedule(lr=1e-3, rampFraction=0.5, startWeightBits=8, startActivationBits=12)
    assert [s.bits(4, 8, p) for p in (0.0, 0.25, 0.5, 0.9)] == [8, 6, 4, 4]
    assert s.bits(8, 4, 0.0) == 8   # never starts below the target


def test_cli_quantize_and_run_in_langevin_integrator(water, capsys):
    data, model_path, system, top, pos, folder = water
    out = str(folder / "q.pt")
    rc = cli_main(["quantize", model_path, "--scheme", "w4a8", "--method", "frame", "--data", data, "--qat-steps",
                   "2", "--batch-size", "2", "--calibration-batches", "2", "--dir-bits", "8", "--device", "cpu",
                   "--quiet", "-o", out])
    assert rc == 0 and os.path.exists(out)
    assert "lossAfterQAT" in capsys.readouterr().out
    model = loadModel(out)
    assert model.gaq["scheme"] == "w4a8" and model.provenance["quantized"]["qatSteps"] == 2
    # the quantized file runs in a FlashMD integrator, by path, like any model file
    integ = FlashMDLangevinIntegrator(300 * unit.kelvin, 1 / unit.picosecond, None, model=out, randomSeed=5)
    sim = app.Simulation(top, system, integ, mm.Platform.getPlatformByName("CPU"))
    sim.context.setPositions(pos)
    sim.context.setVelocitiesToTemperature(300 * unit.kelvin, 2)
    sim.step(3)
    state = sim.context.getState(getPositions=True, getVelocities=True)
    assert sim.currentStep == 3 and np.isfinite(state.getPositions(asNumpy=True)._value).all()
    assert integ.getNumLearnedSteps() + integ.getNumFallbacks() == 3


def test_cli_refuses_bad_input(water, capsys):
    data, model_path, _, _, _, folder = water
    assert cli_main(["quantize", model_path, "--scheme", "w3a8", "--data", data, "-o", str(folder / "x.pt")]) == 2
    assert "unknown quantization scheme" in capsys.readouterr().err
    assert cli_main(["quantize", model_path, "--method", "polar", "--data", data, "-o", str(folder / "x.pt")]) == 2
    assert "unknown method" in capsys.readouterr().err
    assert cli_main(["quantize", model_path, "--data", str(folder / "none.npz"), "-o", str(folder / "x.pt")]) == 2
    assert "flashmd-data" in capsys.readouterr().err
    assert not os.path.exists(folder / "x.pt")
