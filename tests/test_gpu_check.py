"""The GPU-free parts of the one-call GPU check (benchmarks/gpu/run.sh, check.py, bench.py).

Argument parsing, the refusal without a CUDA device, the step runner (output,
exit status, time limit), the summary and results files, and the benchmark
cases themselves run on the CPU at tiny shapes (their agreement checks and
timing code; the numbers mean nothing here).
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPU_DIR = os.path.join(REPO, "benchmarks", "gpu")
RUN_SH = os.path.join(GPU_DIR, "run.sh")
NO_GPU = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable}
TINY = {
    "lstm": {"DailyDialog": dict(B=3, T=4, E=5, H=6, layers=2)},
    "linear_ce": {"DailyDialog": dict(N=7, H=5, V=11)},
    "latent": {"DailyDialog": dict(B=3, Z=4)},
    "slcvae": dict(V=30, E=8, H=8, Z=4, layers=2, B=3, T=5),
    "sentence_vae": dict(V=30, E=8, H=8, Z=4, B=3, T=5),
}


def _load(name):
    spec = importlib.util.spec_from_file_location(f"fastvae_gpu_{name}", os.path.join(GPU_DIR, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def check():
    return _load("check")


@pytest.fixture
def bench():
    return _load("bench")


def _python(code):
    return [sys.executable, "-c", code]


# ------------------------------------------------------------------ run.sh


def test_run_sh_without_arguments_prints_usage():
    result = subprocess.run(["bash", RUN_SH], capture_output=True, text=True, env=NO_GPU)
    assert result.returncode == 2
    assert "usage: bash benchmarks/gpu/run.sh OUT" in result.stderr


def test_run_sh_refuses_without_cuda(tmp_path):
    """From another folder, with the GPUs hidden: exit 2, a clear message, a summary saying so, nothing run."""
    out = tmp_path / "out"
    result = subprocess.run(["bash", RUN_SH, str(out)], capture_output=True, text=True, env=NO_GPU, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "no CUDA device" in result.stderr and "nothing was built or run" in result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "refused" and "torch.cuda.is_available() is False" in summary["reason"]
    assert summary["steps"] == []
    assert sorted(os.listdir(out)) == ["check.log", "summary.json"]
    assert "no CUDA device" in (out / "check.log").read_text()


# --------------------------------------------------------------- check.py


def test_parse_args(check, tmp_path):
    args = check.parse_args([str(tmp_path / "out")])
    assert args.out == str(tmp_path / "out") and args.budget_s == 480.0 and not args.skip_build
    args = check.parse_args([str(tmp_path), "--budget-s", "300", "--skip-build"])
    assert args.budget_s == 300.0 and args.skip_build


@pytest.mark.parametrize("argv, message", [
    ([], "the following arguments are required: out"),
    (["OUT", "--budget-s", "30"], "--budget-s must be more than 60 seconds"),
    (["OUT", "--budget-s", "nan"], "--budget-s must be more than 60 seconds"),
    (["OUT", "--budget-s", "ten"], "invalid float value"),
    (["OUT", "--gpus", "2"], "unrecognized arguments: --gpus"),
])
def test_parse_args_errors(check, capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        check.parse_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_out_must_be_a_folder(check, tmp_path, capsys):
    file = tmp_path / "results.json"
    file.write_text("{}")
    with pytest.raises(SystemExit):
        check.parse_args([str(file)])
    assert "OUT must be a folder" in capsys.readouterr().err


def test_steps_build_test_and_benchmark(check, tmp_path):
    plan = check.steps(str(tmp_path), skip_build=False)
    assert [name for name, _, _ in plan] == ["build", "tests", "bench"]
    build, tests, bench = (command for _, command, _ in plan)
    assert build[1:] == ["-m", "pip", "install", "-e", ".", "--no-build-isolation", "--no-deps"]
    assert plan[0][2]["MAX_JOBS"] == str(os.cpu_count() or 1)
    for path in check.CUDA_TESTS:
        assert path in tests and os.path.exists(os.path.join(REPO, path))
    assert f"--junitxml={tmp_path / 'tests.xml'}" in tests
    assert os.path.exists(os.path.join(REPO, bench[1])) and bench[2:] == ["--out", str(tmp_path)]
    assert [name for name, _, _ in check.steps(str(tmp_path), skip_build=True)] == ["tests", "bench"]
    assert check.with_deadline("bench", bench, 200.0)[-2:] == ["--deadline-s", "140"]
    assert check.with_deadline("tests", tests, 200.0) == tests


def test_step_limits_keep_time_for_the_later_steps(check):
    assert check.step_limit("build", 480) == 230  # 240 kept for tests and benchmarks, 10 for the summary
    assert check.step_limit("tests", 400) == 180
    assert check.step_limit("tests", 200) == 40
    assert check.step_limit("bench", 100) == 90
    assert check.step_limit("bench", 5) == 0


def test_run_step_passes_and_logs(check, tmp_path, capsys):
    with open(tmp_path / "log", "w") as log:
        record = check.run_step("hello", _python("print('hi from the step')"), log, 60)
    assert record["status"] == "passed" and record["returncode"] == 0 and record["seconds"] < 60
    text = (tmp_path / "log").read_text()
    assert "=== hello:" in text and "hi from the step" in text and "=== hello: passed (exit 0)" in text
    assert "hi from the step" in capsys.readouterr().out


def test_run_step_failure(check, tmp_path):
    with open(tmp_path / "log", "w") as log:
        record = check.run_step("bad", _python("import sys; print('oops'); sys.exit(3)"), log, 60)
    assert record["status"] == "failed" and record["returncode"] == 3
    assert "oops" in (tmp_path / "log").read_text()


def test_run_step_is_stopped_at_its_limit(check, tmp_path):
    code = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); " \
           "print('started', flush=True); time.sleep(60)"
    with open(tmp_path / "log", "w") as log:
        record = check.run_step("slow", _python(code), log, 3)
    assert record["status"] == "timed out" and record["seconds"] < 20
    assert "started" in (tmp_path / "log").read_text()


def _fake_gpu(monkeypatch, check, commands):
    monkeypatch.setattr(check, "cuda_device", lambda: (True, {"gpu": "test double", "capability": "9.0"}))
    monkeypatch.setattr(check, "steps", lambda out, skip_build: [(n, c, {}) for n, c in commands])


def test_main_runs_every_step_and_writes_the_summary(check, tmp_path, monkeypatch):
    _fake_gpu(monkeypatch, check, [
        ("build", _python("print('built')")),
        ("tests", _python("print('tested')")),
        ("bench", _python("import sys; print('benchmarked', sys.argv[1:])")),
    ])
    assert check.main([str(tmp_path), "--budget-s", "300"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "passed" and summary["device"]["gpu"] == "test double"
    assert [s["name"] for s in summary["steps"]] == ["build", "tests", "bench"]
    assert all(s["status"] == "passed" for s in summary["steps"])
    assert summary["steps"][2]["command"][-2] == "--deadline-s"
    assert summary["files"] == ["check.log", "summary.json"]
    log = (tmp_path / "check.log").read_text()
    assert all(word in log for word in ("built", "tested", "benchmarked"))


def test_main_reports_a_failed_step(check, tmp_path, monkeypatch):
    _fake_gpu(monkeypatch, check, [
        ("build", _python("pass")),
        ("tests", _python("import sys; sys.exit(1)")),
        ("bench", _python("pass")),
    ])
    assert check.main([str(tmp_path), "--budget-s", "300"]) == 1
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert [s["status"] for s in summary["steps"]] == ["passed", "failed", "passed"]


def test_a_failed_build_stops_the_check(check, tmp_path, monkeypatch):
    _fake_gpu(monkeypatch, check, [("build", _python("import sys; sys.exit(1)")), ("tests", _python("pass"))])
    assert check.main([str(tmp_path), "--budget-s", "300"]) == 1
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and [s["name"] for s in summary["steps"]] == ["build"]


def test_main_refuses_without_cuda(check, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(check, "cuda_device", lambda: (False, "no CUDA device: test double"))
    monkeypatch.setattr(check, "run_step", lambda *a, **k: pytest.fail("a step ran without CUDA"))
    assert check.main([str(tmp_path / "out")]) == 2
    assert "no CUDA device: test double" in capsys.readouterr().err
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["status"] == "refused"


# ---------------------------------------------------------------- bench.py


def test_bench_parse_args(bench):
    args = bench.parse_args(["--out", "r"])
    assert args.dtypes == ["fp32", "bf16"] and args.deadline_s is None and args.pattern == "*"
    args = bench.parse_args(["--out", "r", "--dtypes", "bf16", "--deadline-s", "100", "-k", "LSTM"])
    assert args.dtypes == ["bf16"] and args.deadline_s == 100 and args.pattern == "LSTM"


@pytest.mark.parametrize("argv, message", [
    (["--dtypes", "fp32"], "the following arguments are required: --out"),
    (["--out", "r", "--dtypes", "fp64"], "--dtypes takes names from fp32, bf16"),
    (["--out", "r", "--dtypes", ","], "--dtypes takes names from fp32, bf16"),
    (["--out", "r", "--deadline-s", "0"], "--deadline-s must be positive"),
])
def test_bench_parse_args_errors(bench, capsys, argv, message):
    with pytest.raises(SystemExit):
        bench.parse_args(argv)
    assert message in capsys.readouterr().err


def test_bench_refuses_without_cuda(bench, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench.main(["--out", str(tmp_path)]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_bench_cases_cover_the_issue(bench):
    names = {(c.op, c.dtype) for c in bench.cases()}
    for op in ("LSTM fwd+bwd", "LSTM fwd (no grad)", "linear CE fwd+bwd (mean)", "reparameterize + kl_label_loss fwd+bwd",
               "SLCVAE train step (both phases)", "SentenceVAE train step"):
        assert {(op, "fp32"), (op, "bf16")} <= names, op
    shapes = {c.shape for c in bench.cases() if c.op == "LSTM fwd+bwd"}
    assert shapes == {"DailyDialog B64 T20 E32 H32 L2", "Sentence-VAE B32 T40 E300 H256 L1"}


def test_relative_difference(bench):
    a = torch.tensor([1.0, 2.0, 4.0])
    assert bench.relative_difference(a, a) == 0
    assert bench.relative_difference(a + 0.04, a) == pytest.approx(0.01)
    assert bench.relative_difference(torch.tensor([0.5]), torch.tensor([0.25])) == 0.25  # scale at least 1
    assert bench.relative_difference(a[:2], a) == float("inf")
    assert bench.relative_difference(torch.tensor([float("nan")]), torch.tensor([1.0])) == float("inf")
    assert bench.compare((a, a), (a, a + 1), indices=(0,)) == 0 and bench.compare((a,), (a, a)) == float("inf")


def test_bench_cases_run_and_agree_on_cpu(bench):
    """Every case builds and its fused result agrees with each baseline (tiny shapes, CPU fused path)."""
    torch.manual_seed(0)
    for case in bench.cases(TINY, ("fp32",)):
        rows = bench.run_case(case, torch.device("cpu"), timing=False)
        assert rows, case.name
        for row in rows:
            assert row["agree"] and row["max_rel_diff"] < 1e-4, (case.name, row)
            assert "speedup" not in row


def test_bench_timing_rows(bench):
    case = next(c for c in bench.cases(TINY, ("fp32",)) if c.op == "linear CE fwd+bwd (mean)")
    (row,) = bench.run_case(case, torch.device("cpu"), timing=True, rounds=1)
    assert row["baseline"] == "F.cross_entropy(F.linear)"
    assert row["fastvae_ms"] > 0 and row["baseline_ms"] > 0
    assert row["speedup"] == pytest.approx(row["baseline_ms"] / row["fastvae_ms"])


def test_bench_results_file(bench, tmp_path):
    path = tmp_path / "deep" / "bench.json"
    rows = [{"op": "x", "shape": "s", "dtype": "fp32", "baseline": "b", "max_rel_diff": 0.0, "agree": True}]
    record = bench.write_results(str(path), {"gpu": "test"}, rows, [{"case": "y", "error": "boom"}], complete=False)
    assert json.loads(path.read_text()) == record
    assert record == {"machine": {"gpu": "test"}, "complete": False, "rows": rows,
                      "errors": [{"case": "y", "error": "boom"}]}
    assert not any(name.endswith(".tmp") for name in os.listdir(path.parent))
    with pytest.raises(ValueError):  # strict JSON: a NaN is refused, not written
        bench.write_results(str(path), {}, [{"max_rel_diff": float("nan")}], [], complete=True)
