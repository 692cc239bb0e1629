"""``FlashSchNetForceOptions``: how a FlashSchNet force is built for one System, as one object that travels from the
public entry points (``createCGSystem``, ``MLPotential.createSystem``, ``addFlashSchNetForce``) to the force backends.

>>> options = FlashSchNetForceOptions(precision="double", filterMode="exact")
>>> addFlashSchNetForce(system, "chignolin", topology, forceOptions=options)           # doctest: +SKIP
>>> addFlashSchNetForce(system, "chignolin", topology, precision="double", filterMode="exact")   # doctest: +SKIP

Every entry point also takes the fields as keywords; keywords replace the fields of a ``forceOptions`` object.
"""

import dataclasses
from dataclasses import dataclass
from typing import Optional, Sequence

from openmmflash.schnet.filtertable import FilterTableOptions

PRECISION_NAMES = ("single", "double")
FILTER_MODES = ("table", "exact")
# The fields FlashSchNetForceModule uses (the rest are properties of the TorchForce or the PythonForce).
MODULE_FIELDS = ("replicas", "atomSubset", "numParticles", "periodic", "precision", "neighborCapacity", "filterMode",
                 "filterTable")


@dataclass
class FlashSchNetForceOptions:
    """Options of a FlashSchNet force (OpenMM units and names).

    Parameters
    ----------
    replicas : int
        Number of identical, contiguous, non-interacting copies among the modelled particles.
    atomSubset : sequence of int, optional
        Indices of the System particles the model acts on (default: all).
    numParticles : int, optional
        Particles in the System (default: the System's, the topology's, or the number of bead types).
    periodic : bool, optional
        Use periodic boundary conditions (default: whether the topology has a box, else whether the System is
        periodic).
    precision : {"single", "double"}
        Arithmetic of the model.
    neighborCapacity : int
        Fixed neighbor-list length (0: exact list, resized every step).
    useCUDAGraphs, CUDAGraphWarmupSteps
        CUDA-graph capture of the force (CUDA only; the TorchForce's properties, or the PythonForce's own graph).
    forceGroup : int
        Force group of the force.
    filterMode : {"table", "exact"}, optional
        "table" (default in single precision): filters from cubic Hermite tables built from the model's weights;
        "exact" (default in double precision): the filter MLP per pair.
    filterTable : FilterTableOptions, optional
        Error tolerance and storage of the tables.
    device : str, optional
        Torch device of the PythonForce backend (default: cuda when available); the TorchForce runs on the
        Context's device and refuses this option.
    """

    replicas: int = 1
    atomSubset: Optional[Sequence[int]] = None
    numParticles: Optional[int] = None
    periodic: Optional[bool] = None
    precision: str = "single"
    neighborCapacity: int = 0
    useCUDAGraphs: bool = False
    CUDAGraphWarmupSteps: int = 10
    forceGroup: int = 0
    filterMode: Optional[str] = None
    filterTable: Optional[FilterTableOptions] = None
    device: Optional[str] = None

    def __post_init__(self):
        if self.precision not in PRECISION_NAMES:
            raise ValueError(f"precision must be one of {sorted(PRECISION_NAMES)}, got {self.precision!r}")
        if self.filterMode is not None and self.filterMode not in FILTER_MODES:
            raise ValueError(f"filterMode must be one of {list(FILTER_MODES)}, got {self.filterMode!r}")
        if self.CUDAGraphWarmupSteps < 1:
            raise ValueError(f"CUDAGraphWarmupSteps must be >= 1, got {self.CUDAGraphWarmupSteps}")

    @classmethod
    def resolve(cls, forceOptions: Optional["FlashSchNetForceOptions"] = None, **keywords) -> "FlashSchNetForceOptions":
        """``forceOptions`` (default: all defaults) with the fields named in ``keywords`` replaced."""
        if forceOptions is not None and not isinstance(forceOptions, cls):
            raise TypeError(f"forceOptions must be a {cls.__name__}, got {type(forceOptions).__name__}; pass the "
                            "options as keywords or as FlashSchNetForceOptions(...)")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(keywords) - set(known))
        if unknown:
            raise TypeError(f"unknown FlashSchNet force options {unknown}; known options: {known}")
        return dataclasses.replace(forceOptions if forceOptions is not None else cls(), **keywords)

    def moduleKeywords(self) -> dict:
        """The fields that ``createFlashSchNetModule`` uses, as keywords."""
        return {name: getattr(self, name) for name in MODULE_FIELDS}
