"""An OpenMM System of a CG protein without the network: bead masses and the CGSchNet priors as native forces."""

from openmmflash.cg.mapping import CGMapping
from openmmflash.cg.priors import addPriorForces
from openmmflash.stack import import_openmm


def createPriorSystem(topology, priors=None, mapping="5bead", lengthUnit: str = "angstrom",
                      energyUnit: str = "kcal/mol", removeCMMotion: bool = True, priorForceGroup: int = 1):
    """A System for the CG ``topology`` (one bead per atom) holding the bead masses of ``mapping`` (a CGMapping or
    its name), the prior forces of ``priors`` (see ``openmmflash.cg.priors``; parameters in ``lengthUnit`` /
    ``energyUnit``) in force group ``priorForceGroup`` and, unless ``removeCMMotion`` is False, a CMMotionRemover."""
    openmm = import_openmm()
    mapping = mapping if isinstance(mapping, CGMapping) else CGMapping(mapping)
    system = openmm.System()
    if topology.getPeriodicBoxVectors() is not None:
        system.setDefaultPeriodicBoxVectors(*topology.getPeriodicBoxVectors())
    for mass in mapping.masses(topology):
        system.addParticle(mass)
    if priors:
        addPriorForces(system, topology, mapping.bondedPairs(topology), priors, lengthUnit, energyUnit,
                       priorForceGroup)
    if removeCMMotion:
        system.addForce(openmm.CMMotionRemover())
    return system
