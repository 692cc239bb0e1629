"""The ``openmmflash`` command answers ``--help`` without loading torch or OpenMM, and the import-order guarantee
(torch before openmm) holds although ``import openmmflash`` no longer imports torch."""

import os
import subprocess
import sys
import time

import pytest

from openmmflash.cli import build_parser, commandFunction

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOUND_S = 5.0  # generous: ~0.1 s measured on an idle 2-core machine; the bound guards against torch coming back


def _commands():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices


def _timed(args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "openmmflash", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)
    return time.perf_counter() - start, proc


@pytest.mark.parametrize("command", [None] + sorted(_commands()))
def test_help_is_quick(command):
    args = ["--help"] if command is None else [command, "--help"]
    seconds, proc = _timed(args)
    assert proc.returncode == 0, proc.stderr
    assert "usage: openmmflash" in proc.stdout
    if command is not None:
        assert command in proc.stdout
    assert seconds < BOUND_S, f"openmmflash {' '.join(args)} took {seconds:.2f} s"


def test_parsing_imports_no_heavy_module():
    code = ("import sys\nfrom openmmflash.cli import build_parser\n"
            "build_parser().parse_args(['compress', 'x.dcd'])\n"
            "heavy = [m for m in ('torch', 'openmm', 'numpy', 'MDAnalysis', 'mdtraj') if m in sys.modules]\n"
            "print(','.join(heavy))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


def test_every_command_names_a_function():
    parser = build_parser()
    for name, sub in _commands().items():
        target = sub.get_default("run")
        assert target and callable(commandFunction(target)), f"{name}: {target!r}"


def test_argument_errors_come_before_imports():
    seconds, proc = _timed(["quantize", "model.pt"])  # -o and --data missing
    assert proc.returncode == 2 and "the following arguments are required" in proc.stderr
    assert seconds < BOUND_S


def test_openmm_after_openmmflash_loads_the_torch_plugin():
    """``import openmmflash; import openmm`` imports torch first (openmmflash.importorder), so the Torch plugin's
    Reference/CPU libraries load; without torch first they fail (the control)."""
    check = ("import sys\n{first}\nimport openmm\n"
             "bad = [f for f in openmm.Platform.getPluginLoadFailures() if 'Torch' in f and 'OpenCL' not in f]\n"
             "print('torch' in sys.modules, len(bad))")
    proc = subprocess.run([sys.executable, "-c", check.format(first="import openmmflash")], capture_output=True,
                          text=True, timeout=300)
    assert proc.stdout.split() == ["True", "0"], proc.stderr
    control = subprocess.run([sys.executable, "-c", check.format(first="")], capture_output=True, text=True,
                             timeout=300)
    torch_loaded, failures = control.stdout.split()
    if int(failures) == 0:
        pytest.skip("this openmmtorch install loads its plugin without torch first; nothing to compare with")
    assert torch_loaded == "False"
