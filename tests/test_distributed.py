"""Several processes on CPU (gloo): the ensemble helper's sharing and gathers, data-parallel training equal to one
process for the CG force matching and the FlashMD trainer, and `openmmflash demo` under torchrun."""

import contextlib
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from openmmflash.distributed import Ensemble, launchInfo, shareRange

SMALL = dict(hiddenChannels=16, numFilters=16, numRbf=12, numInteractions=2, cutoff=8.0, readoutHidden=[8],
             backend="reference")
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS",
                    "SLURM_LOCALID", "SLURM_STEP_NUM_TASKS", "SLURM_STEP_TASKS_PER_NODE", "MASTER_ADDR",
                    "MASTER_PORT")


@pytest.fixture
def clean_env(monkeypatch):
    for name in LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize("n,world", [(0, 3), (1, 3), (7, 3), (8, 4), (10, 8), (64, 7)])
def test_share_is_balanced_complete_and_ordered(n, world):
    parts = [shareRange(n, r, world) for r in range(world)]
    assert [i for p in parts for i in p] == list(range(n))  # every item once, in rank order
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    with pytest.raises(ValueError, match="cannot share"):
        shareRange(-1, 0, 2)


def test_launch_variables(clean_env):
    assert launchInfo() == {"rank": 0, "worldSize": 1, "localRank": 0, "localWorldSize": 1, "launcher": None}
    clean_env.setenv("SLURM_PROCID", "0")  # a Slurm batch or salloc shell: no step, a single process
    clean_env.setenv("SLURM_NTASKS", "8")
    assert launchInfo()["worldSize"] == 1
    clean_env.setenv("SLURM_STEP_NUM_TASKS", "8")  # inside `srun -n 8`
    clean_env.setenv("SLURM_PROCID", "5")
    clean_env.setenv("SLURM_LOCALID", "1")
    clean_env.setenv("SLURM_STEP_TASKS_PER_NODE", "4(x2)")
    assert launchInfo() == {"rank": 5, "worldSize": 8, "localRank": 1, "localWorldSize": 4, "launcher": "slurm"}
    for name, value in (("RANK", "3"), ("WORLD_SIZE", "4"), ("LOCAL_RANK", "1"), ("LOCAL_WORLD_SIZE", "2")):
        clean_env.setenv(name, value)  # torchrun inside srun wins
    assert launchInfo() == {"rank": 3, "worldSize": 4, "localRank": 1, "localWorldSize": 2, "launcher": "torchrun"}
    clean_env.setenv("RANK", "4")
    with pytest.raises(ValueError, match="inconsistent launcher variables"):
        launchInfo()
    clean_env.setenv("RANK", "x")
    with pytest.raises(ValueError, match="RANK='x' is not an integer"):
        launchInfo()


def test_single_process_ensemble(clean_env):
    with Ensemble(device="cpu") as ens:
        assert not ens.distributed and ens.isMain and ens.share(5) == range(5) and ens.seed(7) == 7
        assert ens.partPath("out/traj.dcd") == "out/traj.dcd"
        np.testing.assert_array_equal(ens.gatherArrays(np.arange(6).reshape(3, 2)), np.arange(6).reshape(3, 2))
        assert ens.gather({"a": 1}) == [{"a": 1}] and ens.broadcast(3) == 3 and ens.allReduce(2.5) == 2.5
        assert ens.platformProperties("CPU") == {}
        assert ens.platformProperties("CUDA") == {"DeviceIndex": "0"}
    with pytest.raises(ValueError, match="device must be"):
        Ensemble(device="tpu")


# -- two gloo processes -------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cg_training(refdir):
    from openmmflash.cg.refdata import loadReferenceData
    from openmmflash.cg.training import ForceMatching
    from openmmflash.schnet.config import FlashSchNetConfig

    trainer = ForceMatching(loadReferenceData(refdir), config=FlashSchNetConfig(**SMALL), numBlocks=4,
                            validationFraction=0.25, seed=5)
    seen = []
    trainer.batchLoss = _counting(trainer.batchLoss, seen, lambda index: len(index))
    # 36 training frames: 5 batches of 7 (parts of 4 and 3) and one of 1 (rank 1 a stand-in of weight 0); 2 epochs
    metrics = trainer.train(epochs=2, batchSize=7, learningRate=5e-3, patience=5, progress=False)
    return {"weights": {k: v.detach().clone() for k, v in trainer.model.state_dict().items()},
            "trainLoss": [h["trainLoss"] for h in trainer.history[1:]],
            "validation": metrics["validation"]["forceRMSE"], "framesSeen": sum(seen)}


def _flashmd_training(pairs):
    from openmmflash.integrators.training.data import flexibleWaterBox
    from openmmflash.integrators.training.trainer import Trainer

    torch.manual_seed(1234)  # the network's initialization draws from the global stream
    _, system, _ = flexibleWaterBox(1.2, 0.5)
    # batch of 3 over 2 processes (parts of 2 and 1); energy term (OpenMM, per part) on from the 2nd step
    trainer = Trainer(pairs, channels=8, numLayers=1, numRBF=8, cutoff=0.4, lr=3e-3, batchSize=3, energyWeight=0.1,
                      system=system, energyPlatform="CPU", bondWeight=0.05, iterations=5, seed=1, device="cpu")
    seen = []
    trainer.model.normalized = _counting(trainer.model.normalized, seen, lambda types, *rest: len(types))
    losses = [trainer.trainStep() for _ in range(5)]
    return {"weights": {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}, "losses": losses,
            "particlesSeen": sum(seen)}


def _counting(function, seen, size):
    """``function`` that also appends ``size(*args)`` to ``seen`` (how much of each batch this process took)."""
    def wrapped(*args, **kwargs):
        seen.append(size(*args))
        return function(*args, **kwargs)

    return wrapped


def _worker(rank, world, port, refdir, pairs, out):
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    with Ensemble(device="cpu") as ens:
        mine = ens.share(5)
        rows = np.stack([np.full(3, i, dtype=np.float64) for i in mine])  # 3 rows on rank 0, 2 on rank 1
        gathered = ens.gatherArrays(rows)
        results = {"gathered": gathered, "sum": ens.allReduce(float(rank + 1)),
                   "max": ens.allReduce(np.array([rank, -rank]), op="max"),
                   "broadcast": ens.broadcast("from rank 0" if ens.isMain else None),
                   "objects": ens.gather({"rank": rank, "n": len(mine)}), "part": ens.partPath("a/traj.dcd"),
                   "cg": _cg_training(refdir), "flashmd": _flashmd_training(pairs)}
        torch.save(results, os.path.join(out, f"rank{rank}.pt"))


@pytest.fixture(scope="module")
def refdir(tmp_path_factory):
    from openmmflash.cg.refdata import ReferenceRun

    out = str(tmp_path_factory.mktemp("cgref") / "gay")
    ReferenceRun(out, sequence="GAY", reportInterval=10, shardFrames=20, equilibrationSteps=50, platform="Reference",
                 timestep=2.0, seed=3).run(480, progress=False)
    return out


@pytest.fixture(scope="module")
def two_ranks(refdir, water_pairs, tmp_path_factory):
    import torch.multiprocessing as mp

    out = str(tmp_path_factory.mktemp("ranks"))
    mp.spawn(_worker, args=(2, _free_port(), refdir, water_pairs[0], out), nprocs=2, join=True)
    return [torch.load(os.path.join(out, f"rank{r}.pt"), weights_only=False) for r in range(2)]


def test_gathers_over_two_processes(two_ranks):
    r0, r1 = two_ranks
    np.testing.assert_array_equal(r0["gathered"], np.repeat(np.arange(5.0), 3).reshape(5, 3))
    assert r1["gathered"] is None and r1["objects"] is None
    assert r0["objects"] == [{"rank": 0, "n": 3}, {"rank": 1, "n": 2}]
    assert r0["sum"] == r1["sum"] == 3.0
    np.testing.assert_array_equal(r1["max"], [1.0, 0.0])
    assert r0["broadcast"] == r1["broadcast"] == "from rank 0"
    assert (r0["part"], r1["part"]) == ("a/traj.rank0.dcd", "a/traj.rank1.dcd")


@contextlib.contextmanager
def _one_thread():
    """One torch thread, as in the workers: the same reduction order inside each part of a batch."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _assert_same_weights(a, b, rtol):
    assert a.keys() == b.keys()
    for key in a:
        scale = float(b[key].abs().max()) + 1e-12
        err = float((a[key] - b[key]).abs().max())
        assert err <= rtol * scale, (key, err, scale)


def test_cg_force_matching_on_two_processes_equals_one(two_ranks, refdir):
    with _one_thread():
        single = _cg_training(refdir)
    r0, r1 = (r["cg"] for r in two_ranks)
    _assert_same_weights(r0["weights"], r1["weights"], 0.0)  # DDP keeps the ranks identical
    # float32 sums of two parts differ from the whole batch's in the last bits, and ten Adam steps carry that
    # into the weights at ~1e-5 of their scale (seen up to 2.4e-5); dropping 3 of the 7 frames of each batch
    # moves them by 0.8 of it
    _assert_same_weights(r0["weights"], single["weights"], 2e-4)
    np.testing.assert_allclose(r0["trainLoss"], single["trainLoss"], rtol=1e-5)
    np.testing.assert_allclose(r0["validation"], single["validation"], rtol=1e-5)
    assert single["trainLoss"][1] < single["trainLoss"][0]  # it trained
    # each process trained on its part of every batch: 4 + 3 frames of a 7-frame batch, 1 + 1 (stand-in) of the last
    assert (r0["framesSeen"], r1["framesSeen"], single["framesSeen"]) == (2 * (5 * 4 + 1), 2 * (5 * 3 + 1), 72)


def test_flashmd_trainer_on_two_processes_equals_one(two_ranks, water_pairs):
    with _one_thread():
        single = _flashmd_training(water_pairs[0])
    r0, r1 = (r["flashmd"] for r in two_ranks)
    _assert_same_weights(r0["weights"], r1["weights"], 0.0)
    _assert_same_weights(r0["weights"], single["weights"], 2e-5)
    np.testing.assert_allclose(r0["losses"], single["losses"], rtol=1e-5)
    assert r0["losses"] == r1["losses"]
    assert r0["particlesSeen"] * 3 == single["particlesSeen"] * 2 and r1["particlesSeen"] * 3 == single["particlesSeen"]


def test_demo_under_torchrun(tmp_path):
    out = tmp_path / "demo"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for name in LAUNCH_VARIABLES:
        env.pop(name, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
           "openmmflash", "demo", "--quick", "--steps", "40", "--platform", "CPU", "-o", str(out)]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["worldSize"] == 2 and summary["replicas"] == 2 and summary["launcher"] == "torchrun"
    assert [r["replicas"] for r in summary["ranks"]] == [[0], [1]]
    assert len(summary["caRmsdFinal_A"]) == 2 and all(np.isfinite(summary["caRmsdFinal_A"]))
    for k in range(2):
        assert (out / f"trajectory.rank{k}.cmdx").stat().st_size > 0 and (out / f"topology.rank{k}.pdb").exists()
    assert (out / "demo.png").exists() and not (out / "trajectory.cmdx").exists()
    assert run.stdout.count("openmmflash demo: chignolin") == 1  # rank 0 alone prints the summary


def _torchrun(args, nproc=2, timeout=600):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for name in LAUNCH_VARIABLES:
        env.pop(name, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc)] + args
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_example_ensemble_run_under_torchrun(tmp_path):
    example = os.path.join(os.path.dirname(__file__), "..", "examples", "ensemble_run.py")
    run = _torchrun([example, "--replicas", "3", "--steps", "40", "--report-interval", "20", "--platform", "CPU",
                     "--output", str(tmp_path / "rg")])
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    with np.load(tmp_path / "rg.npz") as z:
        assert z["rg"].shape == (2, 3) and np.all((z["rg"] > 2) & (z["rg"] < 20)) and int(z["worldSize"]) == 2
    assert "rank 0/2: replicas 0-1" in run.stdout and "rank 1/2: replicas 2-2" in run.stdout
    assert (tmp_path / "rg.png").exists()


@pytest.mark.slow
def test_cg_data_under_torchrun_resumes_each_rank_part_and_cg_train_uses_them(tmp_path):
    from openmmflash.cg.refdata import loadReferenceData
    from openmmflash.workflows.rankedjobs import referenceParts

    out = tmp_path / "ref"
    args = ["-m", "openmmflash", "cg-data", "--sequence", "GAY", "-o", str(out), "--report-interval", "10",
            "--equilibration", "10", "--shard-frames", "2", "--platform", "Reference", "--timestep", "2"]
    run = _torchrun(args + ["--steps", "410"])
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    parts = referenceParts([str(out)])
    assert parts == [str(out / "run.rank0"), str(out / "run.rank1")]
    assert [loadReferenceData(p)["positions"].shape[0] for p in parts] == [21, 20]  # 41 frames shared out
    seeds = [loadReferenceData(p)["metadata"]["settings"]["seed"] for p in parts]
    assert seeds[0] == 1 and seeds[1] != 1
    run = _torchrun(args + ["--steps", "810"])  # resumed: each rank continues its own run
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    data = [loadReferenceData(p) for p in parts]
    assert [d["positions"].shape[0] for d in data] == [41, 40]
    assert [d["metadata"]["stepsDone"] for d in data] == [410, 400]
    model = tmp_path / "m.pt"  # cg-train under torchrun on both ranks' runs; rank 0 writes the model
    run = _torchrun(["-m", "openmmflash", "cg-train", str(out), "-o", str(model), "--hidden", "8", "--filters", "8",
                     "--rbf", "8", "--readout", "8", "--epochs", "1", "--batch-size", "5", "--blocks", "4"])
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    from openmmflash.schnet.model import loadModel

    meta = loadModel(str(model)).metadata
    assert meta["validation"]["trainFrames"] + meta["validation"]["validationFrames"] == 81
    assert len(meta["provenance"]["referenceRuns"]) == 2 and run.stdout.count("wrote ") == 1


def test_parts_of_another_world_size_are_refused(tmp_path, clean_env):
    from openmmflash.workflows.rankedjobs import checkParts

    ens = Ensemble(device="cpu")
    path = str(tmp_path / "out" / "parts.json")
    checkParts(ens, path, "cg-data")  # a new job records its world size
    assert json.loads(open(path).read()) == {"job": "cg-data", "worldSize": 1, "launcher": None}
    checkParts(ens, path, "cg-data")  # the same world size resumes
    with open(path, "w") as f:
        json.dump({"job": "cg-data", "worldSize": 2}, f)
    with pytest.raises(ValueError, match="job of 2 processes; resume it with .*--nproc-per-node 2` or `srun -n 2`"):
        checkParts(ens, path, "cg-data")
    with pytest.raises(ValueError, match="cg-data job of 2"):
        checkParts(ens, path, "flashmd-data")
    clean_env.setenv("SLURM_STEP_NUM_TASKS", "2")  # an srun step of 2 that has not joined its group
    clean_env.setenv("SLURM_PROCID", "1")
    with pytest.raises(RuntimeError, match="has not joined the process group"):
        Ensemble(device="cpu").gather(1)


@pytest.mark.slow
def test_flashmd_data_under_torchrun_equals_one_process(tmp_path):
    from openmmflash.integrators.training.data import loadDataset

    args = ["-m", "openmmflash", "flashmd-data", "--water-box", "1.2", "--water-cutoff", "0.5", "--stride", "2",
            "--temperatures", "300", "--starts", "3", "--pairs", "2", "--spacing", "0.004",
            "--equilibration", "0.004", "--platform", "Reference", "--quiet"]
    run = _torchrun(args + ["-o", str(tmp_path / "two.npz")])  # 3 starts over 2 ranks: 2 and 1
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    single = subprocess.run([sys.executable] + args + ["-o", str(tmp_path / "one.npz")], capture_output=True,
                            text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert single.returncode == 0, single.stderr[-3000:]
    a, b = loadDataset(str(tmp_path / "one.npz")), loadDataset(str(tmp_path / "two.npz"))
    assert b["meta"]["worldSize"] == 2 and b["meta"]["rankShares"] == [[0, 1], [2]]
    for key in ("q0", "p0", "dq", "p1", "box", "temperature"):  # the Reference platform is deterministic
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert [loadDataset(str(tmp_path / f"two.rank{k}.npz"))["q0"].shape[0] for k in range(2)] == [4, 2]


@pytest.mark.slow
def test_cg_validate_under_torchrun_merges_the_ranks_replicas(refdir, tmp_path):
    from openmmflash.cg.refdata import loadReferenceData
    from openmmflash.cg.training import ForceMatching
    from openmmflash.workflows.cgvalidation import _loadCheckpoint
    from openmmflash.schnet.config import FlashSchNetConfig

    data = loadReferenceData(refdir)
    trainer = ForceMatching(data, config=FlashSchNetConfig(**SMALL), numBlocks=4, validationFraction=0.25, seed=7)
    trainer.train(epochs=1, batchSize=5, maxSteps=2, progress=False)
    model = str(tmp_path / "m.pt")
    trainer.save(model, structure=data["cgPdb"])
    out, work = tmp_path / "val", tmp_path / "work"
    run = _torchrun(["-m", "openmmflash", "cg-validate", model, refdir, "-o", str(out), "--work", str(work),
                     "--time", "0.0002", "--replicas", "3", "--report-interval", "20", "--platform", "CPU"])
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads((out / "validation.json").read_text())
    assert report["worldSize"] == 2 and report["replicas"] == 3 and report["frames"] == 5
    assert [len(c["ranks"]) for c in report["chunks"]] == [2]
    parts = [_loadCheckpoint(str(work / f"rank{k}")) for k in range(2)]
    assert [p["caRmsd"].shape for p in parts] == [(5, 2), (5, 1)]
    final = np.concatenate([p["caRmsd"][-1] for p in parts])
    assert report["cgFinalMean"]["caRmsd"] == pytest.approx(float(final.mean()), rel=1e-5)
    assert (out / "validation.png").stat().st_size > 0


@pytest.mark.slow
def test_flashmd_cg_replica_data_under_torchrun_keeps_each_replicas_temperature(tmp_path):
    from openmmflash.integrators.training.data import loadDataset

    run = _torchrun(["-m", "openmmflash", "flashmd-data", "--cg-model", "chignolin", "--replicas", "3", "--stride",
                     "20", "--pairs", "2", "--spacing", "0.02", "--equilibration", "0.02", "--platform", "CPU",
                     "--temperatures", "280", "300", "--species", "bead", "--quiet", "-o", str(tmp_path / "c.npz")])
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    data = loadDataset(str(tmp_path / "c.npz"))
    assert data["q0"].shape == (6, 47, 3) and data["meta"]["rankShares"] == [[0, 1], [2]]
    # replicas 0, 1, 2 run at 280, 300, 280 K as in one System of 3: rank 1's replica 2 at 280 K
    assert sorted(data["temperature"].tolist()) == [280.0] * 4 + [300.0] * 2
    np.testing.assert_array_equal(loadDataset(str(tmp_path / "c.rank1.npz"))["temperature"], [280.0, 280.0])
    assert data["meta"]["rankSeeds"][0] != data["meta"]["rankSeeds"][1] and data["meta"]["speciesKind"] == "cgBead"
