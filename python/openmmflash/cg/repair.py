"""Repeatable structure repair with pdbfixer: the same input gives the same atoms on every call.

pdbfixer's ``addMissingAtoms`` and OpenMM's ``Modeller.addHydrogens`` place new atoms at random (Python's
``random``, an integrator seed) and then minimize them; unseeded, two preparations of one sequence differ by up to
2 A in their hydrogens and side chains, and so do the minimized native structures made from them.
"""

import contextlib
import random

from openmmflash.stack import import_openmm

PREPARATION_SEED = 1


@contextlib.contextmanager
def repeatablePlacement(fixer):
    """Within the block, Python's ``random`` is seeded and the fixer's minimizations run on the Reference platform
    (the CPU platform sums forces in a thread-dependent order); both are restored after it."""
    state, platform = random.getstate(), fixer.platform
    random.seed(PREPARATION_SEED)
    fixer.platform = import_openmm().Platform.getPlatformByName("Reference")
    try:
        yield
    finally:
        random.setstate(state)
        fixer.platform = platform


def addMissingAtoms(fixer) -> None:
    """``fixer.addMissingAtoms()`` (after ``findMissingAtoms``), repeatably."""
    with repeatablePlacement(fixer):
        fixer.addMissingAtoms(seed=PREPARATION_SEED)


def addMissingHydrogens(fixer, pH: float = 7.0) -> None:
    """``fixer.addMissingHydrogens(pH)``, repeatably."""
    with repeatablePlacement(fixer):
        fixer.addMissingHydrogens(pH)
