"""pytest wiring of the benchmarks: one thread, the ``ratio_bench`` fixture, the table.

``pytest benchmarks/`` times every case (fused path and baseline interleaved,
medians) and prints the ratio table at the end of the session.
``pytest benchmarks/ --benchmark-disable`` is the smoke run: every callable
runs once and the fused result is checked against the baseline, no timing.
With ``FASTVAE_BENCH_SAVE=1`` the table is also written, with the machine it
was measured on, to ``benchmarks/results/cpu.json``.

Benchmarks that measure something other than time (peak memory, ...) add rows
to their own tables with the ``extra_table`` fixture; those tables are printed
after the ratio table and saved with it (key ``"tables"``).
"""

import json
import os
import shlex

import pytest
import torch

from _ratios import interleaved_medians, machine_info, table_lines, text_table

RESULTS_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "cpu.json")
# fp32; atol scales with the output's largest entry: weight gradients are sums
# over B*T terms, their absolute rounding error grows with that magnitude.
RTOL, ATOL = 1e-4, 1e-5
PEDANTIC_ROUNDS = 5  # what pytest-benchmark itself times of the fused callable

_rows_key = pytest.StashKey[list]()
_checked_key = pytest.StashKey[int]()
_tables_key = pytest.StashKey[dict]()


def pytest_configure(config):
    config.stash[_rows_key] = []
    config.stash[_checked_key] = 0
    config.stash[_tables_key] = {}


def pytest_sessionstart(session):
    # Two shared cores: with 2 threads identical runs varied up to 20x.
    torch.set_num_threads(1)


def _timing_enabled(config, benchmark):
    return not config.getoption("benchmark_disable") and benchmark.enabled


def _assert_same(fast_out, base_out, what):
    assert len(fast_out) == len(base_out), f"{what}: {len(fast_out)} outputs vs {len(base_out)}"
    for k, (a, b) in enumerate(zip(fast_out, base_out)):
        scale = max(1.0, b.abs().max().item()) if b.numel() else 1.0
        if not torch.allclose(a, b, rtol=RTOL, atol=ATOL * scale):
            err = (a - b).abs().max().item()
            raise AssertionError(f"{what}: fastvae differs from the baseline in output {k} (max abs diff {err:.3g})")


@pytest.fixture
def ratio_bench(request, benchmark):
    """``run(case, shape, baseline, fast, base, target=None, check=None)``: check, time, record.

    ``fast`` and ``base`` are callables without arguments that return a tuple
    of tensors (the outputs, and gradients where there is a backward). Both run
    once and must agree (allclose; or, for random outputs that cannot be
    equal, ``check(fast_out, base_out, what)`` raises when they disagree); then,
    unless benchmarks are disabled, both
    are timed interleaved and the medians go to the session's ratio table, and
    ``fast`` is handed to pytest-benchmark for its own report.
    """
    config = request.config

    def run(case, shape, baseline, fast, base, target=None, check=None):
        what = f"{case} [{shape}] vs {baseline}"
        (check or _assert_same)(fast(), base(), what)
        config.stash[_checked_key] += 1
        benchmark.group = f"fastvae only: {case} {shape}"
        if not _timing_enabled(config, benchmark):
            benchmark(fast)  # runs once when disabled
            return
        medians = interleaved_medians({"fastvae": fast, "baseline": base})
        row = {
            "case": case,
            "shape": shape,
            "baseline": baseline,
            "baseline_ms": medians["baseline"] * 1e3,
            "fastvae_ms": medians["fastvae"] * 1e3,
            "speedup": medians["baseline"] / medians["fastvae"],
            "target": target,
        }
        config.stash[_rows_key].append(row)
        benchmark.extra_info.update(row)
        benchmark.pedantic(fast, rounds=PEDANTIC_ROUNDS, warmup_rounds=1, iterations=1)

    return run


@pytest.fixture
def timing_enabled(request, benchmark):
    """False under ``--benchmark-disable`` (the smoke run): skip slow measurements then."""
    return _timing_enabled(request.config, benchmark)


@pytest.fixture
def extra_table(request):
    """``add(title, row)``: append ``row`` (a dict column -> str) to the session table ``title``.

    The columns are the keys of the table's first row; the tables are printed
    after the ratio table and saved with it.
    """
    tables = request.config.stash[_tables_key]

    def add(title, row):
        tables.setdefault(title, []).append({k: str(v) for k, v in row.items()})

    return add


def _extra_table_lines(rows):
    columns = list(rows[0])
    return text_table(columns, [[row.get(c, "") for c in columns] for row in rows])


def _command(config):
    args = shlex.join(config.invocation_params.args)
    return f"FASTVAE_BENCH_SAVE=1 python -m pytest {args}".rstrip()


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's own tables
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    rows = config.stash.get(_rows_key, [])
    checked = config.stash.get(_checked_key, 0)
    tables = config.stash.get(_tables_key, {})
    if not rows and not tables:
        if checked:
            terminalreporter.write_line(
                f"fastvae benchmarks: timing disabled; {checked} cases ran once, fused checked against the baseline"
            )
        return
    info = machine_info(_command(config))
    if rows:
        terminalreporter.write_sep("=", "fastvae speed-ups (medians of interleaved runs)")
        terminalreporter.write_line(
            f"torch {info['torch']}, {info['torch_num_threads']} thread(s), {info['cpu_capability']}, "
            f"{info['cpu']}; {info['rounds']} rounds per candidate"
        )
        for line in table_lines(rows):
            terminalreporter.write_line(line)
    for title, table_rows in tables.items():
        terminalreporter.write_sep("=", f"fastvae: {title}")
        for line in _extra_table_lines(table_rows):
            terminalreporter.write_line(line)
    if os.environ.get("FASTVAE_BENCH_SAVE") == "1":
        os.makedirs(os.path.dirname(RESULTS_PATH), exist_ok=True)
        record = {"machine": info, "rows": rows}
        if tables:
            record["tables"] = tables
        with open(RESULTS_PATH, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=2)
            f.write("\n")
        terminalreporter.write_line(f"saved to {RESULTS_PATH}")
