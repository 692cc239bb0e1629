"""``from openmmflash import ...`` for everything the quickstarts use, bundled model names, the FlashMD
integrators' keyword-only ``model=`` with its deprecation path, and the errors for mistyped model names."""

import warnings

import pytest
import torch  # noqa: F401  (before openmm)

import openmmflash
from openmm import unit

WATER = "water-tip3pfb-8fs"


@pytest.mark.parametrize("name", sorted(openmmflash._EXPORTS))
def test_every_export_resolves(name):
    value = getattr(openmmflash, name)
    assert value is not None and name in dir(openmmflash)
    module = openmmflash._EXPORTS[name].partition(":")[0]
    assert getattr(value, "__module__", module).startswith("openmmflash")


def test_quickstart_names_are_exported():
    from openmmflash import (CompactReporter, CompactTrajectory, FlashMDBussiIntegrator,  # noqa: F401
                             FlashMDIntegrator, FlashMDLangevinIntegrator, addFlashSchNetForce, bundledModels,
                             createCGSystem, createFlashSchNetForce, loadFlashMDModel, loadModel, loadProtein,
                             quantizationAwareTraining, replicate)
    from openmmflash.integrators.network.modelfile import loadModel as flashmdLoad
    from openmmflash.plugin.torchforce import addFlashSchNetForce as original

    assert addFlashSchNetForce is original and loadFlashMDModel is flashmdLoad
    with pytest.raises(AttributeError, match="no attribute 'notAThing'"):
        openmmflash.notAThing


def test_bundled_models_lists_both_kinds():
    models = openmmflash.bundledModels()
    assert models["chignolin"] == "FlashSchNet" and models["3a4r"] == "FlashSchNet"
    assert models[WATER] == "FlashMD" and models["water-tip3pfb-8fs-npt"] == "FlashMD"
    assert set(openmmflash.bundledModels("FlashMD")) == {n for n, k in models.items() if k == "FlashMD"}
    with pytest.raises(ValueError, match="kind must be one of"):
        openmmflash.bundledModels("schnet")


def test_bundled_names_load_everywhere():
    net = openmmflash.loadModel("chignolin")
    assert net.metadata["mapping"] == "5bead"
    flashmd = openmmflash.loadFlashMDModel(WATER)
    assert abs(flashmd.stride - 0.008) < 1e-12


def test_mistyped_flashschnet_name_suggests_the_bundled_one():
    with pytest.raises(FileNotFoundError, match=r"bundled FlashSchNet models: 3a4r, chignolin\); did you mean 'chignolin'\?"):
        openmmflash.loadModel("chignolni")


def test_mistyped_flashmd_name_suggests_the_bundled_one():
    with pytest.raises(ValueError, match=r"did you mean 'water-tip3pfb-8fs'\?"):
        openmmflash.FlashMDIntegrator(model="water-tip3pfb-8f", device="cpu")


def test_flashschnet_name_given_to_flashmd_says_which_kind_it_is():
    with pytest.raises(ValueError, match="'chignolin' is a bundled FlashSchNet model.*chignolin-cg-20fs"):
        openmmflash.FlashMDLangevinIntegrator(300, 1.0, model="chignolin", device="cpu")


def test_model_is_keyword_only_and_required():
    integ = openmmflash.FlashMDIntegrator(0.008 * unit.picosecond, model=WATER, device="cpu")
    assert integ.getStepSize().value_in_unit(unit.picosecond) == pytest.approx(0.008)
    with pytest.raises(TypeError, match="needs model="):
        openmmflash.FlashMDIntegrator(0.008, device="cpu")
    with pytest.raises(TypeError, match="needs model="):
        openmmflash.FlashMDLangevinIntegrator(300, 1.0, None, device="cpu")
    with pytest.raises(TypeError, match="too many"):
        openmmflash.FlashMDBussiIntegrator(300, 0.1, None, WATER, "extra", device="cpu")


@pytest.mark.parametrize("make", [
    lambda: openmmflash.FlashMDIntegrator(WATER, device="cpu"),
    lambda: openmmflash.FlashMDIntegrator(WATER, 0.008, device="cpu"),
    lambda: openmmflash.FlashMDIntegrator(WATER, stepSize=0.008, device="cpu"),
    lambda: openmmflash.FlashMDLangevinIntegrator(300, 1.0, None, WATER, device="cpu"),
    lambda: openmmflash.FlashMDBussiIntegrator(300, 0.1, 0.008, WATER, device="cpu"),
], ids=["nve-model", "nve-model-step", "nve-model-stepkw", "langevin", "bussi"])
def test_old_positional_order_warns_and_works(make):
    with pytest.warns(DeprecationWarning, match=r"is deprecated: pass the model as a keyword argument") as record:
        integ = make()
    assert record[0].filename == __file__  # the warning points at the caller's line
    assert integ.getStepSize().value_in_unit(unit.picosecond) == pytest.approx(0.008)
    assert integ._model.stride == pytest.approx(0.008)


def test_new_order_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        openmmflash.FlashMDLangevinIntegrator(300 * unit.kelvin, 1 / unit.picosecond, None, model=WATER, device="cpu")
        openmmflash.FlashMDBussiIntegrator(300, 0.1, model=WATER, device="cpu")
        openmmflash.FlashMDIntegrator(model=WATER, device="cpu")


def test_models_command_lists_every_bundled_model(capsys):
    from openmmflash.cli import main

    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split()[1] for line in lines if line and not line.startswith("Use a name")}
    assert rows == openmmflash.bundledModels()
    assert any("chignolin " in line and "10-residue protein" in line for line in lines)
    assert any(line.startswith("water-tip3pfb-8fs-gaq-w4a8") and "8 fs stride, GAQ w4a8" in line for line in lines)
