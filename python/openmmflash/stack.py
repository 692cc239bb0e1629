"""The software stack openmm-flash runs on: import order, version checks and the known-broken combinations.

The openmmtorch 1.5 wheel links libtorch 2.9 and the OpenMM 8.5 serialization headers, so it works only with
torch 2.9.x and OpenMM 8.4-8.5.x. ``import torch`` must come before ``import openmm``: importing torch preloads the
CUDA libraries the Torch plugin links, and without them the plugin fails to load without any message.
"""

import importlib.metadata
import os

import torch

SUPPORTED = {"torch": "2.9", "openmm": ("8.4", "8.5"), "openmmtorch": "1.5"}


def _version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def import_openmm():
    """Import openmm after torch and reload Torch plugins that failed to load because of the import order.

    Returns the ``openmm`` module.
    """
    import openmm
    import openmm.app  # noqa: F401  (so openmm.app and openmm.unit are attributes)

    for failure in openmm.Platform.getPluginLoadFailures():
        # "Error loading library <path>: <reason>": retry Torch plugins that failed because torch came second.
        path = failure.split("Error loading library ", 1)[-1].split(": ", 1)[0]
        if "OpenMMTorch" in path and "OpenCL" not in path and os.path.isfile(path):
            try:
                openmm.Platform.loadPluginLibrary(path)
            except Exception:  # reported by `openmmflash doctor`
                pass
    return openmm


def versions():
    """Versions of the packages that make up the stack (None where a package is missing)."""
    names = ["torch", "triton", "numpy", "openmm", "openmmtorch", "openmmml", "pdbfixer", "parmed", "MDAnalysis",
             "mdtraj"]
    out = {n: _version(n) for n in names}
    out["torch"] = torch.__version__
    return out


def _minor(version):
    return ".".join(version.split("+")[0].split(".")[:2]) if version else None


def stack_problems(vers=None):
    """Known-broken combinations in ``vers`` (default: the installed stack), each as a sentence with the fix."""
    vers = versions() if vers is None else vers
    problems = []
    torch_minor = _minor(vers.get("torch"))
    omm_minor = _minor(vers.get("openmm"))
    if vers.get("openmm") is None:
        problems.append("OpenMM is not installed: pip install 'openmm>=8.5,<8.6'.")
    elif omm_minor not in SUPPORTED["openmm"]:
        problems.append(f"OpenMM {vers['openmm']} is not supported: openmmtorch 1.5 crashes on OpenMM 8.6 when a "
                        "TorchForce is deserialized, deep-copied or used inside a CustomCVForce. "
                        "Fix: pip install 'openmm>=8.5,<8.6'.")
    if vers.get("openmmtorch") is None:
        problems.append("openmmtorch is not installed: pip install openmmtorch==1.5 (TorchForce is unavailable; "
                        "createFlashSchNetPythonForce still works).")
    elif _minor(vers["openmmtorch"]) != SUPPORTED["openmmtorch"]:
        problems.append(f"openmmtorch {vers['openmmtorch']} is untested: pip install openmmtorch==1.5.")
    if torch_minor != SUPPORTED["torch"]:
        problems.append(f"torch {vers.get('torch')} with openmmtorch 1.5: the wheel was built against torch 2.9; "
                        "with torch >= 2.10 TorchForce fails on the Reference and CPU platforms (set_stride error) "
                        "and works only on CUDA; torch 2.8 segfaults. Fix: pip install 'torch==2.9.*'.")
    return problems
