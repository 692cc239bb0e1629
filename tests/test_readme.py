"""The README's commands and quickstarts are real: CI runs the README test command, and every quickstart runs."""

import os
import re

import pytest

from conftest import make_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
MLCG_FILE = os.path.join(os.path.dirname(__file__), "data", "mlcg", "schnet_cln_ca_specialized_model_and_config.pt")
QUICKSTART_TITLES = ["FlashSchNet force", "mlcg (CGSchNet) models", "FlashMD integrator", "CompactReporter", "Quantize"]


def quickstart(title, language="python"):
    """The code blocks of one ``### title`` section under ``## Quickstarts``, joined."""
    section = re.search(r"^## Quickstarts\n(.*?)(?=^## )", README, re.S | re.M).group(1)
    part = re.search(rf"^### {re.escape(title)}\n(.*?)(?=^### |\Z)", section, re.S | re.M)
    assert part, f"README has no quickstart '### {title}'"
    return "\n".join(re.findall(rf"```{language}\n(.*?)```", part.group(1), re.S))


def test_readme_stays_short():
    assert len(README.encode("utf-8")) <= 8000


def test_ci_runs_the_readme_test_command():
    blocks = re.findall(r"```bash\n(.*?)```", README, re.S)
    test_commands = [line for b in blocks for line in b.splitlines() if "pytest" in line]
    assert len(test_commands) == 1
    ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read().splitlines()
    assert test_commands[0].strip() in [line.strip() for line in ci]


def test_readme_main_job_command():
    blocks = re.findall(r"```bash\n(.*?)```", README, re.S)
    assert "pip install . && openmmflash demo" in [line.strip() for b in blocks for line in b.splitlines()]


def test_quickstarts_import_from_the_top_level():
    for title in QUICKSTART_TITLES:
        code = quickstart(title)
        assert "openmmflash." not in re.sub(r"import openmmflash\.compactmd.*", "", code), title


def test_quickstarts_run(tmp_path):
    """All four quickstarts, in order and in one namespace, as a user pastes them (shorter runs)."""
    model_path = str(tmp_path / "model.pt")
    make_model().save(model_path)
    pdb = os.path.join(os.path.dirname(__file__), "data", "cg_fragment.pdb")
    namespace = {}

    code = quickstart("FlashSchNet force")
    assert code.count("addFlashSchNetForce(") == 1 and "addModelForce=False" in code
    code = code.replace('"protein.pdb"', repr(pdb)).replace('"model.pt"', repr(model_path))
    code = code.replace("simulation.step(1000)", "simulation.step(10)").replace("maxIterations=100", "maxIterations=5")
    exec(compile(code, "README FlashSchNet quickstart", "exec"), namespace)
    simulation = namespace["simulation"]
    assert simulation.currentStep == 10
    names = [f.getName() for f in simulation.system.getForces()]
    assert names.count("FlashSchNet") == 1, names

    mlcg_model, cg_pdb = str(tmp_path / "mlcg.pt"), str(tmp_path / "cg.pdb")
    words = quickstart("mlcg (CGSchNet) models", "bash").split("#")[0].split()
    assert words[:2] == ["openmmflash", "import-mlcg"]
    words = [{"model_and_config.pt": MLCG_FILE, "model.pt": mlcg_model, "cg.pdb": cg_pdb}.get(w, w) for w in words]
    from openmmflash.cli import main

    assert main(words[1:]) == 0
    code = quickstart("mlcg (CGSchNet) models").replace('"cg.pdb"', repr(cg_pdb))
    exec(compile(code.replace('"model.pt"', repr(mlcg_model)), "README mlcg quickstart", "exec"), namespace)
    assert namespace["system"].getNumParticles() == namespace["cg"].topology.getNumAtoms() == 10

    code = quickstart("FlashMD integrator").replace("water.step(100)", "water.step(2)")
    exec(compile(code, "README FlashMD quickstart", "exec"), namespace)
    integrator = namespace["water"].integrator
    assert namespace["water"].currentStep == 2
    assert integrator.getStepSize().value_in_unit(namespace["unit"].femtoseconds) == pytest.approx(8.0)

    trajectory = str(tmp_path / "traj.cmdx")
    code = quickstart("CompactReporter").replace('"traj.cmdx"', repr(trajectory))
    code = code.replace("simulation.step(1000)", "simulation.step(20)").replace(", 100)", ", 5)")
    exec(compile(code, "README CompactReporter quickstart", "exec"), namespace)
    universe = namespace["universe"]
    assert universe.atoms.n_atoms == simulation.topology.getNumAtoms() and len(universe.trajectory) == 4

    code = quickstart("Quantize")
    exec(compile(code, "README quantize quickstart", "exec"), namespace)
    assert namespace["integrator"].getStepSize().value_in_unit(namespace["unit"].femtoseconds) == pytest.approx(8.0)


def test_quantize_command_options_exist(capsys):
    """The README's quantize command uses options the CLI has (running it needs a training dataset)."""
    from openmmflash.cli import main

    words = quickstart("Quantize", "bash").split()
    assert words[:2] == ["openmmflash", "quantize"]
    with pytest.raises(SystemExit) as exit_:
        main(["quantize", "--help"])
    assert exit_.value.code == 0
    help_text = capsys.readouterr().out
    options = [w for w in words if w.startswith("-")]
    assert options and all(option in help_text for option in options), options


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
