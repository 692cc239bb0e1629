"""The README's commands and quickstart are real: CI runs the README test command, and the quickstart runs."""

import os
import re

import pytest

from conftest import make_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()


def test_ci_runs_the_readme_test_command():
    blocks = re.findall(r"```bash\n(.*?)```", README, re.S)
    test_commands = [line for b in blocks for line in b.splitlines() if "pytest" in line]
    assert len(test_commands) == 1
    ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read().splitlines()
    assert test_commands[0].strip() in [line.strip() for line in ci]


def test_quickstart_runs(tmp_path, cg_fragment):
    code = re.search(r"## Quickstart.*?```python\n(.*?)```", README, re.S).group(1)
    model_path = str(tmp_path / "model.pt")
    make_model().save(model_path)
    code = code.replace('"protein.pdb"', repr(os.path.join(os.path.dirname(__file__), "data", "cg_fragment.pdb")))
    code = code.replace('"model.pt"', repr(model_path)).replace("simulation.step(1000)", "simulation.step(10)")
    code = code.replace("maxIterations=100", "maxIterations=5")
    namespace = {}
    exec(compile(code, "README quickstart", "exec"), namespace)
    assert namespace["simulation"].currentStep == 10


def test_doctor_runs(capsys):
    from openmmflash.cli import main

    code = main(["doctor"])
    out = capsys.readouterr().out
    assert "OpenMM platforms" in out and "TorchForce on Reference: ok" in out
    assert code == 0


def test_stack_problems_explain_the_fix():
    from openmmflash.stack import stack_problems

    problems = stack_problems({"torch": "2.11.0+cu130", "openmm": "8.6.1", "openmmtorch": "1.5"})
    text = " ".join(problems)
    assert "torch==2.9" in text and "openmm>=8.5,<8.6" in text
    assert stack_problems({"torch": "2.9.1", "openmm": "8.5.2", "openmmtorch": "1.5"}) == []
