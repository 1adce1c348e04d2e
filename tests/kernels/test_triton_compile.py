"""Every Triton kernel compiles for sm_80 and sm_90 (no GPU needed) without spills, within shared memory.

``benchmarks/gpu/compile_report.py`` records the launches of every launcher in
``fastvae.kernels`` at the benchmark shapes for fp32, fp16 and bf16, compiles
each distinct specialization with Triton's own compiler and ptxas for both
GPUs, and writes ``benchmarks/results/gpu-compile.json``. It runs here in a
subprocess without ``TRITON_INTERPRET`` (which the rest of the tests set, and
under which ``triton.jit`` kernels cannot be compiled). A compile error fails
the script and so the test; the assertions below read its report.

Cold (empty Triton cache) it costs about 180 CPU seconds for ~460 binaries
(measured with Triton 3.9: 165 s user + 13 s system, two compiler processes);
Triton's cache makes reruns fast.
"""

import json
import os
import subprocess
import sys

import pytest
import triton
from triton.runtime.interpreter import InterpretedFunction
from triton.runtime.jit import JITFunction

from fastvae.kernels import _kl, linear_cross_entropy, lstm, reparameterize

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "benchmarks", "gpu", "compile_report.py")
REPORT = os.path.join(REPO, "benchmarks", "results", "gpu-compile.json")
TARGETS = ("sm_80", "sm_90")
DTYPES = ("fp32", "fp16", "bf16")  # what every Triton op accepts (fastvae.ops._dispatch.TRITON_DTYPES)
SHARED_LIMIT = {"sm_80": 163 * 1024, "sm_90": 227 * 1024}  # bytes per block, opt-in maximum (A100, H100)
LSTM_BENCHMARKS = ("DailyDialog B64 T20 E32 H32", "Sentence-VAE B32 T40 E300 H256")

pytestmark = pytest.mark.slow


def _without_interpreter():
    return {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}


def _kernels_in_package():
    """Names of the launched kernels: the triton.jit functions named ``*_kernel`` (interpreted or not)."""
    names = set()
    for module in (lstm, linear_cross_entropy, reparameterize, _kl):
        for name, value in vars(module).items():
            if name.endswith("_kernel") and isinstance(value, (JITFunction, InterpretedFunction)):
                names.add(name)
    return names


@pytest.fixture(scope="module")
def report():
    result = subprocess.run(
        [sys.executable, SCRIPT, "--out", REPORT, "--jobs", str(max(1, os.cpu_count() or 1))],
        capture_output=True, text=True, env=_without_interpreter(), cwd=REPO, timeout=3600,
    )
    if result.returncode != 0:
        pytest.fail(f"compile_report.py failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    with open(REPORT, encoding="utf-8") as f:
        return json.load(f)


def test_every_kernel_compiles_for_each_gpu_and_dtype(report):
    expected = _kernels_in_package()
    assert len(expected) >= 12  # lstm: 5, linear_cross_entropy: 2, reparameterize: 2, _kl (the KL ops): 3
    assert set(report["kernels"]) == expected
    compiled = {(r["kernel"], r["target"], d) for r in report["rows"] for d in r["dtype"].split("/")}
    missing = {(k, t, d) for k in expected for t in TARGETS for d in DTYPES} - compiled
    assert not missing, f"not compiled: {sorted(missing)}"


def test_no_register_spills(report):
    spilling = [
        f"{r['kernel']} {r['target']} {r['dtype']} ({r['constexprs']}): {r['spilled_bytes']} bytes"
        for r in report["rows"] if r["spilled_bytes"] or r["spill_store_bytes"] or r["spill_load_bytes"]
    ]
    assert not spilling, "register spills:\n" + "\n".join(spilling)
    assert all(0 < r["registers"] <= 255 for r in report["rows"])


def test_shared_memory_within_the_gpu_limit(report):
    too_big = [
        f"{r['kernel']} {r['target']} {r['dtype']} ({r['constexprs']}): {r['shared_bytes']} bytes"
        for r in report["rows"] if r["shared_bytes"] > SHARED_LIMIT[r["target"]]
    ]
    assert not too_big, "shared memory over the limit:\n" + "\n".join(too_big)


def test_benchmark_lstms_compile_the_one_launch_kernels(report):
    """At both LSTM benchmark shapes the recurrence is the sequence kernels, forward and backward, both directions."""
    for name in ("_lstm_fwd_seq_kernel", "_lstm_bwd_seq_kernel"):
        rows = [r for r in report["rows"] if r["kernel"] == name]
        for shape in LSTM_BENCHMARKS:
            for target in TARGETS:
                variants = {r["constexprs"] for r in rows if r["target"] == target and shape in r["cases"]}
                assert any("REVERSE=True" in v for v in variants) and any("REVERSE=False" in v for v in variants), (
                    name, shape, target)


def test_report_records_the_toolchain(report):
    assert report["triton"] == triton.__version__
    assert set(report["ptxas"]) == set(TARGETS) and all(report["ptxas"].values())
    assert report["targets"] == list(TARGETS)


def test_refuses_to_run_under_the_interpreter():
    env = dict(_without_interpreter(), TRITON_INTERPRET="1")
    result = subprocess.run([sys.executable, SCRIPT, "--out", os.devnull], capture_output=True, text=True, env=env)
    assert result.returncode != 0
    assert "unset TRITON_INTERPRET" in result.stderr
