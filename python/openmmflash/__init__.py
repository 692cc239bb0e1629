"""openmm-flash: fast learned molecular dynamics for OpenMM.

Everything the quickstarts use is importable from here, lazily (the module that defines a name is imported when the
name is first used)::

    from openmmflash import loadProtein, createCGSystem, FlashMDLangevinIntegrator, CompactReporter

Importing this package does not import torch; it makes sure torch is imported before OpenMM whenever OpenMM is
imported afterwards (openmmflash.importorder), which the openmmtorch wheels need to load the Torch plugin.
``bundledModels()`` lists the models shipped with the package; their names work wherever a model file does.
"""

import importlib

from openmmflash import importorder

importorder.install()

__version__ = "0.1.0"

# Public name -> "module" (same name there) or "module:name".
_EXPORTS = {
    # FlashSchNet models and forces
    "FlashSchNet": "openmmflash.schnet.model",
    "FlashSchNetConfig": "openmmflash.schnet.config",
    "NeighborList": "openmmflash.neighbors",
    "loadModel": "openmmflash.schnet.modelfile",
    "saveModel": "openmmflash.schnet.modelfile",
    "createFlashSchNetForce": "openmmflash.plugin.torchforce",
    "addFlashSchNetForce": "openmmflash.plugin.torchforce",
    "createFlashSchNetPythonForce": "openmmflash.plugin.pythonforce",
    # CG proteins
    "CGMapping": "openmmflash.cg.mapping",
    "loadProtein": "openmmflash.cg.structure",
    "createCGSystem": "openmmflash.cg.cgsystem",
    "replicate": "openmmflash.plugin.replicas",
    "replicateSystem": "openmmflash.plugin.replicas",
    "replicateTopology": "openmmflash.plugin.replicas",
    "replicatePositions": "openmmflash.plugin.replicas",
    # FlashMD integrators and models
    "FlashMDIntegrator": "openmmflash.integrators.flashmdintegrator",
    "FlashMDLangevinIntegrator": "openmmflash.integrators.thermostats",
    "FlashMDBussiIntegrator": "openmmflash.integrators.thermostats",
    "FlashMDStepper": "openmmflash.integrators.stepper",
    "FlashMDModel": "openmmflash.integrators.modelfile",
    "loadFlashMDModel": "openmmflash.integrators.modelfile:loadModel",
    # CompactMD trajectories
    "CompactReporter": "openmmflash.compactmd.compactreporter",
    "CompactTrajectory": "openmmflash.compactmd.compacttrajectory",
    # GAQ quantization of FlashMD models
    "quantizationAwareTraining": "openmmflash.gaq.qat",
    "quantizeModel": "openmmflash.gaq.quantize",
    "saveQuantizedModel": "openmmflash.gaq.export",
    "loadQuantizedModel": "openmmflash.gaq.export",
    # bundled models
    "bundledModels": "openmmflash.bundledmodels",
    # what input checks raise or warn, to catch or filter
    "DroppedResiduesWarning": "openmmflash.cg.residuemessages",
    "UnseenResiduesWarning": "openmmflash.cg.inputchecks",
    "NonFiniteStateError": "openmmflash.integrators.statecheck",
}


def __getattr__(name):
    if name in _EXPORTS:
        module, _, attr = _EXPORTS[name].partition(":")
        value = getattr(importlib.import_module(module), attr or name)
        globals()[name] = value  # resolved once
        return value
    raise AttributeError(f"module 'openmmflash' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))
