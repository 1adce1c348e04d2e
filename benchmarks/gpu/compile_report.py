"""Compile every Triton kernel of fastvae for sm_80 and sm_90 at the benchmark shapes; report its resources.

    python benchmarks/gpu/compile_report.py [--out benchmarks/results/gpu-compile.json] [--jobs 2]

Runs on a CPU-only machine (Triton's wheel ships ptxas). Each launcher of
``fastvae.kernels`` is called on meta tensors at the benchmark shapes
(benchmarks/test_bench_*.py) for fp32, fp16 and bf16, its launches are
recorded and every distinct specialization is compiled for each GPU (see
``fastvae.kernels.aot``). The report lists, per specialization and GPU, the
registers per thread, spilled bytes, shared memory and warps, and prints the
markdown summary table. Exit status 1 if a kernel spills or needs more shared
memory than its GPU has; a compile error raises.

Needs TRITON_INTERPRET unset (the interpreter's kernels cannot be compiled);
the tests run this script in a subprocess without it.
"""

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import sys
import time

import torch

if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
    sys.exit("compile_report.py: unset TRITON_INTERPRET (ahead-of-time compilation needs the real Triton compiler)")

import triton  # noqa: E402

from fastvae.kernels import _kl, _launch, aot  # noqa: E402
from fastvae.kernels import gaussian_kl as kgkl  # noqa: E402
from fastvae.kernels import kl_label_loss as kkll  # noqa: E402
from fastvae.kernels import linear_cross_entropy as klce  # noqa: E402
from fastvae.kernels import lstm as klstm  # noqa: E402
from fastvae.kernels import reparameterize as kreparam  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_OUT = os.path.join(REPO, "benchmarks", "results", "gpu-compile.json")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
KERNEL_MODULES = (klstm, klce, kreparam, _kl)  # the modules that define kernels (_kl: those of the KL ops)

# The benchmark shapes (benchmarks/test_bench_lstm.py, _linear_ce.py, _latent.py, _models.py).
LSTM_SHAPES = {
    "DailyDialog B64 T20 E32 H32": dict(T=20, B=64, E=32, H=32),
    "Sentence-VAE B32 T40 E300 H256": dict(T=40, B=32, E=300, H=256),
    # past the one-launch sequence kernels' limit: the per-step kernels
    "wide B32 T40 E300 H512": dict(T=40, B=32, E=300, H=512),
}
CELL_SHAPES = {
    "decoding step B640 E256 H256": dict(B=640, E=256, H=256),
    "DailyDialog generation B640 E32 H32": dict(B=640, E=32, H=32),
}
LINEAR_CE_SHAPES = {
    "Sentence-VAE N1280 H256 V10000": dict(N=1280, H=256, V=10000),
    "DailyDialog N1280 H32 V10000": dict(N=1280, H=32, V=10000),
}
LATENT_SHAPES = {"B64 Z8": (64, 8), "B512 Z64": (512, 64), "B32 Z16": (32, 16)}


def _meta(*shape, dtype=torch.float32):
    return torch.empty(*shape, dtype=dtype, device="meta")


def _lstm_calls(dtype):
    for label, s in LSTM_SHAPES.items():
        T, B, E, H = s["T"], s["B"], s["E"], s["H"]
        x, h0, c0 = _meta(T, B, E, dtype=dtype), _meta(B, H, dtype=dtype), _meta(B, H, dtype=dtype)
        w_ih, w_hh, bias = _meta(4 * H, E, dtype=dtype), _meta(4 * H, H, dtype=dtype), _meta(4 * H, dtype=dtype)
        lengths = _meta(B, dtype=torch.int64)
        for reverse in (False, True):
            yield label, lambda: klstm.lstm_fwd(x, h0, c0, w_ih, w_hh, bias, lengths, reverse, False)

            def train(reverse=reverse):
                y, _, _, *saved = klstm.lstm_fwd(x, h0, c0, w_ih, w_hh, bias, lengths, reverse, True)
                klstm.lstm_bwd(y, h0, c0, x, w_ih, w_hh, lengths, *saved, reverse)

            yield label, train
    for label, s in CELL_SHAPES.items():
        B, E, H = s["B"], s["E"], s["H"]
        x, h, c = _meta(B, E, dtype=dtype), _meta(B, H, dtype=dtype), _meta(B, H, dtype=dtype)
        w_ih, w_hh, bias = _meta(4 * H, E, dtype=dtype), _meta(4 * H, H, dtype=dtype), _meta(4 * H, dtype=dtype)
        yield label, lambda: klstm.lstm_cell(x, h, c, w_ih, w_hh, bias)


def _linear_ce_calls(dtype):
    for label, s in LINEAR_CE_SHAPES.items():
        N, H, V = s["N"], s["H"], s["V"]
        hidden, weight, bias = _meta(N, H, dtype=dtype), _meta(V, H, dtype=dtype), _meta(V, dtype=dtype)
        target, lse, grad = _meta(N, dtype=torch.int64), _meta(N), _meta(N, dtype=dtype)
        yield label, lambda: klce.linear_ce_fwd(hidden, weight, bias, target, -100, "mean", (True, True, True))
        yield label, lambda: klce.linear_ce_fwd(hidden, weight, bias, target, -100, "mean", (False, False, False))
        yield label, lambda: klce.linear_ce_fwd(hidden, weight, bias, target, -100, "none", (False, False, False))
        yield label, lambda: klce.linear_ce_bwd(grad, hidden, weight, bias, target, lse, -100, "none", (True, True, True))


def _latent_calls(dtype):
    for label, (B, Z) in LATENT_SHAPES.items():
        t = [_meta(B, Z, dtype=dtype) for _ in range(6)]
        rows = [_meta(B, dtype=dtype) for _ in range(3)]
        seed, active = _meta((), dtype=torch.int64), _meta(Z, dtype=torch.bool)
        for eps in (None, t[5]):
            yield label, lambda eps=eps: kreparam.reparameterize(t[0], t[1], eps, seed)
            yield label, lambda eps=eps: kreparam.reparameterize_bwd(t[0], t[1], eps, seed)
        for prior in ((t[2], t[3]), (None, None)):
            for free_bits in (0.0, 0.5):
                yield label, lambda p=prior, fb=free_bits: kgkl.gaussian_kl(t[0], t[1], *p, fb)
                yield label, lambda p=prior, fb=free_bits: kkll.kl_label_loss(
                    t[0], t[1], *p, t[4], t[5], 1.0, 0.5, fb)
                act = active if free_bits > 0 else _meta(0, dtype=torch.bool)
                yield label, lambda p=prior, a=act: kgkl.gaussian_kl_bwd(rows[0], t[0], t[1], *p, a)
                yield label, lambda p=prior, a=act: kkll.kl_label_loss_bwd(
                    *rows, t[0], t[1], *p, t[4], t[5], 1.0, 0.5, a)


def kernel_names():
    """Every Triton kernel of fastvae.kernels: the ``triton.jit`` functions named ``*_kernel``."""
    names = []
    for module in KERNEL_MODULES:
        for name, value in vars(module).items():
            if name.endswith("_kernel") and isinstance(value, triton.runtime.jit.JITFunction):
                names.append(name)
    return sorted(names)


def collect_jobs():
    """{Job.key(): (Job, set of (dtype, case label))}: each distinct specialization for each GPU."""
    jobs = {}
    for dtype_name, dtype in DTYPES.items():
        for calls in (_lstm_calls, _linear_ce_calls, _latent_calls):
            for label, call in calls(dtype):
                with _launch.recording() as launches:
                    call()
                for launch in launches:
                    for capability in aot.CAPABILITIES:
                        job = aot.specialize(launch, capability)
                        entry = jobs.setdefault(job.key(), (job, set()))
                        entry[1].add((dtype_name, label))
    return jobs


def _constexprs_text(job):
    names = list(job.signature)
    return ", ".join(f"{names[path[0]]}={value}" for path, value in sorted(job.constexprs.items()))


def run(jobs_in_parallel):
    """Compile everything; returns the report (a dict)."""
    jobs = collect_jobs()
    start = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(jobs_in_parallel, mp_context=context) as pool:
        usages = list(pool.map(aot.compile_and_measure, [job for job, _ in jobs.values()]))
    seconds = time.perf_counter() - start
    rows = []
    for (job, uses), usage in zip(jobs.values(), usages):
        dtypes = sorted({d for d, _ in uses}, key=list(DTYPES).index)
        rows.append({
            "kernel": job.kernel,
            "module": job.module,
            "target": aot.target_name(job.capability),
            "dtype": "/".join(dtypes),
            "cases": sorted({label for _, label in uses}),
            "constexprs": _constexprs_text(job),
            **usage,
            "shared_limit_bytes": aot.SHARED_MEMORY_LIMIT[job.capability],
        })
    rows.sort(key=lambda r: (r["kernel"], r["target"], r["dtype"], r["constexprs"], r["cases"]))
    report = {
        "about": "Triton kernels of fastvae compiled ahead of time (no GPU) for each GPU and dtype at the benchmark "
                 "shapes, one row per distinct binary. registers/stack/local/static shared: cuobjdump -res-usage; "
                 "spill bytes: ptxas -v; shared_bytes: what a launch asks for. "
                 "Written by benchmarks/gpu/compile_report.py (run by tests/kernels/test_triton_compile.py).",
        "triton": triton.__version__,
        "ptxas": {aot.target_name(c): aot.ptxas_version(c) for c in aot.CAPABILITIES},
        "targets": [aot.target_name(c) for c in aot.CAPABILITIES],
        "kernels": kernel_names(),
        "rows": rows,
    }
    return report, seconds


def problems(report):
    """Lines naming each kernel that spills or needs more shared memory than its GPU has."""
    out = []
    for r in report["rows"]:
        where = f"{r['kernel']} {r['target']} {r['dtype']} ({r['constexprs']})"
        if r["spilled_bytes"]:
            out.append(f"{where}: spills registers ({r['spill_store_bytes']} bytes stored, "
                       f"{r['spill_load_bytes']} loaded; stack frame {r['stack_bytes']} bytes)")
        if r["shared_bytes"] > r["shared_limit_bytes"]:
            out.append(f"{where}: {r['shared_bytes']} bytes of shared memory > {r['shared_limit_bytes']}")
    return out


def report_text(report):
    """The report as JSON text: the header indented, one line per row (the file has hundreds of rows)."""
    head = {k: v for k, v in report.items() if k != "rows"}
    text = json.dumps(head, indent=1)[: -len("\n}")]
    rows = ",\n".join("  " + json.dumps(r) for r in report["rows"])
    return f'{text},\n "rows": [\n{rows}\n ]\n}}\n'


def write_report(path, report):
    """Write atomically (the folder is created). The content has no date: the same kernels and tools give the same file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(report_text(report))
    os.replace(tmp, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=DEFAULT_OUT, help="the JSON report (default: %(default)s)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="compiler processes (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    report, seconds = run(args.jobs)
    write_report(args.out, report)
    print(f"{len(report['rows'])} kernel binaries compiled in {seconds:.0f} s; report: {args.out}")
    print("the per-kernel table of the docs: python benchmarks/render_results.py")
    bad = problems(report)
    for line in bad:
        print(f"PROBLEM: {line}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
