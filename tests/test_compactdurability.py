"""CompactMD loses at most one frame to kill -9, a Python exception or a script that never calls close().

Real OpenMM runs (a TIP3P water box, CPU platform, one thread) write with ``CompactReporter`` in a subprocess;
a second reporter appends the exact float32 positions of every reported frame to a raw file and prints the step,
so the parent knows which frames were reported before it kills the process. A fold cut short at every byte is
checked in-process on the exact byte images a crash can leave.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest

from openmmflash.compactmd import CompactTrajectory, CompactWriter, IncompleteFileWarning
from openmmflash.compactmd import compactfile as cf

_RUN = textwrap.dedent('''
    import os, sys
    import torch  # noqa: F401  (before openmm)
    import numpy as np
    from openmm import LangevinMiddleIntegrator, Platform, Vec3, app, unit
    from openmmflash.compactmd import CompactReporter

    out, mode, nReports, chunkFrames = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    ff = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
    modeller = app.Modeller(app.Topology(), [])
    modeller.addSolvent(ff, boxSize=Vec3(1.2, 1.2, 1.2) * unit.nanometer)
    system = ff.createSystem(modeller.topology, nonbondedMethod=app.CutoffPeriodic,
                             nonbondedCutoff=0.5 * unit.nanometer, constraints=app.HBonds)
    integrator = LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.002 * unit.picoseconds)
    integrator.setRandomNumberSeed(7)
    sim = app.Simulation(modeller.topology, system, integrator, Platform.getPlatformByName("CPU"),
                         {"Threads": "1"})
    sim.context.setPositions(modeller.positions)
    raw = open(out + ".raw", "wb")

    class Witness:
        """After CompactReporter: the exact positions go to a raw file, then the step to stdout."""
        def describeNextReport(self, simulation):
            return {"steps": 2 - simulation.currentStep % 2, "periodic": None, "include": ["positions"]}

        def report(self, simulation, state):
            raw.write(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer).astype(np.float64).tobytes())
            raw.flush()
            print(simulation.currentStep, flush=True)
            if mode == "raise" and simulation.currentStep == 2 * nReports:
                raise RuntimeError("simulated failure inside the run")

    sim.reporters += [CompactReporter(out, 2, chunkFrames=chunkFrames), Witness()]
    sim.step(2 * nReports if mode != "kill" else 10**9)
    # mode "noclose": the script ends here without closing the reporter
''')


def _start(tmp_path, mode, nReports, chunkFrames=5):
    script = tmp_path / "run.py"
    script.write_text(_RUN)
    out = str(tmp_path / "t.cmdx")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, str(script), out, mode, str(nReports), str(chunkFrames)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    return proc, out


def _check(out, reported, allowExtra=1):
    """Every reported frame is in the file within the bound; at most ``allowExtra`` frame more (the one being
    written when the process died); returns (frames in file, warnings)."""
    nAtoms = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        traj = CompactTrajectory(out)
    with traj:
        nAtoms = traj.nAtoms
        raw = np.fromfile(out + ".raw", np.float64)
        ref = raw[:raw.size // (nAtoms * 3) * nAtoms * 3].reshape(-1, nAtoms, 3)
        n = len(traj)
        assert reported <= n <= reported + allowExtra, (reported, n)
        np.testing.assert_array_equal(traj.steps, 2 * np.arange(1, n + 1))
        m = min(n, len(ref))  # the raw witness is written after CompactReporter: it may lack the last frame
        assert m >= reported
        assert np.abs(traj.read(slice(0, m)).astype(np.float64) - ref[:m]).max() <= traj.maxError
    return n, [str(w.message) for w in caught]


@pytest.mark.parametrize("seed", range(3, 3 + int(os.environ.get("OPENMMFLASH_KILL_RUNS", "2"))))
def test_kill9_at_random_step_loses_at_most_one_frame(tmp_path, seed):
    rng = np.random.default_rng(seed)
    target = int(rng.integers(4, 17))  # spans several folds of 5-frame chunks
    proc, out = _start(tmp_path, "kill", 0)
    reported = 0
    try:
        for line in proc.stdout:
            reported += 1
            if reported == target:
                time.sleep(float(rng.uniform(0, 0.05)))  # land anywhere in the next frame's report or fold
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        rest, stderr = proc.communicate()
    assert reported == target, stderr[-2000:]
    reported += len(rest.split())  # lines printed before the kill but not yet read here
    n, messages = _check(out, reported)
    assert any("not closed cleanly" in m or "no index" in m for m in messages)
    print(f"kill -9 after {reported} reported frames: {n} frames in the file")


def test_exception_mid_run_keeps_every_frame(tmp_path):
    proc, out = _start(tmp_path, "raise", 8)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode != 0 and "simulated failure" in stderr
    n, messages = _check(out, len(stdout.split()), allowExtra=0)
    assert n == 8 and not messages  # closed at exit: index written, no warning


def test_script_without_close_keeps_every_frame(tmp_path):
    proc, out = _start(tmp_path, "noclose", 12)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-2000:]
    n, messages = _check(out, 12, allowExtra=0)
    assert not messages
    with CompactTrajectory(out) as traj:
        assert not traj.recovered and [c.nFrames for c in traj.chunks] == [5, 5, 2]


def _frames(nFrames, nAtoms=60, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 2, (nAtoms, 3)) + np.cumsum(rng.normal(0, 0.01, (nFrames, nAtoms, 3)), axis=0)


def test_fold_cut_at_every_byte_loses_nothing(tmp_path, monkeypatch):
    """Record the file image before the fold and every write of the fold, then rebuild every state a crash can
    leave (each write cut at each byte) and read it."""
    x = _frames(7)
    path = str(tmp_path / "f.cmdx")
    w = CompactWriter(path, x.shape[1], chunkFrames=4)
    for k in range(3):  # three tail chunks of one frame each
        w.write(x[k], step=k)
    before = open(path, "rb").read()
    writes = []
    real = cf.fold_chunk

    def spy(f, tailStart, chunk):
        writes.append((tailStart, chunk))
        real(f, tailStart, chunk)

    monkeypatch.setattr(cf, "fold_chunk", spy)
    w.write(x[3], step=3)  # the fourth frame fills the chunk: fold
    after = open(path, "rb").read()
    w.write(x[4:], step=np.arange(4, 7))
    w.close()
    assert len(writes) == 1
    tailStart, chunk = writes[0]
    appended = cf.JOURNAL_MAGIC + chunk + cf.pack_journal(tailStart, len(before) + 4)
    states = [before + appended[:m] for m in range(len(appended) + 1)]
    full = before + appended
    states += [full[:tailStart] + chunk[:m] + full[tailStart + m:] for m in range(len(chunk) + 1)]
    states.append(after)
    with CompactTrajectory(path) as traj:
        expected = traj.read()
    for k, image in enumerate(states):
        p = str(tmp_path / "s.cmdx")
        open(p, "wb").write(image)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", IncompleteFileWarning)
            with CompactTrajectory(p) as traj:
                assert len(traj) in (3, 4), k  # the three tail frames, or the folded chunk of four
                np.testing.assert_array_equal(traj.read(), expected[:len(traj)])
        # appending to that state finishes the fold and continues the file
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with CompactWriter(p, x.shape[1], chunkFrames=4, append=True) as w2:
                w2.write(x[len(traj):], step=np.arange(len(traj), 7))
        with CompactTrajectory(p) as traj:
            np.testing.assert_array_equal(traj.read(), expected)
            assert [c.nFrames for c in traj.chunks] == [4, 3], k  # tail frames were taken back and folded


def test_flush_interval_and_explicit_flush(tmp_path):
    x = _frames(6)
    path = str(tmp_path / "i.cmdx")
    w = CompactWriter(path, x.shape[1], chunkFrames=100, flushInterval=3600.0)
    w.write(x[:3])
    with pytest.warns(IncompleteFileWarning):
        assert len(CompactTrajectory(path)) == 0  # held in memory: the interval has not passed
    w.flush()
    with pytest.warns(IncompleteFileWarning):
        assert len(CompactTrajectory(path)) == 3
    w.flushInterval = 0.0
    w.write(x[3])
    with pytest.warns(IncompleteFileWarning):
        assert len(CompactTrajectory(path)) == 4
    w.close()
    with CompactTrajectory(path) as traj:
        assert [c.nFrames for c in traj.chunks] == [4] and np.abs(traj.read() - x[:4]).max() <= 0.0005
