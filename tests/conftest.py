"""Shared test configuration: seeds, platforms and the ``cuda`` marker.

Triton kernels run on the CPU through the interpreter: TRITON_INTERPRET must be set before triton is imported.
"""

import os

if not os.environ.get("OPENMMFLASH_TEST_CUDA"):
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402  (before openmm)

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
SHARED_DATA = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))

HAS_CUDA = torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords and not HAS_CUDA:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)
    yield
