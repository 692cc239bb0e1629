"""Torch before OpenMM, without importing torch up front.

The openmmtorch wheels' Torch plugin links libtorch; OpenMM loads its plugins when ``openmm`` is first imported, and
a plugin whose libraries are not loaded yet fails without a message. Importing torch first avoids that.
:func:`install` puts a finder at the front of ``sys.meta_path`` that imports torch just before ``openmm`` (or
``openmmtorch``, ``openmmml``) is first imported, so ``import openmmflash`` stays cheap (the ``openmmflash`` command
answers ``--help`` without loading torch) and ``import openmmflash; import openmm`` still loads the plugin.
"""

import sys

# Top-level packages whose import loads OpenMM plugins.
OPENMM_PACKAGES = ("openmm", "openmmtorch", "openmmml", "simtk")


class TorchFirstFinder:
    """A meta path finder that finds nothing: it imports torch before the first import of an OpenMM package."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in OPENMM_PACKAGES and "torch" not in sys.modules and "openmm" not in sys.modules:
            try:
                import torch  # noqa: F401
            except ImportError:  # no torch: OpenMM works without the Torch plugin
                pass
        return None  # let the ordinary finders import the package

    def invalidate_caches(self):
        pass


def install() -> None:
    """Put one :class:`TorchFirstFinder` at the front of ``sys.meta_path`` (idempotent)."""
    if not any(isinstance(f, TorchFirstFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, TorchFirstFinder())
