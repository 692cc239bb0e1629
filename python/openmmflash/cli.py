"""The ``openmmflash`` command line. Each command group lives in its own module with a ``register(subparsers)``
function that adds its sub-commands; a group whose module is absent is left out."""

import argparse
import importlib
import sys

# Modules that add sub-commands, in the order they appear in --help.
COMMAND_MODULES = [
    "openmmflash.doctor",
    "openmmflash.demo",
    "openmmflash.workflows.cgcli",
    "openmmflash.workflows.flashmdcli",
    "openmmflash.compactmd.cli",
    "openmmflash.workflows.gaqcli",
]


def build_parser():
    parser = argparse.ArgumentParser(prog="openmmflash", description="openmm-flash: fast learned MD for OpenMM")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name or name.startswith(f"{err.name}."):
                continue
            raise
        module.register(sub)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return args.func(args) or 0
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"openmmflash {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
