"""FlashSchNet model files (read back by ``openmmflash.schnet.model.loadModel``): configuration, weights, units, CG mapping, bead types, priors and provenance in one file.

The file is a ``torch.save`` archive of plain containers (loaded with ``weights_only=True``, so opening a model file
runs no code)::

    {"format": "openmmflash.flashschnet", "formatVersion": 1, "config": {...}, "stateDict": {...},
     "metadata": {"mapping": "5bead" | "ca" | None, "beadTypes": {"N": 0, "ALA:CA": 3, ...},
                  "priors": {...} (see openmmflash.cg.priors), "provenance": {...}, ...}}
"""

import difflib
import os
from typing import Callable, List, Optional, Tuple

import torch

FORMAT = "openmmflash.flashschnet"
FORMAT_VERSION = 1
BUNDLED_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "models")


def bundledModels():
    """Names of the models shipped inside the package."""
    if not os.path.isdir(BUNDLED_DIR):
        return []
    return sorted(f[:-3] for f in os.listdir(BUNDLED_DIR) if f.endswith(".pt"))


def resolveModelPath(pathOrName: str) -> str:
    """A model file path, or the path of a bundled model named ``pathOrName``."""
    path = os.fspath(pathOrName)
    if os.path.isfile(path):
        return path
    bundled = os.path.join(BUNDLED_DIR, f"{path}.pt")
    if os.path.sep not in path and os.path.isfile(bundled):
        return bundled
    names = bundledModels()
    close = difflib.get_close_matches(os.path.basename(path), names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise FileNotFoundError(f"no FlashSchNet model file at {path!r} and no bundled FlashSchNet model of that name "
                            f"(bundled FlashSchNet models: {', '.join(names) or 'none'}){hint} openmmflash.bundledModels() lists all "
                            "bundled models, FlashSchNet and FlashMD")


def saveModel(model, path: str, **metadata) -> None:
    """Write ``model`` to ``path``; keyword arguments update ``model.metadata`` (beadTypes, mapping, priors, ...)."""
    meta = dict(getattr(model, "metadata", {}))
    meta.update(metadata)
    state = {k: v.detach().cpu().float().clone() if v.is_floating_point() else v.detach().cpu().clone()
             for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "formatVersion": FORMAT_VERSION, "config": model.config.toDict(),
               "stateDict": state, "metadata": meta}
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(payload, tmp)
    os.replace(tmp, path)  # never leave a half-written model file behind


def readModelFile(path: str) -> dict:
    """The raw payload of a model file, with its format checked."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{path!r} is not a FlashSchNet model file ({err.__class__.__name__}: {err})") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path!r} is not a FlashSchNet model file (format tag {FORMAT!r} missing)")
    version = int(payload.get("formatVersion", -1))
    if version > FORMAT_VERSION:
        raise ValueError(f"{path!r} has model-file format version {version}, newer than this openmm-flash supports "
                         f"({FORMAT_VERSION}); upgrade with: pip install -U openmm-flash")
    if version < 1:
        raise ValueError(f"{path!r} has an invalid model-file format version {version}")
    return payload


# Readers of other model formats: (name, recognise(path) -> bool, load(path) -> FlashSchNet). openmmflash.mlcg
# registers mlcg (CGSchNet) files here when imported; loadModel tries them before the FlashSchNet format.
MODEL_READERS: List[Tuple[str, Callable[[str], bool], Callable[[str], object]]] = []


def registerModelReader(name: str, recognise: Callable[[str], bool], load: Callable[[str], object]) -> None:
    """Let ``loadModel`` read another model format (replaces a reader of the same name)."""
    MODEL_READERS[:] = [r for r in MODEL_READERS if r[0] != name] + [(name, recognise, load)]


def foreignReader(path: str) -> Optional[Callable[[str], object]]:
    """The registered reader that recognises ``path``, or None for a FlashSchNet model file."""
    for _, recognise, load in MODEL_READERS:
        if recognise(path):
            return load
    return None
