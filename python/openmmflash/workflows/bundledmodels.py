"""The models shipped with openmm-flash, by name.

>>> import openmmflash
>>> openmmflash.bundledModels()                       # doctest: +SKIP
{'3a4r': 'FlashSchNet', 'chignolin': 'FlashSchNet', 'chignolin-cg-20fs': 'FlashMD', ...}

A FlashSchNet name works wherever a FlashSchNet model file does (``loadModel``, ``createCGSystem``,
``addFlashSchNetForce``, ``MLPotential("flashschnet", modelPath=...)``, ``openmmflash demo --model``,
``openmmflash cg-validate``); a FlashMD name wherever a FlashMD model file does (``FlashMDIntegrator(model=...)`` and
its thermostatted versions, ``loadFlashMDModel``, ``openmmflash quantize``, ``flashmd-train --init``).
"""

from typing import Dict, List, Optional, Tuple

KINDS = ("FlashSchNet", "FlashMD")


def bundledModels(kind: Optional[str] = None) -> Dict[str, str]:
    """Names of the bundled models mapped to their kind: "FlashSchNet" (a CG force field, used as a force) or
    "FlashMD" (a learned integrator, used as ``model=`` of the FlashMD integrators).

    Parameters
    ----------
    kind : "FlashSchNet" or "FlashMD", optional
        Only models of this kind.
    """
    from openmmflash.integrators.network.modelfile import availableModels
    from openmmflash.schnet.modelfile import bundledModels as flashSchNetModels

    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS} or None, not {kind!r}")
    names = {}
    if kind in (None, "FlashSchNet"):
        names.update({name: "FlashSchNet" for name in flashSchNetModels()})
    if kind in (None, "FlashMD"):
        names.update({name: "FlashMD" for name in availableModels()})
    return dict(sorted(names.items()))


def describeBundledModels() -> List[Tuple[str, str, str]]:
    """(name, kind, one-line description) of every bundled model; reads each model file (no code runs)."""
    import torch

    from openmmflash.integrators.network.modelfile import modelPath
    from openmmflash.schnet.modelfile import readModelFile, resolveModelPath

    rows = []
    for name, kind in bundledModels().items():
        if kind == "FlashSchNet":
            meta = readModelFile(resolveModelPath(name)).get("metadata", {})
            residues = sum(1 for line in meta.get("structure", "").splitlines()
                           if line.startswith("ATOM") and line[12:16].strip() == "CA")
            text = f"CG force field ({meta.get('mapping')} mapping), trained on a {residues}-residue protein"
        else:
            blob = torch.load(modelPath(name), map_location="cpu", weights_only=True)
            dataset = blob.get("provenance", {}).get("dataset", {})
            system = (dataset.get("system") or "").split(" (")[0] or f"a System of {dataset.get('numParticles')} particles"
            quantized = f", GAQ {blob['gaq']['scheme']}" if "gaq" in blob else ""
            text = f"learned integrator, {blob['stride'] * 1000:g} fs stride{quantized}, trained on {system}"
        rows.append((name, kind, text))
    return rows


def printBundledModels(args=None) -> int:
    """``openmmflash models``: the bundled models as a table."""
    rows = describeBundledModels()
    width = max(len(name) for name, _, _ in rows)
    for name, kind, text in rows:
        print(f"{name:{width}s}  {kind:11s}  {text}")
    print("\nUse a name wherever a model file goes: FlashSchNet models in createCGSystem(topology, name), "
          "addFlashSchNetForce, loadModel, `openmmflash demo --model`; FlashMD models as "
          "FlashMDLangevinIntegrator(temperature, friction, model=name).")
    return 0
