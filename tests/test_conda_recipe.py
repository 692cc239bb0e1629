"""The conda recipe (conda/recipe.yaml) and environment.yml agree with setup.py: the recipe's run requirements are
exactly install_requires under their conda-forge names with the same version pins, and environment.yml holds
install_requires plus the test extras (and the extras they pull in), with openmm-flash itself installed by
``pip install --no-deps``."""

import ast
import os
import re

import pytest
import yaml
from packaging.requirements import Requirement

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# pip name (lower case) -> conda-forge name
CONDA_NAMES = {"torch": "pytorch", "openmmtorch": "openmm-torch", "openmmml": "openmm-ml",
               "matplotlib": "matplotlib-base", "mdanalysis": "mdanalysis", "mdanalysistests": "mdanalysistests",
               "peptidebuilder": "peptidebuilder"}
# Extras that environment.yml need not hold: pip wheels of the CUDA platforms (conda-forge's openmm and pytorch
# builds carry CUDA themselves; environment.yml names the CUDA pytorch variant in a comment).
PIP_ONLY_EXTRAS = {"cuda12"}


def _setup_lists():
    tree = ast.parse(open(os.path.join(ROOT, "setup.py"), encoding="utf-8").read())
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id in ("INSTALL_REQUIRES", "EXTRAS"):
                found[node.targets[0].id] = ast.literal_eval(node.value)
    return found["INSTALL_REQUIRES"], found["EXTRAS"]


def _pip(requirement: str):
    """(conda name, normalized pins) of a pip requirement."""
    req = Requirement(requirement)
    pins = set()
    for spec in req.specifier:
        if spec.operator == "==" and spec.version.endswith(".*"):
            pins.add(("prefix", spec.version[:-2]))
        else:
            pins.add((spec.operator, spec.version))
    name = req.name.lower()
    return CONDA_NAMES.get(name, name), frozenset(pins)


CONDA_SPEC = re.compile(r"^([A-Za-z0-9_.\-]+)\s*(.*)$")
CLAUSE = re.compile(r"^(==|>=|<=|!=|>|<|=)?\s*([0-9][0-9A-Za-z.*+]*)$")


def _conda(spec: str):
    """(name, normalized pins) of a conda match spec ("numpy >=1.26,<2.3", "pytorch=2.9", "triton 3.5.*")."""
    name, rest = CONDA_SPEC.match(spec.strip()).groups()
    pins = set()
    for clause in filter(None, (c.strip() for c in rest.split(","))):
        op, version = CLAUSE.match(clause).groups()
        if op in (None, "=") or version.endswith(".*"):  # conda's fuzzy match: a version prefix
            pins.add(("prefix", version[:-2] if version.endswith(".*") else version))
        else:
            pins.add((op, version))
    return name.lower(), frozenset(pins)


def test_conda_spec_parsing():
    assert _conda("numpy >=1.26,<2.3") == _pip("numpy>=1.26,<2.3")
    assert _conda("pytorch=2.9") == _conda("pytorch 2.9.*") == _pip("torch==2.9.*")
    assert _conda("openmm-torch==1.5") == _pip("openmmtorch==1.5") != _conda("openmm-torch=1.5")
    assert _pip("triton==3.5.*; sys_platform == 'linux'") == ("triton", frozenset({("prefix", "3.5")}))


@pytest.fixture(scope="module")
def recipe():
    text = open(os.path.join(ROOT, "conda", "recipe.yaml"), encoding="utf-8").read()
    return yaml.safe_load(text)


def test_recipe_run_requirements_are_install_requires(recipe):
    install_requires, _ = _setup_lists()
    run = [r for r in recipe["requirements"]["run"] if not r.startswith("python ")]
    assert dict(_conda(r) for r in run) == dict(_pip(r) for r in install_requires)
    assert len(run) == len(install_requires)


def test_recipe_is_noarch_python_with_the_console_script(recipe):
    setup_text = open(os.path.join(ROOT, "setup.py"), encoding="utf-8").read()
    assert recipe["build"]["noarch"] == "python"
    assert "--no-deps" in recipe["build"]["script"]
    assert re.search(r'"console_scripts": \["openmmflash = openmmflash\.cli:main"\]', setup_text)
    assert recipe["build"]["python"]["entry_points"] == ["openmmflash = openmmflash.cli:main"]
    python_min = re.search(r'python_requires=">=([0-9.]+)"', setup_text).group(1)
    assert recipe["context"]["python_min"] == python_min
    assert recipe["context"]["version"] == re.search(r'version="([^"]+)"', setup_text).group(1)
    assert "python >=${{ python_min }}" in recipe["requirements"]["run"]
    assert os.path.isfile(os.path.join(ROOT, recipe["about"]["license_file"]))


def test_environment_covers_install_requires_and_test_extras():
    env = yaml.safe_load(open(os.path.join(ROOT, "environment.yml"), encoding="utf-8"))
    assert env["channels"] == ["conda-forge"]
    specs = [d for d in env["dependencies"] if isinstance(d, str)]
    assert not [d for d in env["dependencies"] if isinstance(d, dict)], \
        "no pip: section (it would re-resolve the dependencies); install the package with pip install --no-deps -e ."
    have = dict(_conda(s) for s in specs)
    install_requires, extras = _setup_lists()
    wanted = list(install_requires) + [r for name, reqs in extras.items() if name not in PIP_ONLY_EXTRAS for r in reqs]
    for requirement in wanted:
        name, pins = _pip(requirement)
        assert name in have, f"environment.yml lacks {name} (setup.py: {requirement})"
        assert have[name] == pins, f"environment.yml pins {name} as {sorted(have[name])}, setup.py {requirement}"
    header = open(os.path.join(ROOT, "environment.yml"), encoding="utf-8").read()
    assert "pip install --no-deps -e ." in header and "pytorch=2.9=cuda*" in header
