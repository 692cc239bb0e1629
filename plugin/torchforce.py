"""Create a FlashSchNet force as an ``openmmtorch.TorchForce`` and add it to an existing OpenMM System.

>>> force = addFlashSchNetForce(system, "chignolin", topology)          # doctest: +SKIP

The TorchScript model calls the ``torch.ops.openmmflash.*`` custom ops, so it runs only in a Python process that has
imported ``openmmflash`` (this module does); the force returns energy and forces directly
(``setOutputsForces(True)``).
"""

import os
from typing import List, Optional, Sequence

import torch

from openmmflash.cg.inputchecks import requireCGTopology, warnUnseenResidues
from openmmflash.cg.mapping import CGMapping, beadTypesFromTopology
from openmmflash.plugin.forcemodule import FlashSchNetForceModule
from openmmflash.stack import import_openmm


def _model(model):
    from openmmflash.schnet.modelfile import loadModel

    return loadModel(model) if isinstance(model, (str, os.PathLike)) else model


def resolveBeadTypes(model, topology=None, beadTypes: Optional[Sequence[int]] = None,
                     atomSubset: Optional[Sequence[int]] = None) -> List[int]:
    """Bead types of the modelled particles, from an explicit list or the topology and the model's type table."""
    if (topology is None) == (beadTypes is None):
        raise ValueError("give exactly one of topology (types from the model's bead-type table) or beadTypes")
    if beadTypes is None:
        table = model.metadata.get("beadTypes")
        if not table:
            raise ValueError("the model has no bead-type table (metadata['beadTypes']); pass beadTypes explicitly")
        requireCGTopology(topology, CGMapping(model.metadata.get("mapping") or "5bead"), "the FlashSchNet force")
        warnUnseenResidues(model, topology)
        types = beadTypesFromTopology(topology, table)
        if atomSubset is not None:
            types = [types[i] for i in atomSubset]
    else:
        types = [int(t) for t in beadTypes]
    bad = sorted({t for t in types if not 0 <= t < model.config.numBeadTypes})
    if bad:
        raise ValueError(f"bead types {bad[:10]} are unknown to the model, which has types 0 .. "
                         f"{model.config.numBeadTypes - 1}")
    return types


def createFlashSchNetModule(model, topology=None, beadTypes=None, replicas: int = 1, atomSubset=None,
                            numParticles: Optional[int] = None, periodic: Optional[bool] = None,
                            precision: str = "single", neighborCapacity: int = 0,
                            outputBuffers: bool = False) -> FlashSchNetForceModule:
    """The eager OpenMM-boundary module (nm, kJ/mol) shared by the TorchForce and the PythonForce."""
    model = _model(model)
    types = resolveBeadTypes(model, topology, beadTypes, atomSubset)
    if replicas < 1 or len(types) % replicas != 0:
        raise ValueError(f"{len(types)} modelled particles cannot form {replicas} equal replicas")
    n = len(types) // replicas
    if any(types[k] != types[k % n] for k in range(len(types))):
        raise ValueError("replicas must be identical copies (same bead types in the same order); build the "
                         "System with openmmflash.plugin.replicas.replicate")
    if numParticles is None:
        numParticles = topology.getNumAtoms() if topology is not None and atomSubset is None else len(types)
    if atomSubset is not None:
        atomSubset = [int(i) for i in atomSubset]
        if len(atomSubset) != len(types) or not all(0 <= i < numParticles for i in atomSubset):
            raise ValueError("atomSubset must list one valid particle index per modelled bead")
    elif numParticles != len(types):
        allAtom = (" If the System is all-atom, build a CG System for the CG topology instead: "
                   "openmmflash.createCGSystem(cgTopology, model)." if numParticles > len(types) else "")
        raise ValueError(f"the System has {numParticles} particles but {len(types)} bead types were given; pass "
                         f"atomSubset to model only some particles.{allAtom}")
    if periodic is None:
        periodic = topology is not None and topology.getPeriodicBoxVectors() is not None
    return FlashSchNetForceModule(model, torch.tensor(types, dtype=torch.int64), numParticles, replicas, atomSubset,
                                  periodic, neighborCapacity, precision, outputBuffers)


def createFlashSchNetForce(model, topology=None, beadTypes=None, replicas: int = 1, atomSubset=None,
                           numParticles: Optional[int] = None, periodic: Optional[bool] = None,
                           precision: str = "single", neighborCapacity: int = 0, useCUDAGraphs: bool = False,
                           CUDAGraphWarmupSteps: int = 10, forceGroup: int = 0):
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
    """
    openmmtorch = _import_openmmtorch()
    module = createFlashSchNetModule(model, topology, beadTypes, replicas, atomSubset, numParticles, periodic,
                                     precision, neighborCapacity, outputBuffers=True)
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
        from openmmflash.plugin.pythonforce import createFlashSchNetPythonForce

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
