"""Create a FlashSchNet force as an ``openmmtorch.TorchForce`` and add it to an existing OpenMM System.

>>> force = addFlashSchNetForce(system, "chignolin", topology)          # doctest: +SKIP

The TorchScript model calls the ``torch.ops.openmmflash.*`` custom ops, so it runs only in a Python process that has
imported ``openmmflash`` (this module does); the force returns energy and forces directly
(``setOutputsForces(True)``).
"""

from typing import List, Optional, Sequence

import torch

from openmmflash.plugin.forcemodule import (FlashSchNetForceModule, _model, createFlashSchNetModule,  # noqa: F401
                                           resolveBeadTypes)
from openmmflash.plugin.pythonforce import createFlashSchNetPythonForce
from openmmflash.stack import import_openmm


def createFlashSchNetForce(model, topology=None, beadTypes=None, replicas: int = 1, atomSubset=None,
                           numParticles: Optional[int] = None, periodic: Optional[bool] = None,
                           precision: str = "single", neighborCapacity: int = 0, useCUDAGraphs: bool = False,
                           CUDAGraphWarmupSteps: int = 10, forceGroup: int = 0, filterMode: Optional[str] = None,
                           filterTable=None):
    """A TorchForce computing the FlashSchNet energy and forces.

    Parameters
    ----------
    model : FlashSchNet or str
        The model, a model file path or a bundled model name.
    topology : openmm.app.Topology, optional
        CG topology of the System; bead types come from the model's bead-type table.
    beadTypes : sequence of int, optional
        Bead types of the modelled particles (instead of ``topology``).
    replicas : int
        Number of identical, contiguous, non-interacting copies among the modelled particles.
    atomSubset : sequence of int, optional
        Indices of the System particles the model acts on (default: all).
    numParticles : int, optional
        Particles in the System (default: the topology's, or the number of bead types).
    periodic : bool, optional
        Use periodic boundary conditions (default: whether the topology has a box).
    precision : {"single", "double"}
        Arithmetic of the model.
    neighborCapacity : int
        Fixed neighbor-list length (0: exact list, resized every step).
    useCUDAGraphs, CUDAGraphWarmupSteps
        TorchForce properties (CUDA platform only).
    forceGroup : int
        Force group of the force.
    filterMode : {"table", "exact"}, optional
        "table" (default in single precision): filters from cubic Hermite tables built now from the model's weights
        (fast MD); "exact" (default in double precision): the filter MLP per pair. The table's nodes, spacing and
        measured error are in ``filterTableInfo(force)``.
    filterTable : openmmflash.schnet.filtertable.FilterTableOptions, optional
        Error tolerance and storage ("fp32", "fp16") of the tables.
    """
    openmmtorch = _import_openmmtorch()
    module = createFlashSchNetModule(model, topology, beadTypes, replicas, atomSubset, numParticles, periodic,
                                     precision, neighborCapacity, outputBuffers=True, filterMode=filterMode,
                                     filterTable=filterTable)
    if CUDAGraphWarmupSteps < 1:
        raise ValueError(f"CUDAGraphWarmupSteps must be >= 1, got {CUDAGraphWarmupSteps}")
    scripted = torch.jit.script(module)
    force = openmmtorch.TorchForce(scripted, {"useCUDAGraphs": "true" if useCUDAGraphs else "false",
                                              "CUDAGraphWarmupSteps": str(int(CUDAGraphWarmupSteps))})
    force.setOutputsForces(True)
    force.setUsesPeriodicBoundaryConditions(module.periodic)
    force.setForceGroup(forceGroup)
    force.setName("FlashSchNet")
    return force


def filterTableInfo(force) -> dict:
    """Nodes, spacing, measured errors (vs the exact float64 filter) and size of a FlashSchNet TorchForce's filter
    tables; empty for filterMode "exact"."""
    return dict(force.getModule().filter_table_info)


def addFlashSchNetForce(system, model, topology=None, backend: str = "torchforce", **options):
    """Create a FlashSchNet force for ``system`` (``backend`` "torchforce" or "pythonforce"), add it, return it.

    The particle count is taken from the System, so a force that does not fit it is refused. The force is periodic
    when the topology has a box (without a topology: when the System's other forces are periodic).
    """
    options.setdefault("numParticles", system.getNumParticles())
    if topology is None:
        options.setdefault("periodic", system.usesPeriodicBoundaryConditions())
    if backend == "torchforce":
        force = createFlashSchNetForce(model, topology, **options)
    elif backend == "pythonforce":
        force = createFlashSchNetPythonForce(model, topology, **options)
    else:
        raise ValueError(f"backend must be 'torchforce' or 'pythonforce', got {backend!r}")
    system.addForce(force)
    return force


def _import_openmmtorch():
    import_openmm()
    try:
        import openmmtorch
    except ImportError as err:
        raise ImportError("openmmtorch is needed for the TorchForce backend: pip install openmmtorch==1.5 (or use "
                          "backend='pythonforce'); run `openmmflash doctor` to check the stack") from err
    return openmmtorch
