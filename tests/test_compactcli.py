"""``openmmflash compress/decompress/info/verify`` on real MDAnalysisTests trajectories."""

import os

import mdtraj
import numpy as np
import pytest
from MDAnalysisTests.datafiles import GRO, PSF, XTC, DCD

from openmmflash.cli import main
from openmmflash.compactmd import CompactTrajectory

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_compress_dcd_verify_info_decompress(tmp_path, capsys):
    out = str(tmp_path / "adk.cmdx")
    assert main(["compress", DCD, "--top", PSF, "-o", out, "--max-error", "0.001"]) == 0
    assert main(["verify", out, "--source", DCD, "--top", PSF]) == 0
    text = capsys.readouterr().out
    assert "98/98" not in text and "1/1 chunks intact" in text and ": OK;" in text
    worst = float(text.split("max |error| ")[1].split(" nm")[0])
    assert 0.0009 < worst <= 0.001  # the true error is reported, and it is within the bound
    assert main(["info", out]) == 0
    assert "3341 (214 residues" in capsys.readouterr().out
    dcd = str(tmp_path / "back.dcd")
    assert main(["decompress", out, "-o", dcd]) == 0
    with CompactTrajectory(out) as traj:
        np.testing.assert_allclose(mdtraj.load(dcd, top=PSF).xyz, traj.read(), atol=1e-6)


def test_xtc_lossless_round_trip(tmp_path, capsys):
    out = str(tmp_path / "x.cmdx")
    assert main(["compress", XTC, "--top", GRO, "-o", out]) == 0
    assert main(["verify", out, "--source", XTC]) == 0
    assert "max |error| 0 nm" in capsys.readouterr().out
    back = str(tmp_path / "back.xtc")
    assert main(["decompress", out, "-o", back]) == 0
    a = mdtraj.formats.XTCTrajectoryFile(XTC).read()
    b = mdtraj.formats.XTCTrajectoryFile(back).read()
    for x, y in zip(a, b):  # positions, times, steps, boxes: bit-identical
        np.testing.assert_array_equal(x, y)


def test_verify_reports_corruption(tmp_path, capsys):
    out = str(tmp_path / "c.cmdx")
    assert main(["compress", DCD, "-o", out, "--chunk-frames", "20"]) == 0
    with CompactTrajectory(out) as traj:
        offset = traj.chunks[2].offset
    data = bytearray(open(out, "rb").read())
    data[offset + 100] ^= 1
    open(out, "wb").write(data)
    assert main(["verify", out]) == 1
    err = capsys.readouterr().err
    assert f"chunk 2 (byte {offset}, frames 40-59)" in err


def test_compress_refuses_existing_output(tmp_path, capsys):
    out = tmp_path / "e.cmdx"
    out.write_bytes(b"x")
    assert main(["compress", DCD, "-o", str(out)]) == 2
    assert "overwrite" in capsys.readouterr().err
    assert os.path.getsize(out) == 1
