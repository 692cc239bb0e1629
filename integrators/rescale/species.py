"""Species bookkeeping of the FlashMD integrators: which species each particle is, the per-species share of the
energy rescale, and per-species kinetic temperatures. Units: amu, nm/ps, kJ/mol, K; arrays [N] or [N, 3]."""

import math
from typing import Callable, Dict, Optional, Sequence

import numpy as np

from openmmflash.units import BOLTZMANN_KJ as KB



def particleTypes(model, masses: Sequence[float], atomTypes: Optional[Sequence[int]], replicas: int) -> list:
    """Species id of each particle: ``atomTypes`` (one replica's or all, from setAtomTypes), or else matched by mass
    to the model's species masses (element models only; bead types share masses)."""
    if atomTypes is not None:
        types = list(atomTypes)
        if len(types) * replicas == len(masses) and replicas > 1:
            types = types * replicas
        if len(types) != len(masses):
            raise ValueError(f"setAtomTypes got {len(atomTypes)} types for {len(masses)} particles")
        return types
    if model.speciesKind == "cgBead":
        raise ValueError("this FlashMD model uses CG bead types as species (speciesKind 'cgBead'), which share "
                         "masses, so particles cannot be matched by mass: call integrator.setAtomTypes(beadTypes) "
                         "before the first step, with the FlashSchNet bead type of every particle, e.g. "
                         "openmmflash.workflows.flashmdcg.useCGBeadTypes(integrator, net, topology) or "
                         "setAtomTypes(cgBeadTypes(net, topology))")
    types = []
    for i, m in enumerate(masses):
        match = [z for z, mz in zip(model.species, model.speciesMasses) if abs(mz - m) <= 1e-4 * mz]
        if len(match) != 1:
            raise ValueError(f"particle {i} has mass {m:.6g} amu, which matches none of the FlashMD model's "
                             f"species masses {dict(zip(model.species, model.speciesMasses))}; the "
                             "model was trained with other masses or species. Use the System's standard "
                             "masses, or call setAtomTypes(...) with atomic numbers to see the exact mismatch.")
        types.append(match[0])
    return types


def checkSystem(system, model, atomTypes: Optional[Sequence[int]], replicas: int):
    """Validate an OpenMM System for a FlashMD integrator: (masses [N] amu, species ids [N]) as numpy arrays.
    Refuses constraints, virtual sites and, with ``replicas`` > 1, anything but identical contiguous copies."""
    from openmm import unit
    if system.getNumConstraints() > 0:
        raise ValueError(f"the System has {system.getNumConstraints()} constraints; FlashMD integrators move every "
                         "degree of freedom and need a System without constraints (createSystem(..., "
                         "constraints=None, rigidWater=False))")
    n = system.getNumParticles()
    if any(system.isVirtualSite(i) for i in range(n)):
        raise ValueError("the System has virtual sites, which FlashMD integrators do not support")
    masses = [system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(n)]
    types = particleTypes(model, masses, atomTypes, replicas)
    if n % replicas:
        raise ValueError(f"the System has {n} particles, which cannot form replicas={replicas} equal copies")
    k = n // replicas
    if any(types[i] != types[i % k] or masses[i] != masses[i % k] for i in range(n)):
        raise ValueError(f"with replicas={replicas} the System must hold {replicas} identical contiguous copies of "
                         "one molecule (same species and masses in the same order)")
    return np.asarray(masses), np.asarray(types)


def speciesShareRescale(v: np.ndarray, v1: np.ndarray, masses: np.ndarray, types: np.ndarray, kinetic: float,
                        maxRescale: float, label: Callable[[int], str]):
    """Velocities [N, 3] after the learned step with total kinetic energy ``kinetic`` (kJ/mol) shared per species.

    With peculiar velocities u = v - v_com: K_com' = M |v_com'|^2 / 2 is kept as predicted, and species s gets
    K_s' = (kinetic - K_com') * K_s / sum_s K_s, K_s = sum_{i in s} m_i |u_i|^2 / 2 from before the step:
    u_s' <- a_s u_s'.  The centre-of-mass momentum this creates is removed (u' <- u' - sum m u' / M) and a last
    common factor makes the energy exact again. Returns (velocities, None) or (None, reason) when a factor is
    out of [1/maxRescale, maxRescale].
    """
    m = masses[:, None]
    M = float(masses.sum())
    vc0, vc1 = (m * v).sum(0) / M, (m * v1).sum(0) / M
    u0, u1 = v - vc0, v1 - vc1
    k_int = kinetic - 0.5 * M * float((vc1 ** 2).sum())
    k0 = 0.5 * (m * u0 * u0).sum(-1)
    k1 = 0.5 * (m * u1 * u1).sum(-1)
    if not (k_int > 0 and k0.sum() > 0):
        return None, f"no internal kinetic energy left ({k_int:.4g} kJ/mol)"
    u1 = u1.copy()
    for z in np.unique(types):
        sel = types == z
        if k1[sel].sum() <= 0:
            return None, f"species {label(z)} has no predicted kinetic energy"
        a = math.sqrt(k_int * k0[sel].sum() / k0.sum() / k1[sel].sum())
        if not (1.0 / maxRescale <= a <= maxRescale):
            return None, f"species {label(z)} rescale factor {a:.4g} outside [{1 / maxRescale:.3g}, {maxRescale:.3g}]"
        u1[sel] *= a
    u1 -= (m * u1).sum(0) / M
    u1 *= math.sqrt(k_int / (0.5 * float((m * u1 * u1).sum())))
    return vc1 + u1, None


def speciesTemperatures(v: np.ndarray, masses: np.ndarray, types: np.ndarray,
                        label: Callable[[int], str]) -> Dict[str, float]:
    """Kinetic temperature of each species, K: sum(m v^2) / (3 N_s k_B), keyed by ``label(species id)``."""
    ke2 = (masses[:, None] * np.asarray(v) ** 2).sum(-1)
    out = {}
    for z in sorted(set(types.tolist())):
        sel = types == z
        out[label(z)] = float(ke2[sel].sum() / (3 * sel.sum() * KB))
    return out
