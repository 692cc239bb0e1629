"""What the strides of a FlashMD integrator record for diagnostics: energy rescale factors, rejected strides by kind
(the latest reason too, logged) and per-phase wall times. One :class:`StrideLog` belongs to each integrator; both
stride paths (host and device-resident) write to it, and the integrator's ``getRescaleFactors``,
``getRejectionCounts``, ``lastRejection`` and ``timings`` read it."""

import logging
import time
from typing import Dict, Optional

logger = logging.getLogger("openmmflash.flashmd")
MAX_RESCALE_FACTORS = 10000  # getRescaleFactors keeps the latest 5,000 to 10,000


class StrideLog:
    """Rescale factors of accepted strides, rejections by kind, the latest rejection reason and, when profiling,
    the wall time per stride phase (s)."""

    def __init__(self):
        self.alphas = []
        self.rejections: Dict[str, int] = {}
        self.lastRejection: Optional[str] = None
        self.timings: Optional[Dict[str, float]] = None
        self._last = 0.0

    @property
    def profiling(self) -> bool:
        return self.timings is not None

    def enableProfiling(self, on: bool = True) -> None:
        self.timings = {} if on else None

    def start(self) -> None:
        """Start timing a stride (only when profiling is on)."""
        if self.timings is not None:
            self._last = time.perf_counter()

    def tick(self, phase: str) -> None:
        """Add the wall time since the previous tick to ``timings[phase]`` (only when profiling is on)."""
        if self.timings is None:
            return
        now = time.perf_counter()
        self.timings[phase] = self.timings.get(phase, 0.0) + now - self._last
        self._last = now

    def noteRescale(self, alpha: float) -> None:
        """Record the rescale factor of an accepted stride."""
        self.alphas.append(alpha)
        if len(self.alphas) > MAX_RESCALE_FACTORS:
            del self.alphas[:MAX_RESCALE_FACTORS // 2]

    def noteRejection(self, reason: str, kind: str, step: int, numFallbacks: int, substeps: int) -> None:
        """Record a rejected stride (its kind, the reason as lastRejection) and log the first ten and every 100th;
        ``step``: the step it was rejected at, ``numFallbacks``: fallbacks so far, this one included, ``substeps``:
        the velocity-Verlet substeps that advance it instead."""
        self.rejections[kind] = self.rejections.get(kind, 0) + 1
        self.lastRejection = reason
        if numFallbacks <= 10 or numFallbacks % 100 == 0:
            logger.warning("FlashMD step %d rejected (%s); advanced with %d velocity-Verlet substeps instead "
                           "(%d fallbacks so far)", step, reason, substeps, numFallbacks)
