"""The one-call GPU check: build fastvae, run the CUDA tests and the GPU benchmarks, write the results.

    python benchmarks/gpu/check.py OUT [--budget-s 480] [--skip-build]
    bash benchmarks/gpu/run.sh OUT ...          (the same, from anywhere)

On a machine with a CUDA device and torch, triton and a C++ compiler already
installed (no network needed), in the repository root:

1. ``build``: ``pip install -e . --no-build-isolation --no-deps`` (the C++
   extension, ``MAX_JOBS`` = the CPU count; ``--no-deps`` because nothing can
   be downloaded, and the GPU path needs no more than torch and triton);
2. ``tests``: pytest on the Triton kernel tests, which run on CUDA when there
   is a device (``pytest-xdist`` spreads them when installed);
3. ``bench``: ``benchmarks/gpu/bench.py`` (fused vs PyTorch, fp32 and bf16).

Each step gets what is left of the budget (``--budget-s``, default 8 minutes)
minus what the later steps are kept, and is stopped at its limit. Written to
OUT: ``check.log`` (every step's command and output), ``summary.json``
(status, device, each step's status and seconds), ``tests.xml`` (JUnit) and
``bench.json`` (the benchmark rows). Exit status 0 when every step passed, 1
when one failed or ran out of time, 2 when there is no CUDA device (nothing
is run; the summary says so) or the arguments are wrong.
"""

import argparse
import datetime
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_BUDGET_S = 480.0
# the Triton kernel tests (tests/kernels/test_triton_compile.py compiles ahead of time, with no GPU: not run here)
CUDA_TESTS = (
    "tests/kernels/test_lstm.py",
    "tests/kernels/test_linear_cross_entropy.py",
    "tests/kernels/test_reparameterize.py",
    "tests/kernels/test_gaussian_kl.py",
    "tests/kernels/test_kl_label_loss.py",
)
LOG_NAME, SUMMARY_NAME, JUNIT_NAME = "check.log", "summary.json", "tests.xml"
# (step, most seconds it may take, seconds kept back for the steps after it)
STEP_LIMITS = {"build": (240.0, 240.0), "tests": (180.0, 150.0), "bench": (420.0, 0.0)}
MARGIN_S = 10.0  # left over at the end for writing the summary


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="benchmarks/gpu/check.py",
        description="One-call GPU check of fastvae: build, CUDA tests, GPU benchmarks; results in OUT.",
    )
    parser.add_argument("out", help="folder for check.log, summary.json, tests.xml and bench.json (created)")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S,
                        help="seconds for the whole check (default: %(default)s)")
    parser.add_argument("--skip-build", action="store_true", help="use the fastvae already installed")
    args = parser.parse_args(argv)
    if not args.budget_s > 60:
        parser.error(f"--budget-s must be more than 60 seconds, got {args.budget_s}")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        parser.error(f"OUT must be a folder, got the file {args.out}")
    return args


def cuda_device():
    """(True, facts about the device) or (False, why there is none)."""
    try:
        import torch
    except ImportError as exc:
        return False, f"torch is not installed ({exc})"
    if not torch.cuda.is_available():
        built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        return False, f"no CUDA device: torch.cuda.is_available() is False (torch {torch.__version__}, {built})"
    props = torch.cuda.get_device_properties(0)
    return True, {"gpu": props.name, "capability": f"{props.major}.{props.minor}", "torch": torch.__version__,
                  "cuda": torch.version.cuda, "device_count": torch.cuda.device_count()}


def steps(out, skip_build):
    """[(name, command, extra environment)] of the check, in order."""
    py = sys.executable
    build = [py, "-m", "pip", "install", "-e", ".", "--no-build-isolation", "--no-deps"]
    tests = [py, "-m", "pytest", *CUDA_TESTS, "-q", "-p", "no:cacheprovider", f"--junitxml={os.path.join(out, JUNIT_NAME)}"]
    if importlib.util.find_spec("xdist") is not None:
        tests += ["-n", str(min(8, os.cpu_count() or 1))]
    bench = [py, os.path.join("benchmarks", "gpu", "bench.py"), "--out", out]
    plan = [] if skip_build else [("build", build, {"MAX_JOBS": str(os.cpu_count() or 1)})]
    return plan + [("tests", tests, {}), ("bench", bench, {})]


def with_deadline(name, command, limit_s):
    """The benchmarks stop starting cases a minute before their limit, so that a case in flight can finish."""
    if name != "bench":
        return command
    return [*command, "--deadline-s", f"{max(10.0, limit_s - 60.0):.0f}"]


def step_limit(name, remaining_s):
    """Seconds step ``name`` may take when ``remaining_s`` are left of the budget (0: no time for it)."""
    most, kept_back = STEP_LIMITS[name]
    return max(0.0, min(most, remaining_s - kept_back - MARGIN_S))


def run_step(name, command, log, limit_s, env=None, cwd=REPO):
    """Run ``command``, its output to ``log`` (an open text file) and to stdout; stopped after ``limit_s``.

    Returns the step's record: name, command, status ("passed", "failed",
    "timed out"), returncode and seconds.
    """
    header = f"=== {name}: {' '.join(command)} (limit {limit_s:.0f} s)"
    for stream in (log, sys.stdout):
        print(header, file=stream, flush=True)
    start = time.monotonic()
    proc = subprocess.Popen(
        command, cwd=cwd, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=True,
    )

    def pump():
        for line in proc.stdout:
            log.write(line)
            log.flush()
            sys.stdout.write(line)
            sys.stdout.flush()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        returncode = proc.wait(timeout=limit_s)
        status = "passed" if returncode == 0 else "failed"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the step's whole process group (pytest workers, compilers)
        returncode = proc.wait()
        status = "timed out"
    reader.join(timeout=10)
    seconds = time.monotonic() - start
    footer = f"=== {name}: {status} (exit {returncode}) in {seconds:.1f} s"
    for stream in (log, sys.stdout):
        print(footer, file=stream, flush=True)
    return {"name": name, "command": command, "status": status, "returncode": returncode,
            "seconds": round(seconds, 1), "limit_s": round(limit_s, 1)}


def write_summary(out, summary):
    """``OUT/summary.json``, written atomically; returns its path."""
    path = os.path.join(out, SUMMARY_NAME)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)
    return path


def main(argv=None):
    args = parse_args(argv)
    start = time.monotonic()
    os.makedirs(args.out, exist_ok=True)
    out = os.path.abspath(args.out)
    summary = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["benchmarks/gpu/check.py", *(sys.argv[1:] if argv is None else argv)]),
        "budget_s": args.budget_s,
        "steps": [],
    }
    with open(os.path.join(out, LOG_NAME), "w", encoding="utf-8") as log:
        has_cuda, device = cuda_device()
        if not has_cuda:
            message = f"check.py: {device}. This check needs a CUDA GPU; nothing was built or run."
            print(message, file=log)
            print(message, file=sys.stderr)
            write_summary(out, {**summary, "status": "refused", "reason": device})
            return 2
        summary["device"] = device
        print(f"device: {device}", file=log, flush=True)
        plan = steps(out, args.skip_build)
        for name, command, env in plan:
            limit = step_limit(name, args.budget_s - (time.monotonic() - start))
            if limit <= 0:
                record = {"name": name, "command": command, "status": "not run: budget spent"}
            else:
                record = run_step(name, with_deadline(name, command, limit), log, limit, env)
            summary["steps"].append(record)
            write_summary(out, {**summary, "status": "running"})
            if name == "build" and record["status"] != "passed":
                break  # the tests and benchmarks would import a stale or missing fastvae
    passed = len(summary["steps"]) == len(plan) and all(s["status"] == "passed" for s in summary["steps"])
    summary.update(status="passed" if passed else "failed", elapsed_s=round(time.monotonic() - start, 1))
    summary["files"] = sorted(n for n in os.listdir(out) if not n.endswith(".tmp"))
    write_summary(out, summary)
    print(f"GPU check {summary['status']} in {summary['elapsed_s']} s; results in {out}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
