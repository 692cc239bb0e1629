"""blockStandardError: the standard error of a time average from block means."""

import numpy as np
import pytest

from openmmflash.blockstats import blockStandardError


def _ar1(n, phi, rng):
    """AR(1) series x_t = phi x_{t-1} + e_t with unit stationary variance (correlation time ~ 1 / (1 - phi))."""
    e = rng.standard_normal(n) * np.sqrt(1 - phi ** 2)
    x = np.empty(n)
    x[0] = rng.standard_normal()
    for t in range(1, n):
        x[t] = phi * x[t - 1] + e[t]
    return x


def test_uncorrelated_samples_give_sigma_over_sqrt_n():
    rng = np.random.default_rng(0)
    x = 3.0 + 2.0 * rng.standard_normal(40000)
    assert blockStandardError(x, blocks=40) == pytest.approx(2.0 / np.sqrt(x.size), rel=0.3)
    assert blockStandardError(x, blockLength=1000) == pytest.approx(blockStandardError(x, blocks=40))


def test_correlated_series_match_the_spread_of_independent_means():
    """For an AR(1) series the naive sigma / sqrt(n) is too small by sqrt((1 + phi) / (1 - phi)); the block error
    matches the scatter of the means of independent runs."""
    rng = np.random.default_rng(1)
    phi, n = 0.95, 20000
    runs = [_ar1(n, phi, rng) for _ in range(40)]
    spread = np.std([r.mean() for r in runs], ddof=1)
    block = np.median([blockStandardError(r, blocks=20) for r in runs])
    assert block == pytest.approx(spread, rel=0.35)
    assert block > 3 * np.std(runs[0]) / np.sqrt(n)  # naive error: 6x too small at phi 0.95


def test_replicas_are_separate_runs():
    """Frame-major samples of several runs: blocks never mix runs, and a constant offset between runs (no time
    average can remove it) shows up in the error."""
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal(1000), rng.standard_normal(1000) + 10.0
    interleaved = np.stack([a, b], axis=1).ravel()  # [frames * 2], frame-major
    sem = blockStandardError(interleaved, blocks=5, runs=2)
    assert sem > 1.0  # the 10-unit offset between the runs dominates
    assert blockStandardError(np.stack([a, a], 1).ravel(), blocks=5, runs=2) == pytest.approx(
        blockStandardError(np.concatenate([a[:1000], a[:1000]]), blockLength=200), rel=1e-12)


def test_too_few_blocks_and_bad_arguments():
    assert blockStandardError(np.arange(5.0), blockLength=5) is None
    assert blockStandardError(np.arange(10.0), blocks=1) is None
    # more blocks than frames: one frame per block, none empty
    assert blockStandardError(np.arange(10.0), blocks=20) == pytest.approx(np.std(np.arange(10.0), ddof=1) / np.sqrt(10))
    with pytest.raises(ValueError, match=">= 1"):
        blockStandardError(np.arange(10.0), blockLength=0)
    with pytest.raises(ValueError, match="exactly one"):
        blockStandardError(np.arange(10.0))
    with pytest.raises(ValueError, match="exactly one"):
        blockStandardError(np.arange(10.0), blocks=2, blockLength=5)
    with pytest.raises(ValueError, match="3 runs"):
        blockStandardError(np.arange(10.0), blocks=2, runs=3)
