"""Training a FlashMD model on pairs from data.py.

Loss per batch (targets in the model's dimensionless mass-scaled units, see modelfile.py):

    L = mean |a - dq sqrt(m) / (stride s)|^2 + mean |b - p' / sqrt(m) / s|^2 + energyWeight * L_E
    L_E = mean over frames of log(1 + ((V(q_pred) + K(p_pred) - H(q, p)) / (sqrt(N) k T))^2)     (energyTarget "total")
    L_E = mean over frames of log(1 + ((V(q_pred) - V(q + dq)) / (sqrt(N) k T))^2)                 ("potential")

with s = momentumScale, plus optionally bondWeight * L_B + angleWeight * L_A, the stiff bonds' and angles' errors
as energies (their second-order energy cost),

    L_B = mean over frames and bonds (i, j, k) of      k/2 (|r_ij(q + dq_pred)| - |r_ij(q + dq)|)^2 / kT
    L_A = mean over frames and angles (i, j, l, k) of  k (cos theta_ijl(q + dq_pred) - cos theta_ijl(q + dq))^2 / kT

(bonds: the System's HarmonicBondForce, energy k/2 (r - r0)^2; angles: CustomAngleForce "k*(cos(theta)-cos0)^2", the CG
priors' form; bonded atoms are not wrapped apart, as OpenMM's states keep molecules whole). A position error along
a stiff coordinate costs potential energy that the integrator's rescale then takes from the momenta (or, when the
prediction is too relaxed, gives to them: the configurations cool), while the position MSE treats all directions
alike. Optionally symplecticWeight * L_S, the mean squared defect of the symplectic form under the stride
(:func:`symplectic_defect`, per 6N phase-space dimensions): an H-conserving stride keeps the canonical distribution
only if it also keeps phase-space volume, and the learned CG strides contract it (examples/benchmarks/
flashmd_cg_jacobian.py). Optionally also kineticWeight * L_K (see :func:`species_kinetic_loss`), which penalizes a
wrong kinetic energy per species in the predicted state (off by default; an option against equipartition errors, not
validated: for the shipped water model the held-out one-stride ratio is already 0.995 for H and 1.003 for O). V comes from the System through an OpenMM Context (forward: energy, backward: -forces), so
the energy term uses exactly the potential the integrator's rescaling will use. It is switched on after 20 % of
the iterations (ramped in by 40 %), once predicted structures are sane. "total" asks for the conserved H, which the
network can also meet by moving kinetic into potential energy (predicted structures too high on stiff bonds, which the
integrator's rescale then pays for from the momenta, stride after stride: examples/benchmarks/flashmd_cg_rejections.py);
"potential" asks for the true end point's potential energy, so that the momentum term alone sets K. Augmentation: each frame is
time-reversed with probability 1/2 ((q', -p') -> (q, -p)) and the batch is rotated by a random O(3) matrix.

Resumable: every ``checkpointInterval`` iterations the model, optimizer, schedule and iteration count are saved to
``<output>.state``; running again with the same output continues from there.
"""

import math
import os
import time
from typing import Optional

import numpy as np
import torch

from openmmflash.cg.torchpriors import ANGLE_EXPRESSION, angleCosines, bondLengths
from openmmflash.distributed import DataParallelLoss

from openmmflash.integrators.training.data import readDatasets
from openmmflash.integrators.training.trainingoptions import (LossWeights, NetworkOptions, TrainingOptions,
                                                              resolveOptions)
from openmmflash.integrators.network.modelfile import FlashMDModel, saveModel
from openmmflash.integrators.engine.stepper import batch_edges, random_rotation
from openmmflash.units import BOLTZMANN_KJ as KB
from openmmflash.integrators.network.modelfile import loadModel



class _OpenMMPotential(torch.autograd.Function):
    """V(q) for frames q [B, N, 3] (nm) from an OpenMM Context; gradient -F. Returns [B] kJ/mol.

    box: [B, 3, 3] nm periodic box vectors of each frame (datasets merged over densities), or None to keep the
    Context's box.
    """

    @staticmethod
    def forward(ctx, q, context, box=None):
        from openmm import unit
        energies, grads = [], []
        boxes = None if box is None else box.detach().cpu().double().numpy()
        for i, frame in enumerate(q.detach().cpu().double().numpy()):
            if boxes is not None:
                context.setPeriodicBoxVectors(*boxes[i])
            context.setPositions(frame)
            # autograd.Function.forward runs with grad mode off, and a TorchForce (e.g. FlashSchNet) evaluated by
            # OpenMM on this thread inherits it and cannot take its own gradient for the forces: switch it back on.
            with torch.enable_grad():
                st = context.getState(getEnergy=True, getForces=True)
            energies.append(st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
            grads.append(-st.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))
        ctx.save_for_backward(torch.as_tensor(np.stack(grads), dtype=q.dtype, device=q.device))
        return torch.as_tensor(energies, dtype=q.dtype, device=q.device)

    @staticmethod
    def backward(ctx, grad_out):
        (grad,) = ctx.saved_tensors
        return grad_out.view(-1, 1, 1) * grad, None, None


def makeEnergyContext(system, platform: Optional[str] = None):
    """A Context for energy evaluations during training (any integrator; it is never stepped)."""
    import openmm as mm
    integ = mm.VerletIntegrator(0.001)
    if platform:
        try:
            return mm.Context(system, integ, mm.Platform.getPlatformByName(platform))
        except Exception as err:  # e.g. CUDA platform missing: the energy term still works on the default
            import warnings
            warnings.warn(f"OpenMM platform {platform!r} unavailable ({err}); using the default platform")
            integ = mm.VerletIntegrator(0.001)
    return mm.Context(system, integ)


def symplectic_defect(f, Q: torch.Tensor, P: torch.Tensor, numFrames: int, generator=None) -> torch.Tensor:
    """Per-frame defect of the symplectic form under a map f: (Q, P) -> (Q', P') ([B N, 3] each, canonical
    coordinates up to constant factors, e.g. q sqrt(m) and p / sqrt(m)): [B] tensor of

        omega(J u, J w) - omega(u, w),    omega(a, b) = sum_i (a_Q,i . b_P,i - a_P,i . b_Q,i) over a frame,

    for random normal tangent vectors u, w. It is 0 for a symplectic map (the true dynamics), which preserves
    phase-space volume; a map that contracts volume (log |det J| < 0) cannot keep it 0. J u is computed by the
    double-vjp trick (J u = d/dv (u . J^T v)), so the result is differentiable in f's parameters."""
    Q = Q.detach().requires_grad_(True)
    P = P.detach().requires_grad_(True)
    Q1, P1 = f(Q, P)
    out = torch.cat([Q1, P1], 0)
    v = torch.zeros_like(out, requires_grad=True)
    gQ, gP = torch.autograd.grad(out, (Q, P), grad_outputs=v, create_graph=True)

    def tangent():
        return torch.randn(Q.shape, generator=generator, dtype=Q.dtype).to(Q.device)

    def push(uQ, uP):  # J (uQ, uP), split back into (Q', P') parts
        (Ju,) = torch.autograd.grad((gQ * uQ).sum() + (gP * uP).sum(), v, create_graph=True)
        return Ju[:Q.shape[0]], Ju[Q.shape[0]:]

    def omega(aQ, aP, bQ, bP):
        return ((aQ * bP).sum(-1) - (aP * bQ).sum(-1)).view(numFrames, -1).sum(1)

    uQ, uP, wQ, wP = tangent(), tangent(), tangent(), tangent()
    return omega(*push(uQ, uP), *push(wQ, wP)) - omega(uQ, uP, wQ, wP)


def species_kinetic_loss(b, tb, type_idx, numFrames: int):
    """Per-species kinetic-energy ratio loss, mean over frames and species of (K_s(pred) / K_s(target) - 1)^2.

    b, tb: predicted and target momenta in mass-scaled units p / sqrt(m) [B*N, 3] (|.|^2 / 2 is the kinetic energy
    up to a common factor); type_idx [B*N] species indices. Invariant under rotations of b and tb together.
    """
    k_pred = (b * b).sum(-1).view(numFrames, -1)
    k_true = (tb * tb).sum(-1).view(numFrames, -1)
    types = type_idx.view(numFrames, -1)[0]
    terms = []
    for t in torch.unique(types):
        sel = types == t
        terms.append(((k_pred[:, sel].sum(1) / k_true[:, sel].sum(1).clamp_min(1e-12) - 1.0) ** 2).mean())
    return torch.stack(terms).mean()


def _plain(x) -> float:
    return float(x.value_in_unit(x.unit)) if hasattr(x, "unit") else float(x)


def harmonicBonds(system, device=None):
    """(atoms [K, 2] int64, k [K] kJ/mol/nm^2) of every HarmonicBondForce bond of ``system`` (energy k/2 (r - r0)^2)."""
    import openmm as mm
    rows = []
    for force in system.getForces():
        if isinstance(force, mm.HarmonicBondForce):
            for b in range(force.getNumBonds()):
                i, j, _, k = force.getBondParameters(b)
                rows.append(((i, j), _plain(k)))
    return _coordinates(rows, 2, device)


def cosineAngles(system, device=None):
    """(atoms [K, 3] int64, k [K] kJ/mol) of every angle of a CustomAngleForce with energy ANGLE_EXPRESSION."""
    import openmm as mm
    rows = []
    for force in system.getForces():
        if isinstance(force, mm.CustomAngleForce) and force.getEnergyFunction().replace(" ", "") == ANGLE_EXPRESSION:
            names = [force.getPerAngleParameterName(p) for p in range(force.getNumPerAngleParameters())]
            for a in range(force.getNumAngles()):
                i, j, l, params = force.getAngleParameters(a)
                rows.append(((i, j, l), float(params[names.index("k")])))
    return _coordinates(rows, 3, device)


def _coordinates(rows, width: int, device):
    """Rows ((atom indices), force constant) -> (atoms [K, width] int64, k [K] float32) on ``device``."""
    atoms = torch.tensor([r[0] for r in rows], dtype=torch.int64, device=device).reshape(-1, width)
    return atoms, torch.tensor([r[1] for r in rows], dtype=torch.float32, device=device)


def stiff_coordinate_loss(q1: torch.Tensor, err: torch.Tensor, coords, kind: str, kT: torch.Tensor) -> torch.Tensor:
    """L_B (``kind`` "bonds", coords from :func:`harmonicBonds`) or L_A ("angles", :func:`cosineAngles`) of the module
    docstring: q1 = q + dq [B, N, 3] nm (true end point), err = dq_pred - dq [B, N, 3] nm, kT [B] kJ/mol; 0-d."""
    atoms, k = coords
    if kind == "bonds":
        return (0.5 * k * (bondLengths(q1 + err, atoms) - bondLengths(q1, atoms)) ** 2 / kT.view(-1, 1)).mean()
    return (k * (angleCosines(q1 + err, atoms) - angleCosines(q1, atoms)) ** 2 / kT.view(-1, 1)).mean()


class Trainer:
    """Holds data on the device and runs optimisation steps; see :func:`train` for the parameters (``network``,
    ``training``, ``weights`` and their fields as keywords; without them a Trainer schedules 1000 iterations)."""

    def __init__(self, data, model: Optional[FlashMDModel] = None, network: Optional[NetworkOptions] = None,
                 training: Optional[TrainingOptions] = None, weights: Optional[LossWeights] = None, system=None,
                 energyPlatform=None, device=None, restride: bool = False, **options):
        network, training, weights = resolveOptions(network, training, weights,
                                                    {"training": TrainingOptions(iterations=1000)}, **options)
        channels, numLayers, numRBF, cutoff = network.channels, network.numLayers, network.numRBF, network.cutoff
        lr, batchSize, seed, iterations = training.lr, training.batchSize, training.seed, training.iterations
        validationFraction = training.validationFraction
        energyWeight, energyTarget, kineticWeight = weights.energyWeight, weights.energyTarget, weights.kineticWeight
        bondWeight, angleWeight, symplecticWeight = weights.bondWeight, weights.angleWeight, weights.symplecticWeight
        self.networkOptions, self.trainingOptions, self.lossWeights = network, training, weights
        data = readDatasets(data)
        self.meta = data["meta"]
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        g = torch.Generator().manual_seed(seed)
        self.generator = g
        masses = np.asarray(data["masses"], dtype=np.float64)
        types = np.asarray(data["types"])
        species = sorted(set(types.tolist()))
        species_masses = [float(masses[types == z][0]) for z in species]
        for z, mz in zip(species, species_masses):
            if not np.allclose(masses[types == z], mz):
                raise ValueError(f"species {z} has masses {sorted(set(masses[types == z].tolist()))} amu in the "
                                 "dataset; a FlashMD model needs exactly one mass per species. Regenerate the data "
                                 "with types that separate these masses (or with equal masses).")
        kind = self.meta.get("speciesKind", "element")
        labels = self.meta.get("speciesLabels")
        labels = None if not labels else [labels.get(str(z), f"bead{z}") for z in species]
        stride = float(self.meta["stride"])
        sqrt_m = np.sqrt(masses)[None, :, None]
        momentum_scale = float(np.sqrt(np.mean((data["p0"] / sqrt_m) ** 2)))
        if model is None:
            q_first = torch.as_tensor(np.asarray(data["q0"][:1]), dtype=torch.float64)
            box_first = torch.as_tensor(np.asarray(data["box"][:1]), dtype=torch.float64)
            src, _, _ = batch_edges(q_first, box_first if self.meta.get("periodic", True) else None, cutoff)
            neighbor_norm = max(1.0, round(src.shape[0] / q_first.shape[1], 1))
            model = FlashMDModel(species, species_masses, stride, momentum_scale,
                                 dict(channels=channels, num_layers=numLayers, num_rbf=numRBF, cutoff=cutoff,
                                      neighbor_norm=neighbor_norm), speciesKind=kind, speciesLabels=labels)
        elif model.species != species or model.speciesKind != kind or (abs(model.stride - stride) > 1e-9
                                                                         and not restride):
            raise ValueError(f"the model (stride {model.stride} ps, {model.speciesKind} species {model.species}) does "
                             f"not match the dataset (stride {stride} ps, {kind} species {species})"
                             + ("; to warm-start from a model of another stride, pass restride=True (CLI --restride)"
                                if model.species == species and model.speciesKind == kind else ""))
        elif abs(model.stride - stride) > 1e-9:
            # warm start from another stride: the network predicts mean velocities dq/stride and momenta, which
            # change smoothly with the stride, so only the recorded stride changes
            model.stride = stride
        self.model = model.to(self.device).float()
        self.type_idx = model.typeIndices(types).to(self.device)
        P = data["q0"].shape[0]
        perm = torch.randperm(P, generator=g).numpy()
        nval = max(1, int(round(validationFraction * P))) if P > 1 else 0
        self.val_idx, self.train_idx = perm[:nval], perm[nval:]
        f32 = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32, device=self.device)  # noqa: E731
        self.q0, self.p0, self.dq, self.p1 = (f32(data[k]) for k in ("q0", "p0", "dq", "p1"))
        self.box = f32(data["box"])
        self.periodic = bool(self.meta.get("periodic", True))  # datasets of non-periodic Systems store zero boxes
        self.temperature = f32(data["temperature"])
        self.masses = f32(masses)
        self.sqrt_m = torch.sqrt(self.masses).view(1, -1, 1)
        self.batchSize = int(batchSize)
        self.energyWeight = float(energyWeight)
        self.energyTarget = energyTarget
        self.kineticWeight = float(kineticWeight)
        self.lastKinetic = None
        self.symplecticWeight = float(symplecticWeight)
        # stiff-coordinate terms: {kind: (weight, coordinates)}
        self.stiff = {}
        for kind, name, weight, find, what in (
                ("bonds", "bondWeight", bondWeight, harmonicBonds, "HarmonicBondForce bonds"),
                ("angles", "angleWeight", angleWeight, cosineAngles,
                 f"CustomAngleForce angles with energy {ANGLE_EXPRESSION}")):
            if weight <= 0:
                continue
            if system is None:
                raise ValueError(f"{name} > 0 needs the System (system=...) for its {what}")
            coords = find(system, self.device)
            if coords[0].shape[0] == 0:
                raise ValueError(f"{name} > 0, but the System has no {what}")
            self.stiff[kind] = (float(weight), coords)
        self.context = makeEnergyContext(system, energyPlatform) if (system is not None and energyWeight > 0) \
            else None
        if energyWeight > 0 and system is None:
            raise ValueError("energyWeight > 0 needs the System (system=...) to evaluate the potential energy")
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=0.0)
        # DistributedDataParallel in a torch.distributed process group (torchrun): every rank draws the same batch
        # and its augmentation and takes its part; one process otherwise.
        self.parallel = DataParallelLoss(self.model, self.loss)
        if self.parallel.worldSize > 1 and self.symplecticWeight > 0 and self.batchSize % self.parallel.worldSize:
            raise ValueError(f"the symplectic term draws random tangents per process: with symplecticWeight > 0 the "
                             f"batch size ({self.batchSize}) must be a multiple of the {self.parallel.worldSize} "
                             "processes, so that every process draws as many and their random streams stay equal")
        self.iterations = int(iterations)
        self.lr = float(lr)
        self.iteration = 0
        self.history = []
        self.maxSeconds = None
        self.startTime = time.time()
        self._clock = None

    def _lr(self) -> float:
        """1 % linear warm-up, then cosine decay to 1 % of the peak."""
        warm = max(1, self.iterations // 100)
        if self.iteration < warm:
            return self.lr * (self.iteration + 1) / warm
        t = min(1.0, (self.iteration - warm) / max(1, self.iterations - warm))
        if self.maxSeconds:
            t = max(t, min(1.0, self._elapsed() / self.maxSeconds))
        return self.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t)))

    def _box(self, idx):
        """Boxes [B, 3, 3] of frames ``idx``, or None for a non-periodic System (no minimum image)."""
        return self.box[idx] if self.periodic else None

    def _batch(self, idx, augment: bool):
        q0, p0, dq, p1 = self.q0[idx], self.p0[idx], self.dq[idx], self.p1[idx]
        if augment:  # time reversal: (q1, -p1) -> (q0, -p0)
            rev = (torch.rand(len(idx), generator=self.generator) < 0.5).to(self.device).view(-1, 1, 1)
            q0, p0, dq, p1 = (torch.where(rev, q0 + dq, q0), torch.where(rev, -p1, p0), torch.where(rev, -dq, dq),
                              torch.where(rev, -p0, p1))
        return q0, p0, dq, p1

    def loss(self, idx, augment: bool = True, part: Optional[slice] = None):
        """Loss terms for frames ``idx``: (total, position MSE, momentum MSE, energy term) as tensors; with ``part``
        those of the frames ``idx[part]`` after the whole batch's augmentation was drawn (data-parallel training;
        the symplectic term's random tangents are then drawn per part, which changes its value, not its mean)."""
        model = self.model
        q0, p0, dq, p1 = self._batch(idx, augment)
        if part is not None:
            idx, q0, p0, dq, p1 = idx[part], q0[part], p0[part], dq[part], p1[part]
        B, N, _ = q0.shape
        src, dst, edge_vec = batch_edges(q0, self._box(idx), model.cutoff)
        pin = p0
        if augment:
            R = random_rotation(self.generator, dtype=torch.float32).to(self.device)
            edge_vec, pin, dq, p1 = edge_vec @ R.T, p0 @ R.T, dq @ R.T, p1 @ R.T
        s = model.momentumScale
        x = (pin / self.sqrt_m / s).reshape(B * N, 3)
        a, b = model.normalized(self.type_idx.repeat(B), x, src, dst, edge_vec)
        ta = (dq * self.sqrt_m / (model.stride * s)).reshape(B * N, 3)
        tb = (p1 / self.sqrt_m / s).reshape(B * N, 3)
        lq = ((a - ta) ** 2).mean()
        lp = ((b - tb) ** 2).mean()
        total = lq + lp
        if self.kineticWeight > 0:
            lk = species_kinetic_loss(b, tb, self.type_idx.repeat(B), B)
            self.lastKinetic = float(lk.detach())
            total = total + self.kineticWeight * lk
        if self.symplecticWeight > 0 and torch.is_grad_enabled():  # validation reports symplecticDefect instead
            ls = (self._symplecticDefect(x, src, dst, edge_vec, B) ** 2).mean() / (6 * N)
            total = total + self.symplecticWeight * ls
        if self.stiff:
            # in the (rotated) frame of the targets: lengths and angles do not depend on it
            q1 = (q0 @ R.T if augment else q0) + dq
            err = (a.reshape(B, N, 3) - ta.reshape(B, N, 3)) * (model.stride * s) / self.sqrt_m
            for kind, (w, coords) in self.stiff.items():
                total = total + w * stiff_coordinate_loss(q1, err, coords, kind, KB * self.temperature[idx])
        le = torch.zeros((), device=self.device)
        weight = self._energyWeightNow() if augment else 0.0
        if self.context is not None and weight > 0:
            # Energy of the predicted state vs the energy of the start (rotation undone: V needs the lab frame).
            dq_pred = (a.reshape(B, N, 3) * model.stride * s / self.sqrt_m)
            p_pred = b.reshape(B, N, 3) * s * self.sqrt_m
            if augment:
                dq_pred, p_pred = dq_pred @ R, p_pred @ R
            box = self._box(idx)
            V1 = _OpenMMPotential.apply((q0 + dq_pred).double(), self.context, box)
            kT = KB * self.temperature[idx].double()
            if self.energyTarget == "potential":
                with torch.no_grad():  # the true end point (dq in the lab frame: the rotation is undone)
                    dq_lab = dq @ R if augment else dq
                    excess = V1 - _OpenMMPotential.apply((q0 + dq_lab).double(), self.context, box)
            else:
                K1 = (p_pred.double() ** 2 / (2 * self.masses.double().view(1, -1, 1))).sum((1, 2))
                with torch.no_grad():
                    V0 = _OpenMMPotential.apply(q0.double(), self.context, box)
                    K0 = (p0.double() ** 2 / (2 * self.masses.double().view(1, -1, 1))).sum((1, 2))
                excess = V1 + K1 - V0 - K0
            # log1p keeps early, wildly wrong predictions (overlapping atoms, V ~ 1e10) from dominating.
            le = torch.log1p((excess / (math.sqrt(N) * kT)) ** 2).mean().float()
        return total + weight * le, lq, lp, le

    def _symplecticDefect(self, x, src, dst, edge_vec, B: int) -> torch.Tensor:
        """symplectic_defect of the network's stride in the coordinates the network sees: P = p / (sqrt(m) s) = x
        and Q = q sqrt(m) / (stride s), so that Q' - Q = a and P' = b (edges follow Q; [B])."""
        model = self.model
        n = x.shape[0]
        to_q = (model.stride * model.momentumScale / self.sqrt_m).reshape(1, -1, 1).expand(B, -1, -1).reshape(n, 1)
        types = self.type_idx.repeat(B)

        def stride(Q, P):
            dq = Q * to_q  # displacement from the start, nm (Q measured from the start)
            a, b = model.normalized(types, P, src, dst, edge_vec + dq[src] - dq[dst])
            return Q + a, b

        return symplectic_defect(stride, torch.zeros_like(x), x, B, self.generator)

    def _elapsed(self) -> float:
        """Seconds since ``startTime``; in a process group the largest over the ranks at the current step's start,
        so that the time-based schedule and stop are the same on every rank."""
        return self._clock if self._clock is not None else time.time() - self.startTime

    def _progress(self) -> float:
        t = self.iteration / max(1, self.iterations)
        if self.maxSeconds:
            t = max(t, self._elapsed() / self.maxSeconds)
        return min(1.0, t)

    def _energyWeightNow(self) -> float:
        """The energy term is switched on after 20 % of training and ramped to full weight by 40 %."""
        return self.energyWeight * min(1.0, max(0.0, (self._progress() - 0.2) / 0.2))

    def trainStep(self) -> float:
        idx = self.train_idx[torch.randint(len(self.train_idx), (self.batchSize,), generator=self.generator).numpy()]
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr()
        self.model.train()
        parallel = self.parallel
        if self.maxSeconds and parallel.worldSize > 1:
            self._clock = parallel.total(time.time() - self.startTime, op="max")
        total = parallel(idx, True, parallel.part(len(idx)))[0] * parallel.weight(len(idx))
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.iteration += 1
        return parallel.total(float(total.detach()) / parallel.worldSize)  # the global batch's loss

    @torch.no_grad()
    def validate(self) -> dict:
        """Metrics on the held-out pairs: per-species RMSE of dq (nm) and p' (amu nm/ps), with the free-flight
        baseline (dq = p stride / m, p' = p) for comparison, and the normalized losses."""
        self.model.eval()
        model = self.model
        types = self.type_idx.cpu().numpy()
        err = {"dq": [], "p": [], "dq0": [], "p0": [], "k": [], "k1": [], "bonds": [], "angles": []}
        lq = lp = 0.0
        for start in range(0, len(self.val_idx), self.batchSize):
            idx = self.val_idx[start:start + self.batchSize]
            _, q_l, p_l, _ = self.loss(idx, augment=False) if self.context is None else self._noenergy(idx)
            lq += float(q_l) * len(idx)
            lp += float(p_l) * len(idx)
            q0, p0, dq, p1 = self._batch(idx, False)
            B, N, _ = q0.shape
            src, dst, ev = batch_edges(q0, self._box(idx), model.cutoff)
            a, b = model.normalized(self.type_idx.repeat(B), (p0 / self.sqrt_m / model.momentumScale).reshape(
                B * N, 3), src, dst, ev)
            dq_pred = a.reshape(B, N, 3) * model.stride * model.momentumScale / self.sqrt_m
            p_pred = b.reshape(B, N, 3) * model.momentumScale * self.sqrt_m
            err["dq"].append(((dq_pred - dq) ** 2).sum(-1).cpu())
            err["p"].append(((p_pred - p1) ** 2).sum(-1).cpu())
            err["dq0"].append(((p0 / self.masses.view(1, -1, 1) * model.stride - dq) ** 2).sum(-1).cpu())
            err["p0"].append(((p0 - p1) ** 2).sum(-1).cpu())
            err["k"].append((p_pred ** 2).sum(-1).cpu() / self.masses.cpu())
            err["k1"].append((p1 ** 2).sum(-1).cpu() / self.masses.cpu())
            for kind, (_, coords) in self.stiff.items():  # summed over the coordinates, kJ/mol per frame
                ones = torch.ones(B, device=self.device)
                err[kind].append(stiff_coordinate_loss(q0 + dq, dq_pred - dq, coords, kind, ones).view(1).cpu()
                                 * coords[0].shape[0] * B)
        n = max(1, len(self.val_idx))
        out = {"numValidationPairs": int(len(self.val_idx)), "lossPosition": lq / n, "lossMomentum": lp / n}
        if len(self.val_idx):
            out["symplecticDefect"] = self._validationDefect()
        cat = {k: torch.cat(v).numpy() for k, v in err.items() if v}
        for kind, key in (("bonds", "bondLengthErrorEnergy_kJmol"), ("angles", "angleErrorEnergy_kJmol")):
            if kind in cat:
                out[key] = float(cat[kind].sum() / n)
        # keys _Z6 (atomic number) or _bead21 (bead type); bead models also per mass (_m12.011), to compare with
        # element models of the same System
        tag = "bead" if model.speciesKind == "cgBead" else "Z"
        groups = [(f"{tag}{z}", types == ti) for ti, z in enumerate(model.species)]
        if model.speciesKind == "cgBead":
            mass = np.asarray(model.speciesMasses)[types]
            groups += [(f"m{mz:g}", mass == mz) for mz in sorted(set(model.speciesMasses))]
        for key, sel in groups:
            out[f"rmse_dq_nm_{key}"] = float(np.sqrt(cat["dq"][:, sel].mean()))
            out[f"rmse_p_{key}"] = float(np.sqrt(cat["p"][:, sel].mean()))
            out[f"baseline_rmse_dq_nm_{key}"] = float(np.sqrt(cat["dq0"][:, sel].mean()))
            out[f"baseline_rmse_p_{key}"] = float(np.sqrt(cat["p0"][:, sel].mean()))
            # predicted / true kinetic energy of the species after the stride (< 1: regression shrinkage)
            out[f"kinetic_ratio_{key}"] = float(cat["k"][:, sel].sum() / cat["k1"][:, sel].sum())
        return out

    def _validationDefect(self) -> float:
        """RMS of symplectic_defect / sqrt(6 N) over the first held-out batch (0: volume-preserving stride)."""
        idx = self.val_idx[:self.batchSize]
        q0, p0, _, _ = self._batch(idx, False)
        B, N, _ = q0.shape
        src, dst, ev = batch_edges(q0, self._box(idx), self.model.cutoff)
        x = (p0 / self.sqrt_m / self.model.momentumScale).reshape(B * N, 3)
        with torch.enable_grad():
            d = self._symplecticDefect(x, src, dst, ev, B).detach()
        return float(torch.sqrt((d ** 2).mean() / (6 * N)))

    def _noenergy(self, idx):
        ctx, self.context = self.context, None
        try:
            return self.loss(idx, augment=False)
        finally:
            self.context = ctx

    def stateDict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "iteration": self.iteration, "history": self.history, "generator": self.generator.get_state()}

    def loadStateDict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.iteration = int(state["iteration"])
        self.history = list(state["history"])
        # a state loaded with map_location=cuda carries the (CPU) generator's state as a CUDA tensor
        self.generator.set_state(state["generator"].to("cpu", torch.uint8))


def train(dataset, output: str, network: Optional[NetworkOptions] = None, training: Optional[TrainingOptions] = None,
          weights: Optional[LossWeights] = None, system=None, energyPlatform=None, device=None,
          checkpointInterval: int = 200, resume: bool = True, progress: bool = True, maxMinutes: Optional[float] = None,
          logInterval: int = 50, initialModel=None, restride: bool = False, **options) -> FlashMDModel:
    """Train a FlashMD model on a dataset (path or dict from data.generatePairs, or a list of them with the same
    particles, merged) and write it to ``output``.

    Parameters: ``network`` (a NetworkOptions: channels, numLayers, numRBF, cutoff in nm), ``training`` (a
    TrainingOptions: iterations, batchSize in frames, lr peak with warm-up and cosine decay, seed,
    validationFraction), ``weights`` (a LossWeights: the optional energy term, energyWeight with the OpenMM
    ``system``, energyTarget "total" or "potential", see the module docstring; the stiff-coordinate terms
    bondWeight, angleWeight on the ``system``'s HarmonicBondForce bonds and CG-prior angles; the per-species
    kinetic-energy term kineticWeight; the symplectic term symplecticWeight); any of their fields may be given as
    keywords instead (they replace the objects' fields). ``maxMinutes`` stops early, still validating and saving.
    Returns the trained model; its ``provenance`` and ``validation`` are stored in the file. ``initialModel`` (a
    FlashMDModel, or a shipped name or file for modelfile.loadModel) fine-tunes that model instead of a new one (its
    species must match the data, and its stride too unless ``restride``, which warm-starts a model of the data's
    stride; ``network`` is then ignored); its provenance is kept under ``initialProvenance``.
    """
    network, training, weights = resolveOptions(network, training, weights, **options)
    iterations = training.iterations
    data = readDatasets(dataset)
    init_name = None
    if initialModel is not None and not isinstance(initialModel, FlashMDModel):
        init_name, initialModel = str(initialModel), loadModel(initialModel)
    init_provenance = dict(initialModel.provenance) if initialModel is not None else None
    init_stride = initialModel.stride if initialModel is not None else None
    trainer = Trainer(data, model=initialModel, network=network, training=training, weights=weights, system=system,
                      energyPlatform=energyPlatform, device=device, restride=restride)
    state_path = output + ".state"
    if resume and os.path.exists(state_path):
        trainer.loadStateDict(torch.load(state_path, map_location=trainer.device, weights_only=False))
    trainer.maxSeconds = 60 * maxMinutes if maxMinutes else None
    trainer.startTime = time.time()
    main = trainer.parallel.rank == 0  # in a process group rank 0 alone writes the state and the model
    bar = None
    if progress and main:
        from tqdm import tqdm
        bar = tqdm(total=iterations, initial=trainer.iteration, desc="flashmd-train", unit="it")
    t0 = time.time()
    running = None
    while trainer.iteration < iterations:
        value = trainer.trainStep()
        running = value if running is None else 0.98 * running + 0.02 * value
        if trainer.iteration % logInterval == 0:
            trainer.history.append((trainer.iteration, running))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{running:.4g}")
        if checkpointInterval and trainer.iteration % checkpointInterval == 0 and main:
            torch.save(trainer.stateDict(), state_path + ".tmp")
            os.replace(state_path + ".tmp", state_path)
        if maxMinutes is not None and trainer._elapsed() > 60 * maxMinutes:
            break
    if bar is not None:
        bar.close()
    model = trainer.model
    if not main:
        return model
    torch.save(trainer.stateDict(), state_path + ".tmp")
    os.replace(state_path + ".tmp", state_path)
    model.validation = trainer.validate()
    model.provenance = {"dataset": data["meta"], "iterations": trainer.iteration, "batchSize": training.batchSize,
                        "lr": training.lr, "energyWeight": weights.energyWeight, "energyTarget": weights.energyTarget,
                        "bondWeight": weights.bondWeight, "angleWeight": weights.angleWeight,
                        "kineticWeight": weights.kineticWeight, "symplecticWeight": weights.symplecticWeight,
                        "seed": training.seed, "device": str(trainer.device),
                        "torch": torch.__version__, "trainSeconds": round(time.time() - t0, 1),
                        "lossHistory": trainer.history[-200:]}
    if initialModel is not None:
        model.provenance["initialModel"] = init_name or "FlashMDModel object"
        model.provenance["initialProvenance"] = init_provenance
        model.provenance["initialStride"] = init_stride
    saveModel(model.cpu(), output)
    return model
