"""Create a FlashSchNet force as an ``openmmtorch.TorchForce`` and add it to an existing OpenMM System.

>>> force = addFlashSchNetForce(system, "chignolin", topology)          # doctest: +SKIP

The TorchScript model calls the ``torch.ops.openmmflash.*`` custom ops, so it runs only in a Python process that has
imported ``openmmflash`` (this module does); the force returns energy and forces directly
(``setOutputsForces(True)``).
"""

from typing import Optional

import torch

from openmmflash.plugin.forcemodule import (FlashSchNetForceModule, _model, createFlashSchNetModule,  # noqa: F401
                                           resolveBeadTypes)
from openmmflash.plugin.forceoptions import FlashSchNetForceOptions
from openmmflash.plugin.pythonforce import createFlashSchNetPythonForce
from openmmflash.stack import import_openmm


def createFlashSchNetForce(model, topology=None, beadTypes=None,
                           forceOptions: Optional[FlashSchNetForceOptions] = None, **options):
    """A TorchForce computing the FlashSchNet energy and forces.

    Parameters
    ----------
    model : FlashSchNet or str
        The model, a model file path or a bundled model name.
    topology : openmm.app.Topology, optional
        CG topology of the System; bead types come from the model's bead-type table.
    beadTypes : sequence of int, optional
        Bead types of the modelled particles (instead of ``topology``).
    forceOptions : FlashSchNetForceOptions, optional
        The options as one object (default: all defaults).
    **options
        Fields of ``FlashSchNetForceOptions`` as keywords (they replace those of ``forceOptions``): ``replicas``,
        ``atomSubset``, ``numParticles``, ``periodic``, ``precision`` ("single" or "double"), ``neighborCapacity``,
        ``useCUDAGraphs``, ``CUDAGraphWarmupSteps``, ``forceGroup``, ``filterMode`` ("table", the default in single
        precision: filters from cubic Hermite tables built now from the model's weights, whose nodes, spacing and
        measured error are in ``filterTableInfo(force)``; "exact", the default in double precision: the filter MLP
        per pair) and ``filterTable`` (a ``FilterTableOptions``: error tolerance and storage of the tables).
    """
    openmmtorch = _import_openmmtorch()
    opts = FlashSchNetForceOptions.resolve(forceOptions, **options)
    if opts.device is not None:
        raise TypeError("device is an option of the PythonForce backend; the TorchForce runs on the device of the "
                        "OpenMM Context (use backend='pythonforce' to choose a torch device)")
    module = createFlashSchNetModule(model, topology, beadTypes, opts, outputBuffers=True)
    scripted = torch.jit.script(module)
    force = openmmtorch.TorchForce(scripted, {"useCUDAGraphs": "true" if opts.useCUDAGraphs else "false",
                                              "CUDAGraphWarmupSteps": str(int(opts.CUDAGraphWarmupSteps))})
    force.setOutputsForces(True)
    force.setUsesPeriodicBoundaryConditions(module.periodic)
    force.setForceGroup(opts.forceGroup)
    force.setName("FlashSchNet")
    return force


def filterTableInfo(force) -> dict:
    """Nodes, spacing, measured errors (vs the exact float64 filter) and size of a FlashSchNet TorchForce's filter
    tables; empty for filterMode "exact"."""
    return dict(force.getModule().filter_table_info)


def addFlashSchNetForce(system, model, topology=None, backend: str = "torchforce",
                        forceOptions: Optional[FlashSchNetForceOptions] = None, **options):
    """Create a FlashSchNet force for ``system`` (``backend`` "torchforce" or "pythonforce"), add it, return it.

    Options: ``forceOptions`` (a ``FlashSchNetForceOptions``) and/or its fields as keywords, as in
    ``createFlashSchNetForce``. The particle count is taken from the System, so a force that does not fit it is
    refused. The force is periodic when the topology has a box (without a topology: when the System's other forces
    are periodic).
    """
    opts = FlashSchNetForceOptions.resolve(forceOptions, **options)
    if opts.numParticles is None:
        opts.numParticles = system.getNumParticles()
    if topology is None and opts.periodic is None:
        opts.periodic = system.usesPeriodicBoundaryConditions()
    if backend == "torchforce":
        force = createFlashSchNetForce(model, topology, forceOptions=opts)
    elif backend == "pythonforce":
        force = createFlashSchNetPythonForce(model, topology, forceOptions=opts)
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
