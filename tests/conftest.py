"""Shared test setup.

Without CUDA the Triton kernels run under the Triton interpreter; the variable
must be set before anything imports triton or fastvae, hence at the top here.
"""

import importlib.util
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes tens of seconds (torch.compile); deselect with -m 'not slow'")


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same random state."""
    torch.manual_seed(0)


@pytest.fixture
def benchmarks_module(monkeypatch):
    """``load("name.py")``: a file of benchmarks/ as a plain module.

    benchmarks/ is not a package and its files import each other by bare name (``from _ratios import ...``),
    so the folder goes on sys.path for the test.
    """
    monkeypatch.syspath_prepend(BENCHMARKS)

    def load(filename):
        stem = os.path.splitext(filename)[0]
        spec = importlib.util.spec_from_file_location(f"fastvae_benchmarks_{stem}", os.path.join(BENCHMARKS, filename))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
