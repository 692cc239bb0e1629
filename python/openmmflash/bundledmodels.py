"""The models shipped with openmm-flash, by name.

>>> import openmmflash
>>> openmmflash.bundledModels()                       # doctest: +SKIP
{'3a4r': 'FlashSchNet', 'chignolin': 'FlashSchNet', 'chignolin-cg-20fs': 'FlashMD', ...}

A FlashSchNet name works wherever a FlashSchNet model file does (``loadModel``, ``createCGSystem``,
``addFlashSchNetForce``, ``MLPotential("flashschnet", modelPath=...)``, ``openmmflash demo --model``,
``openmmflash cg-validate``); a FlashMD name wherever a FlashMD model file does (``FlashMDIntegrator(model=...)`` and
its thermostatted versions, ``loadFlashMDModel``, ``openmmflash quantize``, ``flashmd-train --init``).
"""

from typing import Dict, Optional

KINDS = ("FlashSchNet", "FlashMD")


def bundledModels(kind: Optional[str] = None) -> Dict[str, str]:
    """Names of the bundled models mapped to their kind: "FlashSchNet" (a CG force field, used as a force) or
    "FlashMD" (a learned integrator, used as ``model=`` of the FlashMD integrators).

    Parameters
    ----------
    kind : "FlashSchNet" or "FlashMD", optional
        Only models of this kind.
    """
    from openmmflash.integrators.modelfile import availableModels
    from openmmflash.schnet.modelfile import bundledModels as flashSchNetModels

    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS} or None, not {kind!r}")
    names = {}
    if kind in (None, "FlashSchNet"):
        names.update({name: "FlashSchNet" for name in flashSchNetModels()})
    if kind in (None, "FlashMD"):
        names.update({name: "FlashMD" for name in availableModels()})
    return dict(sorted(names.items()))
