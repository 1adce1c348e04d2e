"""Import and fallback behaviour of the fastvae package."""

import os
import re
import subprocess
import sys
import textwrap
import warnings

import torch

import fastvae


def test_import_and_extension():
    assert fastvae.HAS_EXTENSION is True
    assert set(fastvae.__all__) >= {"ops", "LSTM", "HAS_EXTENSION"}
    for name in ("lstm", "lstm_ref", "lstm_cell", "lstm_cell_ref"):
        assert callable(getattr(fastvae.ops, name))


def test_cpu_capability():
    cap = torch.ops.fastvae.cpu_capability()
    assert isinstance(cap, str) and cap.startswith("isa=")
    assert re.fullmatch(r"isa=(generic|avx2|avx512) blas=(mkl|direct|aten)", cap), cap


def _cpu_vendor():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def test_products_go_to_mkl_on_intel_only():
    """One-off float products (the decoding step's) go to MKL's sgemm on an Intel CPU whose torch carries MKL,
    to the tile kernels elsewhere (AMD: MKL measured slower there)."""
    cap = torch.ops.fastvae.cpu_capability()
    vendor = _cpu_vendor()
    if not torch.backends.mkl.is_available() or vendor not in (None, "GenuineIntel"):
        assert "blas=mkl" not in cap, (vendor, cap)
    elif vendor == "GenuineIntel" and not cap.startswith("isa=generic"):  # a build without x86 dispatch: generic
        assert cap.endswith("blas=mkl"), cap


def test_no_fallback_warning_with_the_extension():
    args = [torch.randn(3, 2, 4), torch.randn(2, 5), torch.randn(2, 5), torch.randn(20, 4), torch.randn(20, 5)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastvae.ops.lstm(*args)
        with torch.no_grad():
            fastvae.ops.lstm_cell(args[0][0], *args[1:])


FALLBACK = textwrap.dedent(
    """
    import sys, warnings
    sys.modules["fastvae._C"] = None  # makes `from fastvae import _C` raise ImportError

    import torch
    import fastvae
    from fastvae.ops import lstm, lstm_cell, lstm_cell_ref, lstm_ref

    assert fastvae.HAS_EXTENSION is False
    assert not hasattr(torch.ops.fastvae, "lstm_fwd")

    torch.manual_seed(0)
    args = [torch.randn(5, 3, 4), torch.randn(3, 6), torch.randn(3, 6), torch.randn(24, 4) * 0.4,
            torch.randn(24, 6) * 0.4, torch.randn(24) * 0.4, torch.randn(24) * 0.4]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = lstm(*args, lengths=[5, 1, 3], reverse=True)
        second = lstm(*args, lengths=[5, 1, 3], reverse=True)
        with torch.no_grad():
            cell = lstm_cell(args[0][0], *args[1:])
        module = fastvae.nn.LSTM(4, 6)
        out, _ = module(args[0])
    expected = lstm_ref(*args, lengths=[5, 1, 3], reverse=True)
    for got in (first, second):
        for a, e in zip(got, expected):
            torch.testing.assert_close(a, e, rtol=0, atol=0)
    for a, e in zip(cell, lstm_cell_ref(args[0][0], *args[1:])):
        torch.testing.assert_close(a, e, rtol=0, atol=0)
    ref_module = torch.nn.LSTM(4, 6)
    ref_module.load_state_dict(module.state_dict())
    torch.testing.assert_close(out, ref_module(args[0])[0], rtol=1e-5, atol=1e-5)

    runtime = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(runtime) == 1, [str(w.message) for w in runtime]
    assert "--no-build-isolation" in str(runtime[0].message), str(runtime[0].message)
    """
)


def test_fallback_without_extension():
    result = subprocess.run(
        [sys.executable, "-c", FALLBACK], env=dict(os.environ), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-4000:]


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pyproject():
    import tomllib

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def test_pep621_metadata_with_one_version_source():
    """[project] holds the metadata; the version is written once, in fastvae/_version.py."""
    import importlib.metadata

    project = _pyproject()["project"]
    assert project["name"] == "fastvae"
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    assert project["authors"] and all(a.get("name") for a in project["authors"])
    assert project["readme"] == "README.md" and project["requires-python"]
    assert "torch>=2.5" in project["dependencies"] and "test" in project["optional-dependencies"]
    assert project["scripts"] == {"fastvae": "fastvae.cli:main"}
    assert project["dynamic"] == ["version"] and "version" not in project
    assert _pyproject()["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "fastvae._version.__version__"}
    setup_py = open(os.path.join(ROOT, "setup.py"), encoding="utf-8").read()
    assert not re.search(r"\bversion\s*=", setup_py)  # no second version to drift apart
    assert not re.search(r"__version__\s*=", open(os.path.join(ROOT, "fastvae", "__init__.py")).read())
    assert fastvae.__version__ == importlib.metadata.version("fastvae")  # what pip installed agrees
    assert re.fullmatch(r"\d+\.\d+\.\d+(\.dev\d+|rc\d+)?", fastvae.__version__)


def test_license_file_is_the_mit_license():
    text = open(os.path.join(ROOT, "LICENSE"), encoding="utf-8").read()
    assert text.startswith("MIT License") and "Permission is hereby granted, free of charge" in text


def test_changelog_has_the_current_version():
    text = open(os.path.join(ROOT, "CHANGELOG.md"), encoding="utf-8").read()
    assert re.search(rf"^## \[{re.escape(fastvae.__version__)}\]", text, re.M), "CHANGELOG.md lacks this version"
    assert re.search(r"^## \[Unreleased\]", text, re.M)


def test_py_typed_marker_ships_with_the_package():
    assert os.path.isfile(os.path.join(os.path.dirname(fastvae.__file__), "py.typed"))
    setup_py = open(os.path.join(ROOT, "setup.py"), encoding="utf-8").read()
    assert re.search(r'package_data=\{"fastvae": \["py.typed"\]\}', setup_py)


def test_version_option():
    proc = subprocess.run([sys.executable, "-m", "fastvae", "--version"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"fastvae {fastvae.__version__} (torch {torch.__version__}, compiled kernels loaded)")


def test_setup_lists_every_subpackage():
    """A non-editable install ships only the packages setup.py names."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1]
    listed = set(re.search(r"packages=\[(.*?)\]", (root / "setup.py").read_text()).group(1).replace('"', "").split(", "))
    found = {"fastvae"} | {f"fastvae.{p.parent.name}" for p in (root / "fastvae").glob("*/__init__.py")}
    assert found | {"fastvae.kernels"} == listed
