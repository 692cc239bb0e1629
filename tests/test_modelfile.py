"""Model files: round trip, bundled names, and clear errors for bad files."""

import os

import pytest
import torch

from conftest import make_model
from openmmflash.schnet import modelfile
from openmmflash.schnet.model import FlashSchNet


def test_round_trip_preserves_everything(tmp_path, cg_fragment):
    model = make_model()
    model.metadata["provenance"] = {"note": "test"}
    path = tmp_path / "model.pt"
    model.save(str(path))
    loaded = FlashSchNet.load(str(path))
    assert loaded.config == model.config
    assert loaded.metadata == model.metadata
    top, pos = cg_fragment
    from openmmflash.cg.mapping import beadTypesFromTopology

    types = torch.tensor(beadTypesFromTopology(top, model.metadata["beadTypes"]))
    x = torch.tensor(pos * 10.0, dtype=torch.float32)
    e1, f1 = model.energy_and_forces(x, types)
    e2, f2 = loaded.energy_and_forces(x, types)
    assert torch.equal(e1, e2) and torch.equal(f1, f2)


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="no FlashSchNet model file.*bundled models"):
        FlashSchNet.load("/nonexistent/model.pt")


def test_newer_format_version_refused(tmp_path):
    path = str(tmp_path / "future.pt")
    make_model().save(path)
    payload = torch.load(path, weights_only=True)
    payload["formatVersion"] = modelfile.FORMAT_VERSION + 1
    torch.save(payload, path)
    with pytest.raises(ValueError, match="newer than this openmm-flash supports.*pip install -U"):
        FlashSchNet.load(path)


def test_not_a_model_file(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"this is not a model")
    with pytest.raises(ValueError, match="is not a FlashSchNet model file"):
        FlashSchNet.load(str(path))
    other = str(tmp_path / "other.pt")
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(ValueError, match="format tag"):
        FlashSchNet.load(other)


def test_save_is_atomic(tmp_path):
    path = str(tmp_path / "m.pt")
    make_model().save(path)
    assert os.listdir(tmp_path) == ["m.pt"]


def test_unknown_config_key():
    from openmmflash.schnet.config import FlashSchNetConfig

    with pytest.raises(ValueError, match="unknown FlashSchNet configuration keys"):
        FlashSchNetConfig.fromDict({"hiddenChannels": 8, "hiden": 3})
    with pytest.raises(ValueError, match="lengthUnit"):
        FlashSchNetConfig(lengthUnit="furlong")


def test_files_with_the_old_precision_key_load(tmp_path, cg_fragment):
    """Model files written when the filter-MLP format was the config key "precision" (the bundled models among
    them) load with it as ``filterPrecision`` and give the same forces."""
    model = make_model()
    model.config.filterPrecision = "w16a16"
    model.filter_precision = "w16a16"
    path = str(tmp_path / "old.pt")
    model.save(path)
    payload = torch.load(path, weights_only=True)
    payload["config"]["precision"] = payload["config"].pop("filterPrecision")
    torch.save(payload, path)
    loaded = FlashSchNet.load(path)
    assert loaded.config.filterPrecision == loaded.filter_precision == "w16a16"
    assert loaded.config == model.config
    top, pos = cg_fragment
    from openmmflash.cg.mapping import beadTypesFromTopology

    types = torch.tensor(beadTypesFromTopology(top, model.metadata["beadTypes"]))
    x = torch.tensor(pos * 10.0, dtype=torch.float32)
    assert torch.equal(model.energy_and_forces(x, types)[1], loaded.energy_and_forces(x, types)[1])
    bundled = modelfile.resolveModelPath("chignolin")
    assert "precision" in torch.load(bundled, weights_only=True)["config"]
    assert FlashSchNet.load(bundled).config.filterPrecision == "fp32"
