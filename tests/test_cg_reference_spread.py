"""examples/benchmarks/cg_reference_spread.py on two short chignolin reference runs (Reference platform)."""

import json
import os
import sys

import numpy as np
import pytest
import torch  # noqa: F401  (before openmm)

from openmmflash.cg.refdata import HAIRPIN_PHI_PSI, ReferenceRun

BENCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "examples", "benchmarks")
sys.path.insert(0, BENCH)
import cg_reference_spread as spread  # noqa: E402

RECIPE = dict(sequence="GYDPETGTWG", phiPsi=HAIRPIN_PHI_PSI, mapping="5bead", timestep=4.0, hydrogenMass=3.0,
              reportInterval=10, shardFrames=20, equilibrationSteps=0, platform="Reference")


def reference(path, seed, **changes):
    run = ReferenceRun(str(path), **(RECIPE | {"seed": seed} | changes))
    run.run(200, progress=False)
    return str(path)


def test_spread_of_two_seeds(tmp_path):
    dirs = [reference(tmp_path / f"s{seed}", seed) for seed in (1, 2)]
    report = spread.main(dirs + ["--outdir", str(tmp_path / "out"), "--tag", "_t"])
    with open(tmp_path / "out" / "cg_chignolin_reference_spread_t.json") as f:
        stored = json.load(f)
    assert stored["runs"] == json.loads(json.dumps(report["runs"]))
    assert [r["seed"] for r in stored["runs"]] == [1, 2] and all(r["frames"] == 20 for r in stored["runs"])
    # one preparation for both seeds: the same native structure, a fraction of an angstrom from the model's
    deviations = [r["nativeDeviation_A"] for r in stored["runs"]]
    assert deviations[0] == deviations[1] and 0 <= deviations[0] < 1.0
    for key in ("caRmsd", "Q", "Rg"):
        means = [r[key]["mean"] for r in stored["runs"]]
        s = stored["spread"][key]
        assert s["lowest"] == min(means) and s["highest"] == max(means)
        assert s["stdOfMeans"] == pytest.approx(np.std(means, ddof=1))
        assert all(r[key]["sem"] is not None and r[key]["sem"] >= 0 for r in stored["runs"])
    assert 0 < stored["runs"][0]["Q"]["mean"] <= 1 and 3.0 < stored["runs"][0]["Rg"]["mean"] < 10.0
    assert stored["trainingReference"]["Q"]["mean"] == pytest.approx(0.2835, abs=1e-4)
    assert stored["provenance"]["command"].startswith("python")


def test_runs_of_other_recipes_or_one_run_refused(tmp_path):
    same = reference(tmp_path / "s1", 1)
    warmer = reference(tmp_path / "warm", 2, temperature=350.0)
    with pytest.raises(ValueError, match="differ in more than their seed"):
        spread.main([same, warmer, "--outdir", str(tmp_path / "out")])
    with pytest.raises(SystemExit):
        spread.main([same, "--outdir", str(tmp_path / "out")])
    assert not os.path.exists(tmp_path / "out")
