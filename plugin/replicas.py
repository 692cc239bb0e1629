"""B independent replicas of one molecule in one System, so one model call serves them all.

The copies are contiguous (replica b holds particles b*n .. (b+1)*n - 1) and share no bonded term; FlashSchNet's
neighbor list never pairs particles of different replicas, so the copies never interact.
"""

import copy

import numpy as np

from openmmflash.stack import import_openmm

# Force classes whose terms are copied, with the number of particle indices that start each term.
_TERM_FORCES = {
    "HarmonicBondForce": ("Bond", 2), "HarmonicAngleForce": ("Angle", 3), "PeriodicTorsionForce": ("Torsion", 4),
    "CustomBondForce": ("Bond", 2), "CustomAngleForce": ("Angle", 3), "CustomTorsionForce": ("Torsion", 4),
}


def replicateTopology(topology, replicas: int):
    """A Topology holding ``replicas`` copies of every chain (and bond) of ``topology``."""
    app = import_openmm().app
    out = app.Topology()
    out.setPeriodicBoxVectors(topology.getPeriodicBoxVectors())
    for _ in range(replicas):
        mapped = {}
        for chain in topology.chains():
            new_chain = out.addChain(chain.id)
            for residue in chain.residues():
                new_res = out.addResidue(residue.name, new_chain, residue.id, residue.insertionCode)
                for atom in residue.atoms():
                    mapped[atom] = out.addAtom(atom.name, atom.element, new_res, atom.id)
        for bond in topology.bonds():
            out.addBond(mapped[bond[0]], mapped[bond[1]], bond.type, bond.order)
    return out


def replicatePositions(positions, replicas: int, spacing=None) -> np.ndarray:
    """(B * n, 3) positions in nm: copies on a cubic grid ``spacing`` nm apart (default: molecule size + 1 nm)."""
    unit = import_openmm().unit
    if unit.is_quantity(positions):
        positions = positions.value_in_unit(unit.nanometer)
    pos = np.asarray(positions, dtype=np.float64)
    if spacing is None:
        spacing = float(np.ptp(pos, axis=0).max()) + 1.0
    side = int(np.ceil(replicas ** (1.0 / 3.0)))
    grid = np.array([(b % side, (b // side) % side, b // side**2) for b in range(replicas)], dtype=np.float64)
    return (pos[None, :, :] + spacing * grid[:, None, :]).reshape(-1, 3)


def replicateSystem(system, replicas: int):
    """A System with ``replicas`` copies of the particles and bonded terms of ``system``.

    Supported forces: harmonic bonds/angles, periodic torsions, custom bond/angle/torsion forces and
    CMMotionRemover. Add the FlashSchNet force afterwards, with ``replicas=B``.
    """
    n = system.getNumParticles()
    out = _emptySystem(system, list(range(n)) * replicas)
    for force in system.getForces():
        kind = force.__class__.__name__
        if kind == "CMMotionRemover":
            out.addForce(copy.deepcopy(force))
            continue
        if kind not in _TERM_FORCES:
            raise ValueError(f"cannot replicate a {kind} (supported: {', '.join(sorted(_TERM_FORCES))}, "
                             "CMMotionRemover); add the FlashSchNet force after replicating the System")
        term, count = _TERM_FORCES[kind]
        new = copy.deepcopy(force)
        add = getattr(new, f"add{term}")
        terms = _terms(force, term)
        for b in range(1, replicas):
            offset = b * n
            for values in terms:
                add(*[i + offset for i in values[:count]], *values[count:])
        out.addForce(new)
    return out


def replicate(topology, system, positions, replicas: int, spacing=None):
    """(topology, system, positions) for ``replicas`` copies of one molecule (system may be None)."""
    if replicas < 1:
        raise ValueError(f"replicas must be >= 1, got {replicas}")
    new_system = None if system is None else replicateSystem(system, replicas)
    return replicateTopology(topology, replicas), new_system, replicatePositions(positions, replicas, spacing)


def singleReplicaSystem(system, replicas: int):
    """The System of one replica: the first n = N / replicas particles and the terms of the supported forces
    (those of :func:`replicateSystem`, plus CMMotionRemover) among them; other forces are left out. Use it to
    evaluate one copy of a replicated System alone (e.g. the prior terms per replica)."""
    N = system.getNumParticles()
    if replicas < 1 or N % replicas:
        raise ValueError(f"{N} particles cannot form {replicas} equal replicas")
    n = N // replicas
    out = _emptySystem(system, list(range(n)))
    for force in system.getForces():
        kind = force.__class__.__name__
        if kind == "CMMotionRemover":
            out.addForce(copy.deepcopy(force))
        if kind not in _TERM_FORCES:
            continue
        term, count = _TERM_FORCES[kind]
        if kind.startswith("Custom"):
            if getattr(force, "getNumTabulatedFunctions", lambda: 0)() or force.getNumEnergyParameterDerivatives():
                raise ValueError(f"{force.getName()}: tabulated functions and parameter derivatives are not copied")
            new = type(force)(force.getEnergyFunction())
            for k in range(getattr(force, f"getNumPer{term}Parameters")()):
                getattr(new, f"addPer{term}Parameter")(getattr(force, f"getPer{term}ParameterName")(k))
            for k in range(force.getNumGlobalParameters()):
                new.addGlobalParameter(force.getGlobalParameterName(k), force.getGlobalParameterDefaultValue(k))
        else:
            new = type(force)()
        new.setUsesPeriodicBoundaryConditions(force.usesPeriodicBoundaryConditions())
        new.setName(force.getName())
        new.setForceGroup(force.getForceGroup())
        add = getattr(new, f"add{term}")
        for values in _terms(force, term):
            if all(i < n for i in values[:count]):
                add(*values)
        out.addForce(new)
    return out


def _emptySystem(system, particles):
    """A System with ``system``'s default box and one particle per index in ``particles`` (its mass), no forces."""
    out = import_openmm().System()
    out.setDefaultPeriodicBoxVectors(*system.getDefaultPeriodicBoxVectors())
    for i in particles:
        out.addParticle(system.getParticleMass(i))
    return out


def _terms(force, term: str) -> list:
    """Every term of a bonded force as its parameter tuple (particle indices first)."""
    get = getattr(force, f"get{term}Parameters")
    return [get(k) for k in range(getattr(force, f"getNum{term}s")())]
