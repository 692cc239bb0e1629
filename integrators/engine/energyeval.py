"""Potential-energy evaluation for the FlashMD energy rescale: OpenMM's energy, or OpenMM's energy of some force
groups plus the rest computed in PyTorch on the network's device.

The rescale needs V(q') once per stride. OpenMM's ``getState(getEnergy=True)`` also runs a TorchForce's backward
pass (it always computes forces), so for a System whose expensive part is a PyTorch model the energy is cheaper as
``V = V_openmm(groups) + E_torch(q')``. :class:`TorchEnergy` holds ``E_torch``: a PyTorch function of positions on
the device, replayed as a CUDA graph on a CUDA device; the fixed-shape learned step (densestep.py) can run it inside
its own graph, right after the network, so the stride costs one graph replay and one device -> host copy.
"""

from typing import Callable, Optional

import numpy as np
import torch
from torch import Tensor
from openmm import unit

from openmmflash.integrators.engine.densestep import captureGraph


class TorchEnergy:
    """Energy of some of a System's forces as a PyTorch function of the positions.

    Parameters
    ----------
    fn : (positions [N, 3] float64 nm on ``device``) -> 0-d tensor, kJ/mol; fixed shapes and no host
        synchronisation if it is to be captured in a CUDA graph
    numParticles : N
    device : torch device of ``fn``
    useCUDAGraph : replay ``fn`` as a CUDA graph when called with numpy positions (default: on a CUDA device)

    Calling it with numpy positions [N, 3] nm returns the energy in kJ/mol (float); :meth:`tensor` evaluates it on
    a device tensor without synchronising (for use inside another graph).
    """

    def __init__(self, fn: Callable[[Tensor], Tensor], numParticles: int, device, useCUDAGraph: Optional[bool] = None):
        self.fn = fn
        self.device = torch.device(device)
        self.numParticles = int(numParticles)
        self._q = torch.zeros(self.numParticles, 3, dtype=torch.float64, device=self.device)
        self._graph = None
        if useCUDAGraph is None:
            useCUDAGraph = self.device.type == "cuda"
        self.capturable = bool(useCUDAGraph and self.device.type == "cuda")  # fn may run inside a CUDA graph
        if self.capturable:
            self._graph, self._out = captureGraph(lambda: self.tensor(self._q), warmup=3)

    @torch.no_grad()
    def tensor(self, positions: Tensor) -> Tensor:
        """E(positions [N, 3] nm, float64 on the device) as a 0-d float64 tensor, kJ/mol."""
        return self.fn(positions).to(torch.float64).reshape(())

    def __call__(self, q) -> float:
        q = np.asarray(q, dtype=np.float64)
        if q.shape != (self.numParticles, 3):
            raise ValueError(f"positions must have shape ({self.numParticles}, 3), got {q.shape}")
        self._q.copy_(torch.from_numpy(q))
        if self._graph is not None:
            self._graph.replay()
            return float(self._out)
        return float(self.tensor(self._q))


class EnergyEvaluator:
    """V(q) for the rescale: OpenMM's energy of ``groups`` (all forces when None) plus ``extra(q)``.

    groups : set of force-group numbers or None; extra : None, a callable (numpy q [N, 3] nm) -> kJ/mol, or a
    :class:`TorchEnergy` (then a fixed-shape learned step can compute it inside its own graph).
    """

    def __init__(self, groups=None, extra=None):
        if (groups is None) != (extra is None):
            raise ValueError("give both groups and extraEnergy, or neither")
        self.groups = None if groups is None else set(int(g) for g in groups)
        self.extra = extra

    @property
    def torchEnergy(self) -> Optional[TorchEnergy]:
        return self.extra if isinstance(self.extra, TorchEnergy) else None

    def openmmPart(self, context):
        """(OpenMM's energy of the groups, kJ/mol; positions [N, 3] nm as OpenMM holds them)."""
        if self.groups is not None and not self.groups:  # everything is in ``extra``: no OpenMM energy call
            st, V = context.getState(getPositions=True), 0.0
        else:
            st = context.getState(getEnergy=True, getPositions=True,
                                  **({} if self.groups is None else {"groups": self.groups}))
            V = st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        return V, np.asarray(st.getPositions(asNumpy=True).value_in_unit(unit.nanometer))

    def __call__(self, context, extraValue: Optional[float] = None):
        """(V kJ/mol, positions as OpenMM holds them) at the Context's positions; ``extraValue``: the extra part
        already computed for these positions (by the learned step's graph)."""
        V, q = self.openmmPart(context)
        if self.extra is not None:
            V += float(self.extra(q)) if extraValue is None else float(extraValue)
        return V, q
