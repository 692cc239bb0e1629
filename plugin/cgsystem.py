"""Build an OpenMM System for a CG protein: bead masses, CGSchNet priors as native forces and, optionally, the
FlashSchNet force."""

import os
from typing import Optional

from openmmflash.cg.inputchecks import requireCGTopology
from openmmflash.cg.mapping import CGMapping
from openmmflash.cg.priorsystem import createPriorSystem
from openmmflash.plugin.forceoptions import FlashSchNetForceOptions
from openmmflash.plugin.torchforce import addFlashSchNetForce
from openmmflash.schnet.model import loadModel


def createCGSystem(topology, model=None, priors=None, mapping=None, addModelForce: bool = True,
                   removeCMMotion: bool = True, priorForceGroup: int = 1, replicas: Optional[int] = None,
                   forceOptions: Optional[FlashSchNetForceOptions] = None, **options):
    """A System for the CG ``topology`` (one bead per atom).

    Parameters
    ----------
    topology : openmm.app.Topology
        CG topology (e.g. from ``CGMapping.mapTopology`` or ``openmmflash.cg.structure.loadProtein``), with all
        replicas if ``replicas`` > 1.
    model : FlashSchNet or str, optional
        Model (or path / bundled name) whose priors, mapping and units are used and whose force is added.
    priors : dict, optional
        Prior parameters (default: the model's ``metadata["priors"]``); see ``openmmflash.cg.priors``.
    mapping : CGMapping or str, optional
        Default: the model's mapping, else "5bead".
    addModelForce : bool
        Add the FlashSchNet force (TorchForce) too.
    replicas : int, optional
        Identical copies of the protein in ``topology`` (default: ``forceOptions.replicas``, else 1).
    forceOptions : FlashSchNetForceOptions, optional
        Options of the FlashSchNet force.
    **options
        ``backend`` and fields of ``FlashSchNetForceOptions`` (precision, neighborCapacity, useCUDAGraphs, ...),
        passed to ``addFlashSchNetForce``.
    """
    if isinstance(model, (str, os.PathLike)):
        model = loadModel(model)
    meta = getattr(model, "metadata", {}) if model is not None else {}
    mapping = mapping or meta.get("mapping") or "5bead"
    requireCGTopology(topology, mapping if isinstance(mapping, CGMapping) else CGMapping(mapping), "createCGSystem")
    priors = priors if priors is not None else meta.get("priors", {})
    units = model.config if model is not None else None
    system = createPriorSystem(topology, priors, mapping, units.lengthUnit if units else "angstrom",
                               units.energyUnit if units else "kcal/mol", removeCMMotion, priorForceGroup)
    if model is not None and addModelForce:
        if replicas is not None:
            options["replicas"] = replicas
        addFlashSchNetForce(system, model, topology, forceOptions=forceOptions, **options)
    return system
