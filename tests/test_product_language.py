"""The product speaks of the software and what was measured: no "session N" or issue bookkeeping in the README,
the docs, the model cards or the text stored in the shipped model files."""

import glob
import os
import re

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOOKKEEPING = re.compile(r"\bsession \d+\b|\bthe issue'?s?\b|\bissue #?\d+\b", re.IGNORECASE)
SHIPPED_MODELS = sorted(glob.glob(os.path.join(ROOT, "integrators", "models", "*.pt"))
                        + glob.glob(os.path.join(ROOT, "python", "openmmflash", "data", "models", "*.pt")))


def _documents():
    paths = [os.path.join(ROOT, "README.md"), os.path.join(ROOT, "integrators", "models", "README.md"),
             os.path.join(ROOT, "integrators", "models", "ensemble_notes.json")]
    return paths + sorted(glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True))


def _strings(value, where=""):
    """(path, text) of every string inside nested dicts/lists/tuples."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{where}/{key}")
    elif isinstance(value, (list, tuple)):
        for k, item in enumerate(value):
            yield from _strings(item, f"{where}[{k}]")
    elif isinstance(value, str):
        yield where, value


def _hits(text):
    return [m.group(0) for m in BOOKKEEPING.finditer(text)]


@pytest.mark.parametrize("path", _documents(), ids=lambda p: os.path.relpath(p, ROOT))
def test_documents_have_no_bookkeeping(path):
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    bad = [f"{os.path.relpath(path, ROOT)}:{n}: {line.strip()[:100]}" for n, line in enumerate(lines, 1) if _hits(line)]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path", SHIPPED_MODELS, ids=lambda p: os.path.relpath(p, ROOT))
def test_shipped_model_text_has_no_bookkeeping(path):
    blob = torch.load(path, map_location="cpu", weights_only=True)
    text = {k: v for k, v in blob.items() if k not in ("state_dict", "stateDict")}
    bad = [f"{where}: {s[:120]}" for where, s in _strings(text) if _hits(s)]
    assert not bad, "\n".join(bad)


def test_the_check_sees_bookkeeping():
    assert _hits("trained in session 7 on fresh data") == ["session 7"]
    assert _hits("the issue's targets") and not _hits("a session-scoped fixture; the tissue")
    assert list(_strings({"a": ["x", {"b": "y"}]})) == [("/a[0]", "x"), ("/a[1]/b", "y")]
