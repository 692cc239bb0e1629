"""CompactMD: an error-bounded compressed trajectory format (``.cmdx``) for OpenMM, with readers for MDAnalysis
and mdtraj.

>>> from openmmflash.compactmd import CompactReporter, CompactTrajectory     # doctest: +SKIP
>>> simulation.reporters.append(CompactReporter("traj.cmdx", 1000))         # doctest: +SKIP

Importing this package registers the ``CMDX`` reader with MDAnalysis and the ``.cmdx`` loader with mdtraj when
those packages are installed.
"""

from openmmflash.compactmd.codec import BoundedCodec, XTCCodec  # noqa: F401
from openmmflash.compactmd.codecregistry import make_codec  # noqa: F401
from openmmflash.compactmd.compactfile import EXTENSION, CorruptChunkError, IncompleteFileWarning  # noqa: F401
from openmmflash.compactmd.compacttrajectory import CompactTrajectory, Frame  # noqa: F401
from openmmflash.compactmd.compactwriter import CompactWriter  # noqa: F401
from openmmflash.compactmd.topology import CompactTopology  # noqa: F401


def __getattr__(name):
    if name == "CompactReporter":
        from openmmflash.compactmd.compactreporter import CompactReporter

        return CompactReporter
    raise AttributeError(f"module 'openmmflash.compactmd' has no attribute {name!r}")


def _register_readers():
    import importlib.util

    if importlib.util.find_spec("MDAnalysis") is not None:
        from openmmflash.compactmd import mdanalysis  # noqa: F401  (registers the CMDX reader)
    if importlib.util.find_spec("mdtraj") is not None:
        from openmmflash.compactmd import mdtraj  # noqa: F401  (registers the .cmdx loader)


try:
    _register_readers()
except ImportError:  # a reader module that is not there yet, or a broken optional install
    pass
