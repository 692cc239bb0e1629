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
    "loadModel": "openmmflash.schnet.model",
    "saveModel": "openmmflash.schnet.modelfile",
    "createFlashSchNetForce": "openmmflash.plugin.torchforce",
    "addFlashSchNetForce": "openmmflash.plugin.torchforce",
    "createFlashSchNetPythonForce": "openmmflash.plugin.pythonforce",
    "FlashSchNetForceOptions": "openmmflash.plugin.forceoptions",
    # CG proteins
    "CGMapping": "openmmflash.cg.mapping",
    "loadProtein": "openmmflash.cg.structure",
    "createCGSystem": "openmmflash.plugin.cgsystem",
    "replicate": "openmmflash.plugin.replicas",
    "replicateSystem": "openmmflash.plugin.replicas",
    "replicateTopology": "openmmflash.plugin.replicas",
    "replicatePositions": "openmmflash.plugin.replicas",
    # FlashMD integrators and models
    "FlashMDIntegrator": "openmmflash.integrators.engine.flashmdintegrator",
    "FlashMDLangevinIntegrator": "openmmflash.integrators.engine.thermostats",
    "FlashMDBussiIntegrator": "openmmflash.integrators.engine.thermostats",
    "FlashMDStepper": "openmmflash.integrators.engine.stepper",
    "FlashMDModel": "openmmflash.integrators.network.flashmdmodel",
    "loadFlashMDModel": "openmmflash.integrators.network.modelfile:loadModel",
    # CompactMD trajectories
    "CompactReporter": "openmmflash.compactmd.compactreporter",
    "CompactTrajectory": "openmmflash.compactmd.compacttrajectory",
    # GAQ quantization of FlashMD models
    "quantizationAwareTraining": "openmmflash.integrators.training.qat",
    "quantizeModel": "openmmflash.gaq.quantize",
    "saveQuantizedModel": "openmmflash.integrators.network.gaqfile",
    "loadQuantizedModel": "openmmflash.integrators.network.gaqfile",
    # bundled models
    "bundledModels": "openmmflash.workflows.bundledmodels",
    # what input checks raise or warn, to catch or filter
    "DroppedResiduesWarning": "openmmflash.cg.residuemessages",
    "UnseenResiduesWarning": "openmmflash.cg.inputchecks",
    "NonFiniteStateError": "openmmflash.integrators.engine.statecheck",
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
