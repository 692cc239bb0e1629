"""``pip install .`` builds a wheel holding the whole ``openmmflash`` namespace from its three source roots."""

import os
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
@pytest.mark.network  # pip builds the wheel in an isolated environment, fetching setuptools
def test_wheel_holds_one_namespace(tmp_path):
    # As `pip install .` does it: an isolated build with the setuptools that pyproject.toml asks for.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), ROOT],
                   check=True, capture_output=True)
    (wheel,) = [f for f in os.listdir(tmp_path) if f.endswith(".whl")]
    names = zipfile.ZipFile(tmp_path / wheel).namelist()
    for module in ("openmmflash/__init__.py", "openmmflash/plugin/torchforce.py", "openmmflash/plugin/ops.py",
                   "openmmflash/integrators/__init__.py", "openmmflash/schnet/model.py", "openmmflash/cli.py"):
        assert module in names
    entry_points = zipfile.ZipFile(tmp_path / wheel).read(
        [n for n in names if n.endswith("entry_points.txt")][0]).decode()
    assert "openmmflash = openmmflash.cli:main" in entry_points
    assert "flashschnet = openmmflash.plugin.mlpotential:FlashSchNetPotentialImplFactory" in entry_points
