"""Option sets of FlashMD training: the network of a new model, the optimisation, and the weights of the loss terms.

``train`` and ``Trainer`` take them as objects (``network=``, ``training=``, ``weights=``) or their fields as
keywords (``train(data, out, channels=32, lr=3e-4, energyWeight=0.1, ...)``); keywords replace the fields of the
objects. The loss terms are defined in ``openmmflash.integrators.training.trainer``.

>>> weights = LossWeights(energyWeight=0.1, energyTarget="potential")
>>> train(data, "model.pt", network=NetworkOptions(channels=32), weights=weights, system=system)  # doctest: +SKIP
"""

import dataclasses
from dataclasses import dataclass
from typing import Tuple

ENERGY_TARGETS = ("total", "potential")


@dataclass
class NetworkOptions:
    """Size of a new FlashMD (PaiNN) network; ignored when training starts from a model."""

    channels: int = 64      # feature width
    numLayers: int = 3      # message-passing layers
    numRBF: int = 16        # radial basis functions
    cutoff: float = 0.5     # neighbour cutoff, nm

    def __post_init__(self):
        for name in ("channels", "numLayers", "numRBF"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"NetworkOptions.{name} must be >= 1, got {getattr(self, name)}")
        if not self.cutoff > 0:
            raise ValueError(f"NetworkOptions.cutoff must be > 0 nm, got {self.cutoff}")


@dataclass
class TrainingOptions:
    """Optimisation: AdamW with a 1 % linear warm-up to ``lr`` and cosine decay over ``iterations``."""

    iterations: int = 2000
    batchSize: int = 4               # frames per step
    lr: float = 1e-3                 # peak learning rate
    seed: int = 0                    # data split, augmentation and initialization
    validationFraction: float = 0.1  # pairs held out for validation

    def __post_init__(self):
        if int(self.iterations) < 0 or int(self.batchSize) < 1:
            raise ValueError(f"TrainingOptions needs iterations >= 0 and batchSize >= 1, got {self.iterations} and "
                             f"{self.batchSize}")
        if not 0 <= self.validationFraction < 1:
            raise ValueError(f"TrainingOptions.validationFraction must lie in [0, 1), got {self.validationFraction}")


@dataclass
class LossWeights:
    """Weights of the optional loss terms (0: off); the energy, bond and angle terms need the OpenMM System."""

    energyWeight: float = 0.0
    energyTarget: str = "total"      # "total" (H) or "potential" (V at the true end point)
    kineticWeight: float = 0.0
    bondWeight: float = 0.0
    angleWeight: float = 0.0
    symplecticWeight: float = 0.0

    def __post_init__(self):
        if self.energyTarget not in ENERGY_TARGETS:
            raise ValueError(f"energyTarget must be 'total' or 'potential', got {self.energyTarget!r}")


OPTION_SETS = (("network", NetworkOptions), ("training", TrainingOptions), ("weights", LossWeights))


def resolveOptions(network=None, training=None, weights=None, defaults=None,
                   **keywords) -> Tuple[NetworkOptions, TrainingOptions, LossWeights]:
    """(network, training, weights): the given objects (default: ``defaults[name]``, else the class defaults) with
    the fields named in ``keywords`` replaced; an unknown keyword raises a TypeError listing the known ones."""
    given = {"network": network, "training": training, "weights": weights}
    left = dict(keywords)
    out = []
    for name, cls in OPTION_SETS:
        base = given[name]
        if base is not None and not isinstance(base, cls):
            raise TypeError(f"{name} must be a {cls.__name__}, got {type(base).__name__}")
        if base is None:
            base = (defaults or {}).get(name) or cls()
        fields = {f.name for f in dataclasses.fields(cls)}
        mine = {k: left.pop(k) for k in list(left) if k in fields}
        out.append(dataclasses.replace(base, **mine))
    if left:
        known = [f.name for _, cls in OPTION_SETS for f in dataclasses.fields(cls)]
        raise TypeError(f"unknown FlashMD training options {sorted(left)}; known: {known}")
    return tuple(out)
