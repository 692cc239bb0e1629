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
    Give either ``blocks`` (per run: consecutive blocks of nearly equal length, every frame used) or ``blockLength``
    (frames per block; frames left over at the end are dropped).
    """
    if (blocks is None) == (blockLength is None):
        raise ValueError("give exactly one of blocks (per run) or blockLength (frames per block)")
    if (blocks if blocks is not None else blockLength) < 1:
        raise ValueError(f"blocks and blockLength must be >= 1, got {blocks if blocks is not None else blockLength}")
    v = np.asarray(x, dtype=float)
    if runs < 1 or v.size % runs:
        raise ValueError(f"{v.size} samples do not split into {runs} runs of equal length")
    v = v.reshape(-1, runs)
    if blockLength is not None:
        parts = [v[i:i + blockLength] for i in range(0, len(v) - blockLength + 1, blockLength)]
    else:
        parts = [b for b in np.array_split(v, blocks) if len(b)]
    means = np.concatenate([b.mean(axis=0) for b in parts]) if parts else np.empty(0)
    if means.size < 2:
        return None
    return float(np.std(means, ddof=1) / np.sqrt(means.size))
