"""openmm-ml integration: ``MLPotential('flashschnet', modelPath=...)``.

Registered through the ``openmmml.potentials`` entry point. openmm-ml imports this module at ``import openmmml``,
so it imports nothing heavy at module level.

>>> potential = MLPotential("flashschnet", modelPath="chignolin")            # doctest: +SKIP
>>> system = potential.createSystem(cgTopology)                              # doctest: +SKIP
"""

from openmmml.mlpotential import MLPotentialImpl, MLPotentialImplFactory


class FlashSchNetPotentialImplFactory(MLPotentialImplFactory):
    """Creates FlashSchNetPotentialImpl objects."""

    def createImpl(self, name: str, modelPath: str = None, **args) -> MLPotentialImpl:
        if modelPath is None:
            raise ValueError("MLPotential('flashschnet') needs modelPath: a FlashSchNet model file or the name of a "
                             "bundled model (openmmflash.schnet.modelfile.bundledModels())")
        return FlashSchNetPotentialImpl(name, modelPath)


class FlashSchNetPotentialImpl(MLPotentialImpl):
    """FlashSchNet CG potential for openmm-ml. The Topology is a CG topology (one atom per bead).

    ``addForces`` keyword arguments: ``includePriors`` (default True: the prior terms the model was trained with,
    in force group ``priorForceGroup``, default = ``forceGroup``), ``backend`` ("torchforce" or "pythonforce"),
    ``forceOptions`` (a ``FlashSchNetForceOptions``) and/or its fields as keywords: ``precision`` ("single" or
    "double"), ``neighborCapacity``, ``useCUDAGraphs``, ``filterMode`` ("table", the default in single precision,
    or "exact"), ``filterTable``, ... (see ``createFlashSchNetForce``). The force group is openmm-ml's
    ``forceGroup``.
    """

    def __init__(self, name: str, modelPath: str):
        self.name = name
        self.modelPath = modelPath

    def addForces(self, topology, system, atoms, forceGroup, includePriors: bool = True, backend: str = "torchforce",
                  priorForceGroup=None, forceOptions=None, **args):
        from openmmflash.cg.mapping import CGMapping
        from openmmflash.cg.priors import addPriorForces
        from openmmflash.plugin.forceoptions import FlashSchNetForceOptions
        from openmmflash.plugin.torchforce import addFlashSchNetForce
        from openmmflash.schnet.model import loadModel

        options = FlashSchNetForceOptions.resolve(forceOptions, **args)
        model = loadModel(self.modelPath)
        subset = None if atoms is None else sorted(int(i) for i in atoms)
        priors = model.metadata.get("priors")
        if includePriors and priors:
            if subset is not None:
                raise ValueError("includePriors=True needs the whole topology to be the CG protein; pass "
                                 "includePriors=False when modelling a subset of atoms")
            mapping = CGMapping(model.metadata.get("mapping") or "5bead")
            addPriorForces(system, topology, mapping.bondedPairs(topology), priors, model.config.lengthUnit,
                           model.config.energyUnit, forceGroup if priorForceGroup is None else priorForceGroup)
        if subset is not None and options.periodic is None:
            # A subset of a larger System (e.g. createMixedSystem): periodic when the System is.
            options.periodic = system.usesPeriodicBoundaryConditions()
        addFlashSchNetForce(system, model, topology, backend=backend, forceOptions=options, forceGroup=forceGroup,
                            atomSubset=subset)
