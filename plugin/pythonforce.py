"""The ``openmm.PythonForce`` backend of FlashSchNet: same module and ops as the TorchForce, called from Python.

Positions go through the host every step (slower than the TorchForce), but it needs no openmmtorch and it runs with
any torch. The compute object is picklable, so a System holding it survives XmlSerializer and copy.deepcopy.
"""

import io
from typing import Optional

import numpy as np
import torch

from openmmflash.stack import import_openmm


class FlashSchNetCompute:
    """Picklable PythonForce computation: ``compute(state) -> (energy kJ/mol, forces (N, 3) kJ/mol/nm)``.

    Parameters are those of ``openmmflash.plugin.torchforce.createFlashSchNetModule`` plus ``device``.
    """

    def __init__(self, model, device: Optional[str] = None, **moduleOptions):
        from openmmflash.plugin.torchforce import _model, createFlashSchNetModule

        model = _model(model)
        self._model_bytes = self._serialize(model)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.module = createFlashSchNetModule(model, **moduleOptions).to(self.device)
        # What __setstate__ rebuilds the module from. The topology only served to look up bead types: keep the
        # pickled state small and topology-free.
        self._options = dict(moduleOptions, topology=None, beadTypes=self.module.types.tolist(),
                             numParticles=self.module.num_particles, periodic=self.module.periodic)

    @staticmethod
    def _serialize(model) -> bytes:
        buffer = io.BytesIO()
        torch.save({"config": model.config.toDict(), "stateDict": model.state_dict(),
                    "metadata": getattr(model, "metadata", {})}, buffer)
        return buffer.getvalue()

    def __getstate__(self):
        return {"model_bytes": self._model_bytes, "options": self._options, "device": self.device}

    def __setstate__(self, state):
        from openmmflash.plugin.torchforce import createFlashSchNetModule
        from openmmflash.schnet.config import FlashSchNetConfig
        from openmmflash.schnet.model import FlashSchNet

        payload = torch.load(io.BytesIO(state["model_bytes"]), map_location="cpu", weights_only=True)
        model = FlashSchNet(FlashSchNetConfig.fromDict(payload["config"]))
        model.load_state_dict(payload["stateDict"])
        model.metadata = payload["metadata"]
        self._model_bytes, self._options = state["model_bytes"], state["options"]
        self.device = state["device"] if state["device"] == "cpu" or torch.cuda.is_available() else "cpu"
        self.module = createFlashSchNetModule(model, **self._options).to(self.device)

    def __call__(self, state):
        unit = import_openmm().unit
        dtype = self.module.dtype
        positions = torch.as_tensor(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer), dtype=dtype,
                                    device=self.device)
        box = None
        if self.module.periodic:
            box = torch.as_tensor(state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer),
                                  dtype=dtype, device=self.device)
        with torch.enable_grad():
            energy, forces = self.module(positions, box)
        return float(energy), forces.detach().cpu().numpy().astype(np.float64)


def createFlashSchNetPythonForce(model, topology=None, beadTypes=None, replicas: int = 1, atomSubset=None,
                                 numParticles: Optional[int] = None, periodic: Optional[bool] = None,
                                 precision: str = "single", neighborCapacity: int = 0, device: Optional[str] = None,
                                 forceGroup: int = 0):
    """A PythonForce computing the FlashSchNet energy and forces (arguments as ``createFlashSchNetForce``)."""
    openmm = import_openmm()
    compute = FlashSchNetCompute(model, device=device, topology=topology, beadTypes=beadTypes, replicas=replicas,
                                 atomSubset=atomSubset, numParticles=numParticles, periodic=periodic,
                                 precision=precision, neighborCapacity=neighborCapacity)
    force = openmm.PythonForce(compute)
    force.setUsesPeriodicBoundaryConditions(compute.module.periodic)
    force.setForceGroup(forceGroup)
    force.setName("FlashSchNet")
    return force
