"""The OpenMM-boundary module shared by the TorchForce and the PythonForce: nm and kJ/mol in, model units inside.

``forward(positions [N, 3] nm, box [3, 3] nm | None) -> (energy [] kJ/mol, forces [N, 3] kJ/mol/nm)``, in the
dtype of ``positions`` (float32 on CUDA, float64 on Reference/CPU). The model runs in its own precision
(``precision="single" | "double"``); forces are -dE/dr by autograd through the ``torch.ops.openmmflash`` ops.

With ``outputBuffers`` (what the TorchForce uses) every call writes its results into the same two module buffers
and returns them. openmm-torch 1.5 captures one CUDA graph per ``includeForces`` value (steps: forces; an
energy-only ``getState``, a reporter or the minimizer: no forces) but keeps one pair of output tensors, those of the
graph captured last; if the graphs return different tensors, every step after an energy-only evaluation adds the
forces of that evaluation again (stale forces: the runs heat up). Returning the same storage from both graphs makes
whichever graph ran last the one that is read.
"""

import os
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from openmmflash import mlcg  # noqa: F401  (lets loadModel read mlcg files)
from openmmflash.cg.inputchecks import requireCGTopology, warnUnseenResidues
from openmmflash.cg.mapping import CGMapping, beadTypesFromTopology
from openmmflash.plugin.forceoptions import FILTER_MODES, FlashSchNetForceOptions
from openmmflash.plugin.opsmodel import FlashSchNetOps
from openmmflash.schnet.filtertable import FilterTableOptions, attachFilterTable, buildFilterTable
from openmmflash.schnet.model import loadModel

PRECISIONS = {"single": torch.float32, "double": torch.float64}


class FlashSchNetForceModule(nn.Module):
    """TorchScript-able wrapper of a FlashSchNet model for one System.

    Parameters
    ----------
    model : FlashSchNet
        The potential (a copy, converted to ``precision``, runs as a ``FlashSchNetOps`` on the custom ops).
    types : torch.Tensor
        Bead types of the modelled particles, shape (B * n,), int64.
    numParticles : int
        Particles in the System (positions OpenMM passes in).
    numReplicas : int
        B, equal contiguous replicas among the modelled particles.
    atomSubset : list of int or None
        System particle indices the model acts on (None: all, in order).
    periodic : bool
        Whether OpenMM passes box vectors (System uses periodic boundary conditions).
    neighborCapacity : int
        Fixed neighbor-list length (0: exact list).
    precision : str
        "single" or "double": the dtype the model computes in.
    outputBuffers : bool
        Return the results in two persistent buffers (overwritten by the next call); see the module docstring.
    filterMode : str or None
        "table": filters interpolated from cubic Hermite tables built here (``openmmflash.schnet.filtertable``;
        inference with fixed weights, the fast MD path); "exact": the filter MLP per pair (training, checks).
        None: "table" in single precision, falling back to "exact" (with a warning, ``fallbackExact`` = 1 in
        ``filter_table_info``) for a model whose fp32 tables cannot meet the tolerance; "exact" in double precision.
    filterTable : FilterTableOptions or None
        Tolerance and storage of the tables (default ``FilterTableOptions()``; fp64 storage in double precision).
        The table's nodes, spacing and measured errors are in ``filter_table_info``.

    Without periodic boundaries each replica is translated to near its mean position (in OpenMM's dtype, before
    the conversion to model units and precision): the model is translation invariant, and float32 coordinates far
    from the origin would otherwise lose the digits the pair distances need (mlcg's chignolin frames 15-23 nm from
    the origin, given in float32 nm: 6.4e-5 relative force error in float32 untranslated, 5.7e-6 translated).
    """

    filter_table_info: Dict[str, float]
    _table_versions: List[int]

    def __init__(self, model, types: Tensor, numParticles: int, numReplicas: int = 1,
                 atomSubset: Optional[List[int]] = None, periodic: bool = False, neighborCapacity: int = 0,
                 precision: str = "single", outputBuffers: bool = False, filterMode: Optional[str] = None,
                 filterTable: Optional[FilterTableOptions] = None):
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        self._table_fallback = filterMode is None
        if filterMode is None:
            filterMode = "table" if precision == "single" else "exact"
        if filterMode not in FILTER_MODES:
            raise ValueError(f"filterMode must be one of {list(FILTER_MODES)}, got {filterMode!r}")
        self.dtype = PRECISIONS[precision]
        self.model = FlashSchNetOps.fromModel(model).to(self.dtype).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.register_buffer("types", types.to(torch.int64).clone())
        modelled = int(types.shape[0])
        self.use_subset = atomSubset is not None
        subset = torch.arange(modelled) if atomSubset is None else torch.as_tensor(list(atomSubset), dtype=torch.int64)
        self.register_buffer("subset", subset)
        self.num_particles = int(numParticles)
        self.num_replicas = int(numReplicas)
        self.periodic = bool(periodic)
        self.capacity = int(neighborCapacity)
        self.length_scale = float(model.config.lengthScale)
        self.energy_scale = float(model.config.energyScale)
        self.output_buffers = bool(outputBuffers)
        self.register_buffer("energy_out", torch.zeros(()))
        self.register_buffer("forces_out", torch.zeros((self.num_particles, 3)))
        self.filter_mode = filterMode
        self.model.filter_mode = "exact"
        self.filter_table_info = {}
        self._table_options = filterTable
        self._table_versions = []
        if filterMode == "table":
            self.refreshTables()

    @torch.jit.unused
    def refreshTables(self) -> None:
        """(Re)build the filter tables from the model's current weights; call after changing them (eager calls
        also rebuild on their own when the filter weights were modified in place)."""
        options = self._table_options or FilterTableOptions(storage="fp64" if self.dtype == torch.float64 else "fp32")
        fallback = self._table_fallback and options.storage != "fp16"
        table = buildFilterTable(self.model, options, warn=not fallback)
        info = {k: float(v) for k, v in table.info().items() if k != "storage"}
        info["storageBits"] = float(table.table.element_size() * 8)
        self._table_versions = self._weight_versions()
        if fallback and not table.meetsTolerance:
            warnings.warn(f"FlashSchNet: the best filter table ({table.nodes} nodes) has relative error "
                          f"{max(table.errorValue, table.errorDerivative):.2e} > tolerance {table.tolerance:.1e} "
                          "for this model's filters; using exact filters (slower). Pass filterMode='table' to keep "
                          "the table, or filterTable=FilterTableOptions(tolerance=...) to accept it", stacklevel=3)
            self.filter_mode = "exact"
            self.model.filter_mode = "exact"
            info["fallbackExact"] = 1.0
        else:
            attachFilterTable(self.model, table)
            self.filter_mode = "table"
            info["fallbackExact"] = 0.0
        self.filter_table_info = info

    @torch.jit.unused
    def _weight_versions(self) -> List[int]:
        return [int(p._version) for p in self.model.parameters()]

    @torch.jit.unused
    def _refresh_if_stale(self) -> None:
        if self._weight_versions() != self._table_versions:
            self.refreshTables()

    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        if positions.shape[0] != self.num_particles:
            raise ValueError(f"FlashSchNet force was created for {self.num_particles} particles but the System "
                             f"has {positions.shape[0]}; create the force for this System (topology/beadTypes, "
                             "replicas and atomSubset must match it)")
        if self.filter_mode == "table" and not torch.jit.is_scripting():
            self._refresh_if_stale()
        pos = positions
        if self.use_subset:
            pos = pos.index_select(0, self.subset)
        if not self.periodic:
            # Translation invariance: centre each replica in OpenMM's dtype first (see the class docstring). The
            # shift is the mean rounded to 1/8 nm: few significant bits, so subtracting it is exact and distances
            # between exactly representable positions do not change.
            shaped = pos.reshape(self.num_replicas, -1, 3)
            shift = torch.round(shaped.mean(dim=1, keepdim=True).detach() * 8.0) / 8.0
            pos = (shaped - shift).reshape(-1, 3)
        # Scale to model units before rounding to the model's dtype: nm -> Angstrom in float32 would add a rounding
        # error of the order of the float32 spacing of the coordinates.
        pos = (pos * self.length_scale).to(self.dtype).detach()
        pos.requires_grad_(True)
        box_model: Optional[Tensor] = None
        if self.periodic:
            if box is None:
                raise ValueError("the force is periodic but OpenMM passed no box vectors")
            box_model = box.to(self.dtype) * self.length_scale
        # Forces come from autograd: call with grad mode on (TorchForce does; eager callers use enable_grad).
        energy = self.model(pos, self.types, self.num_replicas, box_model, self.capacity).sum()
        grads = torch.autograd.grad([energy], [pos])
        grad = grads[0]
        if grad is None:
            grad = torch.zeros_like(pos)
        forces = grad * (-self.energy_scale * self.length_scale)
        if self.use_subset:
            forces = torch.zeros((self.num_particles, 3), dtype=forces.dtype,
                                 device=forces.device).index_copy(0, self.subset, forces)
        energy = (energy * self.energy_scale).detach().to(positions.dtype)
        forces = forces.detach().to(positions.dtype)
        if not self.output_buffers:
            return energy, forces
        if self.forces_out.dtype != positions.dtype or self.forces_out.device != positions.device:
            # First call (eager, before any graph capture): buffers in OpenMM's dtype on its device.
            self.energy_out = torch.zeros((), dtype=positions.dtype, device=positions.device)
            self.forces_out = torch.zeros((self.num_particles, 3), dtype=positions.dtype, device=positions.device)
        self.energy_out.copy_(energy)
        self.forces_out.copy_(forces)
        return self.energy_out, self.forces_out


def _model(model):
    return loadModel(model) if isinstance(model, (str, os.PathLike)) else model


def resolveBeadTypes(model, topology=None, beadTypes: Optional[Sequence[int]] = None,
                     atomSubset: Optional[Sequence[int]] = None) -> List[int]:
    """Bead types of the modelled particles, from an explicit list or the topology and the model's type table."""
    if (topology is None) == (beadTypes is None):
        raise ValueError("give exactly one of topology (types from the model's bead-type table) or beadTypes")
    if beadTypes is None:
        table = model.metadata.get("beadTypes")
        if not table:
            raise ValueError("the model has no bead-type table (metadata['beadTypes']); pass beadTypes explicitly")
        requireCGTopology(topology, CGMapping(model.metadata.get("mapping") or "5bead"), "the FlashSchNet force")
        warnUnseenResidues(model, topology)
        types = beadTypesFromTopology(topology, table)
        if atomSubset is not None:
            types = [types[i] for i in atomSubset]
    else:
        types = [int(t) for t in beadTypes]
    bad = sorted({t for t in types if not 0 <= t < model.config.numBeadTypes})
    if bad:
        raise ValueError(f"bead types {bad[:10]} are unknown to the model, which has types 0 .. "
                         f"{model.config.numBeadTypes - 1}")
    return types


def createFlashSchNetModule(model, topology=None, beadTypes=None,
                            forceOptions: Optional[FlashSchNetForceOptions] = None, outputBuffers: bool = False,
                            **options) -> FlashSchNetForceModule:
    """The eager OpenMM-boundary module (nm, kJ/mol) shared by the TorchForce and the PythonForce.

    ``forceOptions`` (a ``FlashSchNetForceOptions``) and/or its fields as keywords; the module uses replicas,
    atomSubset, numParticles, periodic, precision, neighborCapacity, filterMode and filterTable (see
    ``FlashSchNetForceModule``). ``outputBuffers``: see ``FlashSchNetForceModule``.
    """
    opts = FlashSchNetForceOptions.resolve(forceOptions, **options)
    replicas, atomSubset, numParticles, periodic = opts.replicas, opts.atomSubset, opts.numParticles, opts.periodic
    model = _model(model)
    types = resolveBeadTypes(model, topology, beadTypes, atomSubset)
    if replicas < 1 or len(types) % replicas != 0:
        raise ValueError(f"{len(types)} modelled particles cannot form {replicas} equal replicas")
    n = len(types) // replicas
    if any(types[k] != types[k % n] for k in range(len(types))):
        raise ValueError("replicas must be identical copies (same bead types in the same order); build the "
                         "System with openmmflash.plugin.replicas.replicate")
    if numParticles is None:
        numParticles = topology.getNumAtoms() if topology is not None and atomSubset is None else len(types)
    if atomSubset is not None:
        atomSubset = [int(i) for i in atomSubset]
        if len(atomSubset) != len(types) or not all(0 <= i < numParticles for i in atomSubset):
            raise ValueError("atomSubset must list one valid particle index per modelled bead")
    elif numParticles != len(types):
        allAtom = (" If the System is all-atom, build a CG System for the CG topology instead: "
                   "openmmflash.createCGSystem(cgTopology, model)." if numParticles > len(types) else "")
        raise ValueError(f"the System has {numParticles} particles but {len(types)} bead types were given; pass "
                         f"atomSubset to model only some particles.{allAtom}")
    if periodic is None:
        periodic = topology is not None and topology.getPeriodicBoxVectors() is not None
    return FlashSchNetForceModule(model, torch.tensor(types, dtype=torch.int64), numParticles, replicas, atomSubset,
                                  periodic, opts.neighborCapacity, opts.precision, outputBuffers, opts.filterMode,
                                  opts.filterTable)
