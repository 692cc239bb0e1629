"""Prior parameters by Boltzmann inversion of reference CG statistics (the CGSchNet recipe).

Each prior term is fitted to the distribution of its own coordinate, pooled over all terms that share a parameter
key (see ``openmmflash.cg.priors`` for the key scheme and the functional forms). With kT in kcal/mol and lengths in
Angstrom (the model units)::

    bonds      p(d) ~ d^2 exp(-U/kT), U = k (d - x0)^2      -> weighted quadratic fit of -kT ln(p(d) / d^2)
    angles     p(cos t) ~ exp(-U/kT), U = k (cos t - cos0)^2  (the sin t Jacobian is absorbed by d cos t)
               -> cos0 = <cos t>, k = kT / (2 var(cos t))
    dihedrals  p(phi) ~ exp(-U/kT), U = v0 + sum_n k1_n sin(n phi) + k2_n cos(n phi)
               -> weighted least squares of -kT ln p(phi) on a histogram (pseudo-count for empty bins)
    impropers  U = k (phi - phi0)^2 -> phi0 = circular mean, k = kT / (2 var(phi - phi0))
    repulsion  (sigma / d)^6 per pair of bead names, sigma = the ``repulsionQuantile`` of the observed distances

Torsion angles follow OpenMM's convention (``dihedralAngles``; checked against CustomTorsionForce in the tests).
"""

import math
from collections import defaultdict
from typing import Dict, Optional

import numpy as np

from openmmflash.cg.mapping import CGMapping
from openmmflash.cg.priors import enumerateTerms, termKeys
from openmmflash.units import BOLTZMANN_KCAL



def kT(temperature: float) -> float:
    """kT in kcal/mol at ``temperature`` K."""
    return BOLTZMANN_KCAL * float(temperature)


def bondLengths(positions: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Distances (frames, terms) of index pairs (terms, 2) in positions (frames, n, 3)."""
    return np.linalg.norm(positions[:, pairs[:, 1]] - positions[:, pairs[:, 0]], axis=-1)


def angleCosines(positions: np.ndarray, triples: np.ndarray) -> np.ndarray:
    """cos of the angle at the middle bead, (frames, terms)."""
    u = positions[:, triples[:, 0]] - positions[:, triples[:, 1]]
    v = positions[:, triples[:, 2]] - positions[:, triples[:, 1]]
    return np.sum(u * v, -1) / (np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1))


def dihedralAngles(positions: np.ndarray, quads: np.ndarray) -> np.ndarray:
    """Torsion angles in radians, (frames, terms), in OpenMM's convention (``theta`` of CustomTorsionForce)."""
    p0, p1, p2, p3 = (positions[:, quads[:, k]] for k in range(4))
    b0, b1, b2 = p1 - p0, p2 - p1, p3 - p2
    n1 = np.cross(b0, b1)
    n2 = np.cross(b1, b2)
    m1 = np.cross(n1, b1 / np.linalg.norm(b1, axis=-1, keepdims=True))
    x = np.sum(n1 * n2, -1)
    y = np.sum(m1 * n2, -1)
    return -np.arctan2(y, x)


def fitBond(d: np.ndarray, kt: float, bins: int = 60) -> dict:
    """{"x0", "k"} of U = k (d - x0)^2 from distances (any shape)."""
    d = np.asarray(d, dtype=np.float64).ravel()
    lo, hi = np.quantile(d, [0.001, 0.999])
    hist, edges = np.histogram(d, bins=bins, range=(lo, hi))
    centres = 0.5 * (edges[1:] + edges[:-1])
    keep = hist > 0
    u = -kt * np.log(hist[keep] / centres[keep] ** 2)
    a, b, _ = np.polyfit(centres[keep], u, 2, w=np.sqrt(hist[keep]))
    if not a > 0:  # a flat or inverted profile: fall back to the moments
        return {"x0": float(d.mean()), "k": float(kt / (2 * d.var()))}
    return {"x0": float(-b / (2 * a)), "k": float(a)}


def fitAngle(cosines: np.ndarray, kt: float) -> dict:
    """{"cos0", "k"} of U = k (cos t - cos0)^2."""
    c = np.asarray(cosines, dtype=np.float64).ravel()
    return {"cos0": float(c.mean()), "k": float(kt / (2 * max(c.var(), 1e-8)))}


def fitDihedral(phi: np.ndarray, kt: float, degree: int = 3, bins: int = 36, pseudoCount: float = 1.0) -> dict:
    """{"v0", "k1": [degree], "k2": [degree]} of U = v0 + sum_n k1_n sin(n phi) + k2_n cos(n phi)."""
    phi = np.asarray(phi, dtype=np.float64).ravel()
    hist, edges = np.histogram(phi, bins=bins, range=(-math.pi, math.pi))
    centres = 0.5 * (edges[1:] + edges[:-1])
    density = (hist + pseudoCount) / (hist.sum() + bins * pseudoCount) / (edges[1] - edges[0])
    u = -kt * np.log(density)
    columns = [np.ones_like(centres)]
    for n in range(1, degree + 1):
        columns += [np.sin(n * centres), np.cos(n * centres)]
    a = np.stack(columns, 1)
    w = np.sqrt(hist + pseudoCount)
    coef, *_ = np.linalg.lstsq(a * w[:, None], u * w, rcond=None)
    u_min = (np.stack([np.ones(720)] + [f(n * np.linspace(-math.pi, math.pi, 720)) for n in range(1, degree + 1)
                                        for f in (np.sin, np.cos)], 1) @ coef).min()
    return {"v0": float(coef[0] - u_min), "k1": [float(c) for c in coef[1::2]], "k2": [float(c) for c in coef[2::2]]}


def fitImproper(phi: np.ndarray, kt: float) -> dict:
    """{"phi0", "k"} of U = k (phi - phi0)^2 (phi - phi0 wrapped to [-pi, pi))."""
    phi = np.asarray(phi, dtype=np.float64).ravel()
    phi0 = float(np.arctan2(np.sin(phi).mean(), np.cos(phi).mean()))
    dev = (phi - phi0 + math.pi) % (2 * math.pi) - math.pi
    return {"phi0": phi0, "k": float(kt / (2 * max(np.mean(dev ** 2), 1e-8)))}


def _canonical_key(keys, residueSpecific: bool) -> str:
    """The key of a term: residue-specific or generic, the lexicographically smaller orientation."""
    chosen = [k for k in keys if (":" in k) == residueSpecific] or [k for k in keys if ":" not in k]
    return min(chosen)


def fitPriors(cgTopology, positions: np.ndarray, temperature: float, mapping="5bead",
              residueSpecificDihedrals: bool = True, dihedralDegree: int = 3, repulsionExclusion: int = 2,
              repulsionQuantile: float = 0.001, minSamples: int = 200, lengthScale: float = 10.0) -> dict:
    """Prior parameters (model units: Angstrom, kcal/mol) from CG positions (frames, n, 3) in nm.

    Bonds, angles and impropers are keyed by bead names ("N-CA", "CA-C-N", "N-CB-C-CA"); dihedrals by bead names
    and the residue of their first CA ("C-N-CA-C:GLY") when ``residueSpecificDihedrals``, with a generic fallback
    key fitted on all terms; repulsion by the two bead names ("CA-O").
    """
    mapping = mapping if isinstance(mapping, CGMapping) else CGMapping(mapping)
    pos = np.asarray(positions, dtype=np.float64) * lengthScale
    if pos.ndim != 3 or pos.shape[1] != cgTopology.getNumAtoms():
        raise ValueError(f"positions must have shape (frames, {cgTopology.getNumAtoms()}, 3), got {pos.shape}")
    if pos.shape[0] < 10:
        raise ValueError(f"{pos.shape[0]} frames are too few for Boltzmann inversion; record at least a few hundred")
    kt = kT(temperature)
    atoms = list(cgTopology.atoms())
    terms = enumerateTerms(cgTopology, mapping.bondedPairs(cgTopology), repulsionExclusion)
    priors: Dict[str, dict] = {"repulsionExclusion": int(repulsionExclusion)}

    def grouped(kind, residueSpecific=False):
        groups = defaultdict(list)
        for k, t in enumerate(terms[kind]):
            groups[_canonical_key(termKeys(atoms, t, kind), residueSpecific)].append(k)
        return groups

    if terms["bonds"]:
        d = bondLengths(pos, np.array(terms["bonds"]))
        priors["bonds"] = {key: fitBond(d[:, idx], kt) for key, idx in grouped("bonds").items()}
    if terms["angles"]:
        c = angleCosines(pos, np.array(terms["angles"]))
        priors["angles"] = {key: fitAngle(c[:, idx], kt) for key, idx in grouped("angles").items()}
    if terms["dihedrals"]:
        phi = dihedralAngles(pos, np.array(terms["dihedrals"]))
        fits = {key: fitDihedral(phi[:, idx], kt, dihedralDegree) for key, idx in grouped("dihedrals").items()}
        if residueSpecificDihedrals:
            for key, idx in grouped("dihedrals", True).items():
                if ":" in key and phi[:, idx].size >= minSamples:
                    fits[key] = fitDihedral(phi[:, idx], kt, dihedralDegree)
        priors["dihedrals"] = fits
    if terms["impropers"]:
        phi = dihedralAngles(pos, np.array(terms["impropers"]))
        priors["impropers"] = {key: fitImproper(phi[:, idx], kt) for key, idx in grouped("impropers").items()}
    if terms["repulsion"]:
        pairs = np.array(terms["repulsion"])
        d = bondLengths(pos, pairs)
        groups = defaultdict(list)
        for k, (i, j) in enumerate(pairs):
            groups["-".join(sorted((atoms[i].name, atoms[j].name)))].append(k)
        priors["repulsion"] = {key: {"sigma": float(np.quantile(d[:, idx], repulsionQuantile))}
                               for key, idx in groups.items()}
    return priors


def priorEnergyTable(priors: dict) -> Dict[str, int]:
    """Number of parameter keys per term kind (a short summary for logs)."""
    return {kind: len(priors.get(kind, {})) for kind in ("bonds", "angles", "dihedrals", "impropers", "repulsion")}


def checkPriors(priors: dict, required: Optional[tuple] = ("bonds", "angles")) -> None:
    """Refuse a prior dict with non-finite parameters or without the required term kinds."""
    for kind in required or ():
        if not priors.get(kind):
            raise ValueError(f"the priors have no {kind!r} terms; fit them from reference data (cg-train does)")
    for kind, table in priors.items():
        if not isinstance(table, dict):
            continue
        for key, p in table.items():
            values = [v for x in p.values() for v in (x if isinstance(x, list) else [x])]
            if not all(np.isfinite(values)):
                raise ValueError(f"prior {kind} {key!r} has non-finite parameters {p}")
