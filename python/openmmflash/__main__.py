"""``python -m openmmflash ...``: the ``openmmflash`` command without its console script (e.g. ``--target`` installs)."""

import sys

from .cli import main

sys.exit(main())
