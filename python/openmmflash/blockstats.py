"""Standard errors of time averages from block means (for the benchmarks' "mean +- standard error" figures).

Successive MD frames are correlated, so the naive sigma / sqrt(frames) is too small. Cut each run into contiguous
blocks longer than the correlation time; the block means are then nearly independent, and

    SEM = std(block means, ddof=1) / sqrt(number of blocks).
"""

from typing import Optional

import numpy as np


def blockStandardError(x, blocks: Optional[int] = None, blockLength: Optional[int] = None,
                       runs: int = 1) -> Optional[float]:
    """Standard error of the mean of ``x`` from its block means, or None with fewer than 2 blocks.

    x: [frames * runs] samples, frame-major (the ``runs`` independent runs, e.g. replicas of one System, inner).
    Give either ``blocks`` (per run) or ``blockLength`` (frames per block); frames left over at the end are dropped.
    """
    if (blocks is None) == (blockLength is None):
        raise ValueError("give exactly one of blocks (per run) or blockLength (frames per block)")
    v = np.asarray(x, dtype=float)
    if runs < 1 or v.size % runs:
        raise ValueError(f"{v.size} samples do not split into {runs} runs of equal length")
    v = v.reshape(-1, runs)
    length = blockLength if blockLength is not None else len(v) // blocks
    count = len(v) // length if length >= 1 else 0
    if count * runs < 2:
        return None
    means = v[:count * length].reshape(count, length, runs).mean(axis=1).ravel()
    return float(np.std(means, ddof=1) / np.sqrt(means.size))
