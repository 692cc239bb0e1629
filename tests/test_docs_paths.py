"""The README and the docs name modules, functions and files that exist, so moving code cannot leave them stale."""

import glob
import importlib
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOTTED = re.compile(r"`(openmmflash(?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
FROM_IMPORT = re.compile(r"^\s*from (openmmflash[\w.]*) import ([\w, ]+)", re.M)
IMPORT = re.compile(r"^\s*import (openmmflash[\w.]*)", re.M)
SOURCE_FILE = re.compile(r"`((?:[A-Za-z0-9_\-]+/)+[A-Za-z0-9_\-]+\.(?:py|sh|pdb|json|yml|yaml|toml))`")
# Where a path written relative to a package folder lives in the repository.
SOURCE_ROOTS = ["", "python/", "python/openmmflash/", "examples/", "examples/benchmarks/"]


def documents():
    paths = [os.path.join(ROOT, "README.md"), os.path.join(ROOT, "integrators", "models", "README.md")]
    paths += sorted(glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True))
    return [p for p in paths if os.path.exists(p)]


def resolves(dotted):
    """True when ``dotted`` is an importable module, or an attribute chain on one."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


@pytest.mark.parametrize("path", documents(), ids=lambda p: os.path.relpath(p, ROOT))
def test_named_python_objects_exist(path):
    text = open(path, encoding="utf-8").read()
    names = set(DOTTED.findall(text)) | set(IMPORT.findall(text))
    for module, imported in FROM_IMPORT.findall(text):
        names |= {f"{module}.{n.strip()}" for n in imported.split(",") if n.strip()}
    missing = sorted(name for name in names if not resolves(name))
    assert not missing, f"{os.path.relpath(path, ROOT)} names what does not exist: {missing}"


@pytest.mark.parametrize("path", documents(), ids=lambda p: os.path.relpath(p, ROOT))
def test_named_files_exist(path):
    text = open(path, encoding="utf-8").read()
    missing = []
    for name in set(SOURCE_FILE.findall(text)):
        if name.startswith(("examples/benchmarks/results/", "results/")):
            continue  # checked by test_docs_figures
        if not any(os.path.exists(os.path.join(ROOT, root + name)) for root in SOURCE_ROOTS):
            missing.append(name)
    assert not missing, f"{os.path.relpath(path, ROOT)} names files that do not exist: {sorted(missing)}"


def test_a_stale_name_is_caught():
    assert resolves("openmmflash.compactmd.compactreporter.CompactReporter")
    assert not resolves("openmmflash.compactmd.compactreporter.NoSuchReporter")
    assert not resolves("openmmflash.no_such_module")
