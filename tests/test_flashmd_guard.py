"""The FlashMD guard as plain functions (integrators/guard.py): rescale conserves V + K exactly, each rejection
kind comes with its reason."""

import numpy as np
import pytest

from openmmflash.integrators.rescale.guard import REJECTION_KINDS, checkPrediction, energyRescale, rejectionKind


def state(n=7, seed=0):
    rng = np.random.default_rng(seed)
    masses = rng.uniform(1.0, 16.0, n)
    return masses, rng.standard_normal((n, 3)), rng.standard_normal((n, 3))


def kinetic(masses, v):
    return 0.5 * float((masses[:, None] * v * v).sum())


def test_rescale_restores_the_total_energy():
    masses, v, noise = state()
    v1 = 1.02 * v + 0.01 * noise
    V, V1 = 10.0, 10.0 + 0.1 * kinetic(masses, v)  # the step raised V: K must shrink
    reason, v2, alpha = energyRescale(v, v1, masses, V, V1, maxRescale=1.25)
    assert reason is None and alpha < 1
    assert V1 + kinetic(masses, v2) == pytest.approx(V + kinetic(masses, v), rel=1e-12)


@pytest.mark.parametrize("dV, kind", [(0.9, "rescaleLow"), (5.0, "energyAbove"), (-3.0, "rescaleHigh")])
def test_rescale_rejections(dV, kind):
    masses, v, _ = state(seed=1)
    K = kinetic(masses, v)
    reason, v2, _ = energyRescale(v, v.copy(), masses, 0.0, dV * K, maxRescale=1.25)
    assert reason is not None and rejectionKind(reason) == kind
    np.testing.assert_array_equal(v2, v)  # a rejected step leaves the velocities alone


def test_prediction_checks():
    _, q, v = state(seed=2)
    assert checkPrediction(q, q + 0.01, v, maxDisplacement=0.1) is None
    far = q.copy()
    far[3, 0] += 0.5
    assert rejectionKind(checkPrediction(q, far, v, 0.1)) == "displacement"
    bad = v.copy()
    bad[0, 0] = np.nan
    assert rejectionKind(checkPrediction(q, q, bad, 0.1)) == "nonFinite"
    assert rejectionKind(energyRescale(v, v, np.ones(len(v)), 0.0, float("inf"), 1.25)[0]) == "nonFinite"
    assert set(REJECTION_KINDS) >= {"nonFinite", "displacement", "energyAbove", "rescaleLow", "rescaleHigh"}
