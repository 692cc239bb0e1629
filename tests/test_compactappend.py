"""Appending to CompactMD files says what it does: mismatched bound, codec or atom count is an error naming the
file's value; removed frames are named in a warning; an append that would remove every frame is refused; a gap
of steps is reported. Files of format version 2 (committed in tests/data) still read."""

import os
import warnings

import numpy as np
import pytest

from openmmflash.compactmd import CompactTrajectory, CompactWriter
from openmmflash.compactmd.compactwriter import RestartWarning

DATA = os.path.join(os.path.dirname(__file__), "data")


def _frames(nFrames, nAtoms=30, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 3, (nAtoms, 3)) + np.cumsum(rng.normal(0, 0.01, (nFrames, nAtoms, 3)), axis=0)


def _file(tmp_path, nFrames=6, **kw):
    path = str(tmp_path / "a.cmdx")
    x = _frames(nFrames)
    with CompactWriter(path, x.shape[1], chunkFrames=4, **kw) as w:
        w.write(x, step=100 * np.arange(1, nFrames + 1))
    return path, x


def test_mismatched_bound_codec_or_atoms_is_an_error_naming_the_file_value(tmp_path):
    path, x = _file(tmp_path, maxError=0.001)
    with pytest.raises(ValueError, match=r"maxError=0.0005 nm: the file's bound is maxError=0.001 nm"):
        CompactWriter(path, x.shape[1], append=True, maxError=0.0005)
    with pytest.raises(ValueError, match="codec 'xtc': the file uses codec 'bounded'"):
        CompactWriter(path, x.shape[1], append=True, codec="xtc")
    with pytest.raises(ValueError, match="cannot append 31-atom frames .* holds 30 atoms"):
        CompactWriter(path, 31, append=True)
    with CompactWriter(path, x.shape[1], append=True, maxError=0.001) as w:  # the same bound is fine
        w.write(x[0], step=700)
    with CompactTrajectory(path) as traj:
        assert len(traj) == 7 and traj.maxError == 0.001


def test_overlap_is_removed_with_a_warning_naming_the_steps(tmp_path):
    path, x = _file(tmp_path)
    with pytest.warns(RestartWarning, match=r"removed 2 frames at steps 500, 600 .* truncateAfterStep=499"):
        with CompactWriter(path, x.shape[1], append=True) as w:
            w.write(x[4:], step=[500, 600])
    with CompactTrajectory(path) as traj:
        np.testing.assert_array_equal(traj.steps, 100 * np.arange(1, 7))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # asked for explicitly: no warning
        with CompactWriter(path, x.shape[1], append=True, truncateAfterStep=300) as w:
            w.write(x[3:], step=[400, 500, 600])
    with CompactTrajectory(path) as traj:
        np.testing.assert_array_equal(traj.steps, 100 * np.arange(1, 7))


def test_append_that_would_remove_every_frame_is_refused(tmp_path):
    path, x = _file(tmp_path)
    w = CompactWriter(path, x.shape[1], append=True)
    with pytest.raises(ValueError, match=r"would remove all 6 frames .* \(steps 100..600\)"):
        w.write(x[0], step=0)
    w.close()
    with CompactTrajectory(path) as traj:
        assert len(traj) == 6  # nothing was lost


def test_gap_of_steps_is_reported(tmp_path):
    path, x = _file(tmp_path)
    with pytest.warns(RestartWarning, match=r"ends at step 600 but the appended frames start at step 1000.*3 frames"):
        with CompactWriter(path, x.shape[1], append=True) as w:
            w.write(x[0], step=1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with CompactWriter(path, x.shape[1], append=True, stepInterval=400) as w:  # the interval says no gap
            w.write(x[0], step=1400)


def test_version2_file_still_reads():
    """bala (2,661 atoms, solvated, water groups) written by format version 2, 6 frames of the MDAnalysisTests
    NetCDF trajectory."""
    import MDAnalysis as mda
    from MDAnalysisTests import datafiles

    u = mda.Universe(datafiles.PRMncdf, datafiles.NCDF)
    ref = np.array([u.atoms.positions.copy() for _ in u.trajectory[:6]]) / 10.0
    with CompactTrajectory(os.path.join(DATA, "compactmd_v2_bala.cmdx")) as traj:
        assert traj.header["version"] == 2 and len(traj) == 6 and [c.nFrames for c in traj.chunks] == [4, 2]
        assert traj.topology.nAtoms == 2661 and len(traj._layout.groups) == 1
        assert np.abs(traj.read().astype(np.float64) - ref).max() <= traj.maxError + 1e-6
        np.testing.assert_array_equal(traj.steps, 10 * np.arange(6))


def test_blob_version3_water_geometry_file_still_reads():
    """Chunks coded with residual blob version 3 (W class in atom order, one value stream) still decode: 30
    cobrotoxin residues and 250 TIP4P waters (rigid-geometry water transform) of the MDAnalysisTests GROMACS
    trajectory, 3 frames in chunks of 2 and 1, with the compiled kernels and with the numpy path."""
    import MDAnalysis as mda
    from MDAnalysisTests import datafiles

    from openmmflash.compactmd import compactfile as cf
    from openmmflash.compactmd import kernels

    u = mda.Universe(datafiles.TPR, datafiles.TRR)
    ag = u.residues[:30].atoms + u.select_atoms("resname SOL").residues[:250].atoms
    ref = np.array([ag.positions.copy() for _ in u.trajectory[:3]]) / 10.0
    with CompactTrajectory(os.path.join(DATA, "compactmd_blob3_cobrotoxin.cmdx")) as traj:
        blob = cf.unpack_payload(cf.read_payload(traj._f, traj.chunks[0], 0), 2)[3]
        assert blob[0] == 3 and blob[5:7] == bytes([4, 1])  # version 3, one 4-site group coded by geometry
        assert [(s, len(f)) for s, f in traj._layout.groups] == [(4, 250)]
        got = traj.read()
        assert np.abs(got.astype(np.float64) - ref).max() <= traj.maxError + 1e-6
        if kernels.HAVE_NUMBA:
            kernels.HAVE_NUMBA = False
            try:
                traj._cache = (None, None)
                assert np.array_equal(traj.read(), got)
            finally:
                kernels.HAVE_NUMBA = True
