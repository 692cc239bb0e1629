"""MDAnalysis and mdtraj readers of CompactMD files, on a real MDAnalysisTests trajectory."""

import warnings

import MDAnalysis as mda
import mdtraj
import numpy as np
import pytest
from MDAnalysisTests.datafiles import DCD, GRO, PSF, XTC

import openmmflash.compactmd  # noqa: F401  (registers the readers)
from openmmflash.compactmd import CompactTrajectory, CompactWriter
from openmmflash.compactmd.mdtraj import load_cmdx

warnings.filterwarnings("ignore", category=DeprecationWarning)


@pytest.fixture(scope="module")
def adk(tmp_path_factory):
    """AdK (3341 atoms, 98 frames) from the MDAnalysisTests DCD, written to .cmdx with the PSF topology."""
    u = mda.Universe(PSF, DCD)
    ref = np.array([u.atoms.positions.copy() for _ in u.trajectory]) / 10.0
    path = str(tmp_path_factory.mktemp("cmdx") / "adk.cmdx")
    with CompactWriter(path, u.atoms.n_atoms, topology=u.atoms, chunkFrames=16) as w:
        for ts in u.trajectory:
            w.write(u.atoms.positions / 10.0, step=100 * ts.frame, time=ts.time)
    return path, ref


def test_mdanalysis_universe_reads_cmdx(adk):
    path, ref = adk
    u = mda.Universe(PSF, path)
    assert u.trajectory.format == "CMDX" and len(u.trajectory) == len(ref)
    for i in (57, 3, 97, 0, 40):  # random order: O(1) seeks through the index
        ts = u.trajectory[i]
        assert ts.frame == i and ts.data["step"] == 100 * i
        assert np.abs(u.atoms.positions / 10.0 - ref[i]).max() <= 0.0005 + 1e-6  # Å -> nm
    seq = np.array([u.atoms.positions.copy() for _ in u.trajectory[10:20:3]])
    np.testing.assert_allclose(seq / 10.0, ref[10:20:3], atol=0.0005 + 1e-6)
    assert [ts.frame for ts in u.trajectory[[5, 1]]] == [5, 1]


def test_mdanalysis_uses_embedded_topology(adk):
    path, _ = adk
    ref = mda.Universe(PSF)
    u = mda.Universe(path)
    assert u.atoms.n_atoms == ref.atoms.n_atoms
    assert list(u.atoms.names[:20]) == list(ref.atoms.names[:20])
    assert list(u.residues.resnames) == list(ref.residues.resnames)
    assert len(u.bonds) == len(ref.bonds)


def test_mdanalysis_writer_round_trip(tmp_path):
    u = mda.Universe(GRO, XTC)  # small solvated system with a box
    path = str(tmp_path / "w.cmdx")
    with mda.Writer(path, u.atoms.n_atoms) as w:
        for _ in u.trajectory[:4]:
            w.write(u.atoms)
    back = mda.Universe(GRO, path)
    for i in range(4):
        u.trajectory[i]
        back.trajectory[i]
        assert np.abs(back.atoms.positions - u.atoms.positions).max() <= 0.005 + 1e-4  # 0.0005 nm in Å
        np.testing.assert_allclose(back.dimensions, u.dimensions, rtol=1e-5)


def test_mdtraj_loaders(adk):
    path, ref = adk
    t = load_cmdx(path)
    assert t.n_frames == len(ref) and t.n_atoms == ref.shape[1] and t.topology.n_residues == 214
    assert np.abs(t.xyz - ref).max() <= 0.0005 + 1e-6
    top = mdtraj.load_psf(PSF)
    t2 = mdtraj.load(path, top=top, stride=7, atom_indices=[0, 5, 9])
    assert t2.n_frames == len(ref[::7]) and t2.n_atoms == 3
    np.testing.assert_allclose(t2.xyz, ref[::7][:, [0, 5, 9]], atol=0.0005 + 1e-6)
    one = load_cmdx(path, frame=42)
    np.testing.assert_array_equal(one.xyz[0], t.xyz[42])
    with CompactTrajectory(path) as traj:
        np.testing.assert_array_equal(traj.toMdtraj(slice(0, 5)).xyz, t.xyz[:5])


def test_mdtraj_atom_count_mismatch(adk, tmp_path):
    path, _ = adk
    with pytest.raises(ValueError, match="has 22 atoms"):
        load_cmdx(path, top=mdtraj.Topology.from_openmm(_small_topology()))


def _small_topology():
    import torch  # noqa: F401  (before openmm)
    from openmm import app

    top = app.Topology()
    res = top.addResidue("ALA", top.addChain())
    for k in range(22):
        top.addAtom(f"C{k}", app.element.carbon, res)
    return top


def test_mdtraj_load_without_top_uses_embedded_topology(adk, tmp_path):
    path, ref = adk
    t = mdtraj.load(path)  # mdtraj parses the file itself as the topology
    assert t.n_frames == len(ref) and t.topology.n_residues == 214
    np.testing.assert_array_equal(t.xyz, load_cmdx(path).xyz)
    assert mdtraj.load(path, top=path).n_atoms == ref.shape[1]
    folder = tmp_path / "folder.cmdx"
    folder.mkdir()
    with pytest.raises(IsADirectoryError, match="is a directory, not a CompactMD"):
        mdtraj.load(str(folder))
