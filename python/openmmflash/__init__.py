"""openmm-flash: fast learned molecular dynamics for OpenMM.

Importing this package imports torch before openmm, which the openmmtorch wheels need to load the Torch plugin.
The public names are re-exported lazily, so ``import openmmflash`` stays cheap.
"""

import importlib

import torch  # noqa: F401  (must precede any openmm import; see openmmflash.stack)

__version__ = "0.1.0"

_EXPORTS = {
    "FlashSchNet": "openmmflash.schnet.model",
    "FlashSchNetConfig": "openmmflash.schnet.config",
    "NeighborList": "openmmflash.neighbors",
    "loadModel": "openmmflash.schnet.model",
    "saveModel": "openmmflash.schnet.modelfile",
    "CGMapping": "openmmflash.cg.mapping",
    "createCGSystem": "openmmflash.plugin.cgsystem",
    "createFlashSchNetForce": "openmmflash.plugin.torchforce",
    "createFlashSchNetPythonForce": "openmmflash.plugin.pythonforce",
    "replicateSystem": "openmmflash.plugin.replicas",
    "FlashMDIntegrator": "openmmflash.integrators.engine.flashmdintegrator",
    "FlashMDLangevinIntegrator": "openmmflash.integrators.engine.thermostats",
    "FlashMDBussiIntegrator": "openmmflash.integrators.engine.thermostats",
    "FlashMDStepper": "openmmflash.integrators.engine.stepper",
    "FlashMDModel": "openmmflash.integrators.network.flashmdmodel",
    "CompactReporter": "openmmflash.compactmd.compactreporter",
    "CompactTrajectory": "openmmflash.compactmd.compacttrajectory",
    "loadProtein": "openmmflash.cg.structure",
    "addFlashSchNetForce": "openmmflash.plugin.torchforce",
}


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'openmmflash' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))
