"""The ``openmmflash`` command line.

The sub-commands' arguments are declared in ``openmmflash.commands`` (argparse only); the module that runs a
command is imported after the arguments are parsed, so ``--help`` and argument errors answer without loading
torch or OpenMM.
"""

import argparse
import importlib
import sys

from openmmflash.commands import addCommands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="openmmflash", description="openmm-flash: fast learned MD for OpenMM")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    addCommands(sub)
    return parser


def commandFunction(target: str):
    """The function named by a sub-command's ``"module:function"`` target (imports the module)."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 0
    try:
        return commandFunction(args.run)(args) or 0
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"openmmflash {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
