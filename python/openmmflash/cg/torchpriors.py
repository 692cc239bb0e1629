"""The prior terms of a CG System (the forces :mod:`openmmflash.cg.priors` adds) as one PyTorch energy function.

Read back from the System's forces, so it is exactly what OpenMM evaluates (units nm, kJ/mol, radians)::

    HarmonicBondForce                     k/2 (r - x0)^2            (OpenMM's k is twice the prior's)
    CustomBondForce  "k*(r-x0)^2+v0"      k (r - x0)^2 + v0
    CustomBondForce  "<c>*(sigma/r)^6"    c (sigma / r)^6           (repulsion)
    CustomAngleForce "k*(cos(theta)-cos0)^2"
    CustomTorsionForce "v0 + s1*sin(1*theta) + c1*cos(1*theta) + ..."        (dihedrals, any degree)
    CustomTorsionForce "k*dphi^2; dphi = theta - phi0 - 2 pi floor(...)"   (impropers, wrapped to [-pi, pi))

theta of a torsion i-j-k-l is OpenMM's: atan2(|b2| b1 . (b2 x b3), (b1 x b2) . (b2 x b3)), b1 = x_j - x_i, etc.
Used where the prior energy must run next to a PyTorch model without an OpenMM call (the FlashMD energy rescale
inside a CUDA graph, integrators/energyeval.py). Non-periodic Systems only.
"""

import math
import re
from typing import Callable, List

import torch
from torch import Tensor

PRIOR_PREFIX = "FlashSchNet prior"
ANGLE_EXPRESSION = "k*(cos(theta)-cos0)^2"  # the priors' angle energy (CustomAngleForce, spaces removed)


def bondLengths(x: Tensor, ij: Tensor) -> Tensor:
    """|x_j - x_i| [..., K] of the pairs ij [K, 2] in positions x [..., N, 3]."""
    return torch.linalg.vector_norm(x[..., ij[:, 1], :] - x[..., ij[:, 0], :], dim=-1)


def angleCosines(x: Tensor, t: Tensor) -> Tensor:
    """cos theta [..., K] of the angles t [K, 3] (vertex t[:, 1]) in positions x [..., N, 3]."""
    a, b = x[..., t[:, 0], :] - x[..., t[:, 1], :], x[..., t[:, 2], :] - x[..., t[:, 1], :]
    return (a * b).sum(-1) / (torch.linalg.vector_norm(a, dim=-1) * torch.linalg.vector_norm(b, dim=-1))


def _torsion(x: Tensor, t: Tensor) -> Tensor:
    """OpenMM's dihedral angle of the quadruplets t [T, 4] in x [N, 3], radians in (-pi, pi]."""
    b1, b2, b3 = x[t[:, 1]] - x[t[:, 0]], x[t[:, 2]] - x[t[:, 1]], x[t[:, 3]] - x[t[:, 2]]
    n1, n2 = torch.cross(b1, b2, dim=-1), torch.cross(b2, b3, dim=-1)
    y = torch.linalg.vector_norm(b2, dim=-1) * (b1 * n2).sum(-1)
    return torch.atan2(y, (n1 * n2).sum(-1))


def _terms(force, device, dtype) -> Callable[[Tensor], Tensor]:
    """One prior force as a function (positions [N, 3] nm) -> 0-d energy, kJ/mol."""
    import openmm as mm
    as_t = lambda a, kind=dtype: torch.tensor(a, dtype=kind, device=device)  # noqa: E731
    if force.usesPeriodicBoundaryConditions():
        raise ValueError(f"{force.getName()} uses periodic boundary conditions; the PyTorch priors support "
                         "non-periodic Systems only")
    if isinstance(force, mm.HarmonicBondForce):
        rows = [force.getBondParameters(b) for b in range(force.getNumBonds())]
        ij = as_t([r[:2] for r in rows], torch.long)
        x0 = as_t([r[2].value_in_unit(mm.unit.nanometer) for r in rows])
        k = as_t([r[3].value_in_unit(mm.unit.kilojoule_per_mole / mm.unit.nanometer ** 2) for r in rows])
        return lambda x: (0.5 * k * (bondLengths(x, ij) - x0) ** 2).sum()
    expr = force.getEnergyFunction().replace(" ", "") if hasattr(force, "getEnergyFunction") else ""
    if isinstance(force, mm.CustomBondForce):
        rows = [force.getBondParameters(b) for b in range(force.getNumBonds())]
        ij = as_t([r[:2] for r in rows], torch.long)
        p = as_t([list(r[2]) for r in rows])
        if expr == "k*(r-x0)^2+v0":
            return lambda x: (p[:, 0] * (bondLengths(x, ij) - p[:, 1]) ** 2 + p[:, 2]).sum()
        m = re.fullmatch(r"([0-9.eE+-]+)\*\(sigma/r\)\^6", expr)
        if m:
            c = float(m.group(1))
            return lambda x: (c * (p[:, 0] / bondLengths(x, ij)) ** 6).sum()
    if isinstance(force, mm.CustomAngleForce) and expr == ANGLE_EXPRESSION:
        rows = [force.getAngleParameters(a) for a in range(force.getNumAngles())]
        t = as_t([r[:3] for r in rows], torch.long)
        p = as_t([list(r[3]) for r in rows])
        return lambda x: (p[:, 0] * (angleCosines(x, t) - p[:, 1]) ** 2).sum()
    if isinstance(force, mm.CustomTorsionForce):
        rows = [force.getTorsionParameters(a) for a in range(force.getNumTorsions())]
        t = as_t([r[:4] for r in rows], torch.long)
        p = as_t([list(r[4]) for r in rows])
        names = [force.getPerTorsionParameterName(i) for i in range(force.getNumPerTorsionParameters())]
        degree = (len(names) - 1) // 2
        series = "+".join(f"s{n}*sin({n}*theta)+c{n}*cos({n}*theta)" for n in range(1, degree + 1))
        if expr == ("v0+" + series if degree else "v0") and names == ["v0"] + [
                f"{s}{n}" for n in range(1, degree + 1) for s in ("s", "c")]:
            n = as_t(list(range(1, degree + 1)))

            def dihedrals(x):
                phi = _torsion(x, t)[:, None] * n
                return (p[:, 0] + (p[:, 1::2] * torch.sin(phi) + p[:, 2::2] * torch.cos(phi)).sum(-1)).sum()
            return dihedrals
        if expr.startswith("k*dphi^2;dphi=theta-phi0-") and names == ["k", "phi0"]:
            def impropers(x):
                d = _torsion(x, t) - p[:, 1]
                d = d - 2 * math.pi * torch.floor(d / (2 * math.pi) + 0.5)
                return (p[:, 0] * d ** 2).sum()
            return impropers
    raise ValueError(f"force {force.getName()!r} ({type(force).__name__}, energy {expr!r}) is not a prior term this "
                     "module knows (openmmflash.cg.priors); evaluate it with OpenMM instead")


def priorEnergyFunction(system, device="cpu", dtype=torch.float64) -> Callable[[Tensor], Tensor]:
    """E_prior(positions [N, 3] nm, ``dtype`` on ``device``) -> 0-d tensor, kJ/mol: the sum of every force of
    ``system`` whose name starts with "FlashSchNet prior". Differentiable (forces = -grad)."""
    parts: List[Callable[[Tensor], Tensor]] = [_terms(f, device, dtype) for f in system.getForces()
                                               if f.getName().startswith(PRIOR_PREFIX)]

    def energy(x: Tensor) -> Tensor:
        total = torch.zeros((), dtype=x.dtype, device=x.device)
        for part in parts:
            total = total + part(x)
        return total
    return energy
