"""The bundled CG protein as FlashMD sees it: one helper that builds its OpenMM System with B replicas.

Same System as the demo (openmmflash.workflows.cgsimulation.simulateCG): CGSchNet priors as native forces plus the
FlashSchNet
TorchForce (createCGSystem), B identical copies of the molecule placed on a grid (plugin/replicas.py), the native
structure stored in the model file as the start. Bead masses are element masses (N, C, O). FlashMD's species are
the bead elements (``species="element"``, the shipped models) or the FlashSchNet model's bead types
(``species="bead"``: N, C, O and a CA / CB type per residue; model files with ``speciesKind == "cgBead"``), which
an integrator cannot infer from the masses: :func:`useCGBeadTypes` hands them to it.
"""

import tempfile
from typing import Dict, List, Optional

import numpy as np
import torch  # noqa: F401  (before openmm)

from openmmflash.cg.structure import nativeStructure
from openmmflash.cg.torchpriors import PRIOR_PREFIX, priorEnergyFunction
from openmmflash.integrators.engine.densestep import denseEdges
from openmmflash.integrators.engine.energyeval import TorchEnergy
from openmmflash.integrators.engine.replicaenergy import ReplicaEnergy
from openmmflash.integrators.training.data import speciesOf
from openmmflash.plugin.cgsystem import createCGSystem
from openmmflash.plugin.fastpath import fastPathOptions
from openmmflash.plugin.opsmodel import FlashSchNetOps
from openmmflash.plugin.fastpath import neighborCapacity as capacityFor
from openmmflash.plugin.replicas import replicatePositions, replicateTopology, singleReplicaSystem
from openmmflash.plugin.torchforce import createFlashSchNetModule, resolveBeadTypes
from openmmflash.schnet.model import loadModel
from openmmflash.schnet.reference import pair_distances


def buildCGSystem(replicas: int = 1, model: str = "chignolin", removeCMMotion: bool = True,
                  platformName: Optional[str] = None, **forceOptions):
    """Returns (topology of all replicas, System, positions [B n, 3] nm, CG topology of one copy, native [n, 3] nm,
    FlashSchNet model). ``forceOptions`` go to addFlashSchNetForce (precision, useCUDAGraphs, ...). With
    ``platformName="CUDA"`` the force takes the demo's fast path (fused kernels, padded list, CUDA graphs;
    ``openmmflash.plugin.fastpath.fastPathOptions``) and the returned model is its fused-kernel copy, as ordinary CG MD runs."""
    if int(replicas) != replicas or replicas < 1:
        raise ValueError(f"replicas must be a whole number >= 1, got {replicas}")
    net = loadModel(model)
    topology, native, _ = nativeStructure(net, tempfile.mkdtemp(prefix="flashmd-cg-"))
    full = replicateTopology(topology, replicas)
    net, fast = fastPathOptions(net, native, replicas, platformName or "")
    system = createCGSystem(full, net, replicas=replicas, removeCMMotion=removeCMMotion, **dict(fast, **forceOptions))
    return full, system, replicatePositions(native, replicas), topology, native, net


def flashSchNetEnergyEvaluator(system, net, topology, replicas: int = 1, device=None, positions=None,
                               neighborCapacity: Optional[int] = None, priors: str = "openmm",
                               pairs: str = "auto"):
    """(groups, energy) for :meth:`FlashMDIntegrator.setEnergyEvaluator`: the CG System's potential energy as OpenMM's
    energy of every force group except the FlashSchNet force's, plus the FlashSchNet energy from a forward pass
    of the same model in PyTorch (no backward pass, which the TorchForce always runs for its forces).

    system : the System built by :func:`buildCGSystem`; net : its FlashSchNet model; topology : of all replicas.
    positions : [B n, 3] nm (e.g. the native structure buildCGSystem returns): on a CUDA device they size a padded
    neighbor list (``openmmflash.plugin.fastpath.neighborCapacity``, as the TorchForce's fast path), so the energy has
    fixed
    shapes and runs as a CUDA graph inside the learned step's graph (energyeval.TorchEnergy).
    neighborCapacity : the padded list's length, instead of sizing it from ``positions`` (0: exact list, no graph).
    priors : "openmm" (OpenMM evaluates every other force group) or "torch": the prior terms in PyTorch too
        (openmmflash.cg.torchpriors, equal to OpenMM's to rounding), so the rescale needs no OpenMM energy call;
        refused if the System has forces other than the priors, the FlashSchNet force and a CMMotionRemover.
    pairs : "list" (the TorchForce's path: neighbor list and fused CFConv through the ``torch.ops.openmmflash`` ops),
        "dense" (every ordered pair inside each replica, B n (n - 1) of them, and the plain PyTorch CFConv: fixed
        shapes and no opaque ops, so ``torch.compile`` can fuse the whole energy and its gradient; pairs beyond the
        cutoff have a filter of exactly 0, so the energy is the same) or "auto": "dense" on a CUDA device when
        B n (n - 1) <= DENSE_PAIRS_MAX, else "list".
    """

    forces = list(system.getForces())
    ml = [f for f in forces if f.getName() == "FlashSchNet"]
    if len(ml) != 1:
        raise ValueError(f"expected one force named 'FlashSchNet' in the System, found {len(ml)}")
    ml_group = ml[0].getForceGroup()
    others = [f for f in forces if f is not ml[0]]
    clash = [f.__class__.__name__ for f in others if f.getForceGroup() == ml_group
             and f.__class__.__name__ != "CMMotionRemover"]
    if clash:
        raise ValueError(f"forces {clash} share force group {ml_group} with the FlashSchNet force; put them in "
                         "another group so the energy can be split")
    groups = {f.getForceGroup() for f in others} - {ml_group}
    if priors not in ("openmm", "torch"):
        raise ValueError(f"priors must be 'openmm' or 'torch', got {priors!r}")
    prior_energy = None
    if priors == "torch":
        unknown = [f"{f.getName()} ({type(f).__name__})" for f in others
                   if not f.getName().startswith(PRIOR_PREFIX) and type(f).__name__ != "CMMotionRemover"]
        if unknown:
            raise ValueError(f"priors='torch' evaluates only the FlashSchNet force and its priors, but the System "
                             f"also has {unknown}; use priors='openmm' so OpenMM evaluates them")
        groups = set()
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    n = system.getNumParticles() // replicas
    if pairs == "auto":
        pairs = "dense" if torch.device(device).type == "cuda" and replicas * n * (n - 1) <= DENSE_PAIRS_MAX \
            else "list"
    if pairs not in ("list", "dense"):
        raise ValueError(f"pairs must be 'auto', 'list' or 'dense', got {pairs!r}")
    if pairs == "dense":
        neighborCapacity = 0  # no neighbor list
    elif neighborCapacity is None:
        neighborCapacity = 0
        if torch.device(device).type == "cuda" and positions is not None:
            neighborCapacity = capacityFor(net, np.asarray(positions)[:n], replicas)
    module = createFlashSchNetModule(net, topology, replicas=replicas,
                                     neighborCapacity=int(neighborCapacity)).to(device)
    module.requires_grad_(False)  # an evaluator: gradients (forces) with respect to positions only
    if priors == "torch":
        prior_energy = priorEnergyFunction(system, device)
    if module.periodic or module.use_subset:
        raise ValueError("the FlashSchNet energy evaluator supports non-periodic Systems without atomSubset only")

    flash_energy = module.model
    if pairs == "dense":  # the module's own copy of the model, switched to the plain CFConv
        flash_energy = _DenseFlashSchNet(module.model, replicas, n, module.dtype, device)

    def energy(pos):  # [N, 3] nm float64 on the device -> kJ/mol
        x = pos.to(module.dtype) * module.length_scale
        e = flash_energy(x, module.types, module.num_replicas, None, module.capacity).sum() * module.energy_scale
        return e if prior_energy is None else e.to(torch.float64) + prior_energy(pos)

    graph = torch.device(device).type == "cuda" and (module.capacity > 0 or pairs == "dense")  # fixed shapes
    return groups, TorchEnergy(energy, system.getNumParticles(), device, useCUDAGraph=graph)


def flashSchNetReplicaEnergy(system, net, topology, replicas: int, device=None) -> ReplicaEnergy:
    """The energy of each replica of the CG System (FlashSchNet plus its priors, all in PyTorch) for
    :meth:`FlashMDIntegrator.setReplicaEnergy`: the guard and the fallback then act per replica.

    system, net, topology : as :func:`flashSchNetEnergyEvaluator` (topology of all replicas). Refuses Systems with
    forces other than the priors, the FlashSchNet force and a CMMotionRemover. The FlashSchNet part is one batched
    forward pass over the k replicas asked for, the priors those of the first replica (plugin.replicas.
    singleReplicaSystem) on each; the integrator checks that the sum over replicas is the System's energy."""
    groups, _ = flashSchNetEnergyEvaluator(system, net, topology, replicas, device="cpu", priors="torch",
                                           pairs="list")  # checks the forces; evaluator itself unused
    del groups
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    B = int(replicas)
    n = system.getNumParticles() // B
    module = createFlashSchNetModule(net, topology, replicas=B, neighborCapacity=0).to(device)
    module.requires_grad_(False)
    prior_each = torch.func.vmap(priorEnergyFunction(singleReplicaSystem(system, B), device))

    def energy(x):  # [k, n, 3] nm float64 -> [k] kJ/mol
        k = x.shape[0]
        e = module.model((x.reshape(k * n, 3) * module.length_scale).to(module.dtype), module.types[:k * n], k,
                         None, 0) * module.energy_scale
        return e.to(torch.float64) + prior_each(x)

    return ReplicaEnergy(energy, B, n, device)


DENSE_PAIRS_MAX = 65536  # "auto" pairs: all ordered pairs up to this many (chignolin: 47 x 46 = 2,162)


class _DenseFlashSchNet:
    """A FlashSchNet model (FlashSchNet's call signature) over every ordered pair inside each of B replicas of n
    beads, with the plain PyTorch CFConv: fixed shapes, differentiable, compilable (a plain copy of a force
    module's ``FlashSchNetOps``)."""

    def __init__(self, model, replicas: int, n: int, dtype, device):
        self.model = model.plainCopy() if isinstance(model, FlashSchNetOps) else model
        self.src, self.dst = denseEdges(replicas, n, device)
        self.shifts = torch.zeros(self.src.shape[0], 3, dtype=dtype, device=device)

    def __call__(self, x, types, num_replicas: int, box, capacity: int):
        dist, _ = pair_distances(x, self.src, self.dst, self.shifts, self.model.cutoff)
        return self.model.atom_energies(types, dist, self.src, self.dst).reshape(num_replicas, -1).sum(1)


def cgBeadTypes(net, topology) -> List[int]:
    """FlashSchNet bead type of every bead of ``topology`` (all replicas), from the model's bead-type table: the
    species ids of a FlashMD model with ``speciesKind == "cgBead"``."""
    return [int(t) for t in resolveBeadTypes(net, topology)]


def cgBeadLabels(net) -> Dict[int, str]:
    """{bead type: name} from the FlashSchNet model's table ("N", "TYR:CA", ...; names sharing a type joined by /)."""
    names: Dict[int, List[str]] = {}
    for key, t in (net.metadata.get("beadTypes") or {}).items():
        names.setdefault(int(t), []).append(str(key))
    return {t: "/".join(sorted(keys)) for t, keys in names.items()}


def flashMDSpecies(net, topology, species: str = "element"):
    """(types [n], speciesKind, labels or None) for FlashMD data of the CG protein ``topology``.

    species : "element" (atomic numbers of the bead elements, as the shipped models) or "bead" (the FlashSchNet bead
    types, so the network can tell CA, CB and C apart)."""
    if species == "element":
        return speciesOf(topology), "element", None
    if species == "bead":
        types = cgBeadTypes(net, topology)
        labels = cgBeadLabels(net)
        return types, "cgBead", {t: labels.get(t, f"bead{t}") for t in sorted(set(types))}
    raise ValueError(f"species must be 'element' or 'bead', got {species!r}")


CG_TIMESTEP = 0.002  # ps: the step of ordinary CG MD with these models (LangevinMiddleIntegrator)


def cgFallbackSubsteps(model) -> int:
    """Velocity-Verlet substeps for a rejected stride of FlashMD ``model`` (FlashMDModel): stride / CG_TIMESTEP, so
    a fallback is the ordinary CG MD it replaces."""
    return max(1, int(round(model.stride / CG_TIMESTEP)))


def useCGBeadTypes(integrator, net, topology) -> bool:
    """If the integrator's FlashMD model uses CG bead types as species, give it the bead types of ``topology`` (all
    replicas; ``net`` the FlashSchNet model of the System) with ``setAtomTypes``. Element models are left to match
    particles by mass. Returns True when types were set."""
    if getattr(integrator.getModel(), "speciesKind", "element") != "cgBead":
        return False
    integrator.setAtomTypes(cgBeadTypes(net, topology))
    return True
