"""pytest wiring of the benchmarks: one thread, the ``ratio_bench`` fixture, the table.

``pytest benchmarks/`` times every case (fused path and baseline interleaved,
medians) and prints the ratio table at the end of the session.
``pytest benchmarks/ --benchmark-disable`` is the smoke run: every callable
runs once and the fused result is checked against the baseline, no timing.
With ``FASTVAE_BENCH_SAVE=1`` the table is also saved, with the machine it
was measured on, to ``benchmarks/results/<device>-<isa>-<vendor>.json``: one
file per CPU class, named after the ISA fastvae's kernels ran with and the
CPU's vendor (``amd``, ``intel`` or ``other``: ``cpu-avx512-amd.json``,
``cpu-avx2-amd.json``, ``cpu-avx512-intel.json``, ...; every benchmark builds
its tensors on torch's default device, the CPU). The vendor is part of the
class because the same ISA gives different ratios on an AMD EPYC (Zen 4, 1 MB
L2) and an Intel Xeon (two 512-bit FMA ports, 2 MB L2). A session whose
baselines ran another ISA than fastvae (ATen at AVX-512 while
``FASTVAE_CPU_ISA=avx2``, say) or without ``fastvae._C`` is not saved, nor
one whose ISA or vendor differs from the file's. Saving merges: a row (key:
case, shape, baseline) measured in this session replaces the saved row with
the same key, the other saved rows stay, so a subset (``-k "latent and B64"``)
updates only its rows. Each row carries the date it was measured
(``"measured"``), the ISA that ran (``"isa"``), the CPU model (``"cpu"``) and
its vendor (``"vendor"``); ``"machine"`` describes the latest session.

With ``FASTVAE_BENCH_ROWS_OUT=<path>`` the session's ratio rows are also written to
that file as JSON (a benchmark that re-runs rows in a child process reads them).

Benchmarks that measure something other than time (peak memory, ...) add rows
to their own tables with the ``extra_table`` fixture; those tables are printed
after the ratio table and saved with it (key ``"tables"``).
"""

import json
import os
import shlex

import pytest
import torch

from fastvae.evaluate import write_report

from _ratios import ATEN_ISA, cpu_vendor, interleaved_medians, isa_of, machine_info, table_lines, text_table

# Where the benchmarks run: none moves a tensor to another device, so everything runs on torch's default
# device, the CPU; a benchmark that ran elsewhere would save to its own files (results/<device>-<isa>-<vendor>.json).
DEVICE = "cpu"
RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
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


# glibc serves allocations above its mmap threshold (128 KB in a fresh process)
# with fresh pages, faulted in on first touch and returned on free; freeing such
# a chunk raises the threshold to its size, up to 32 MB. A training process
# gets there after its first large free; a fresh benchmark process does not,
# and there nn.LSTM's backward at the DailyDialog size spent half its time in
# page faults (5.8 ms, 3.0 ms after this warm-up; fastvae 2.5-2.9 ms either
# way). So every case is timed as in a training process.
MALLOC_WARMUP_BYTES = 31 * 2**20


def warm_malloc():
    """Allocate, touch and free one block just under glibc's 32 MB cap on the mmap threshold."""
    block = torch.empty(MALLOC_WARMUP_BYTES // 4, dtype=torch.float32)
    block.fill_(0.0)
    del block


def pytest_sessionstart(session):
    # Two shared cores: with 2 threads identical runs varied up to 20x.
    torch.set_num_threads(1)
    warm_malloc()


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
    """``run(case, shape, baseline, fast, base, target=None, check=None)``: check, time, record; returns the row.

    ``fast`` and ``base`` are callables without arguments that return a tuple
    of tensors (the outputs, and gradients where there is a backward). Both run
    once and must agree (allclose; or, for random outputs that cannot be
    equal, ``check(fast_out, base_out, what)`` raises when they disagree); then,
    unless benchmarks are disabled, both
    are timed interleaved and the medians go to the session's ratio table, and
    ``fast`` is handed to pytest-benchmark for its own report. The row (a dict
    with ``baseline_ms``, ``fastvae_ms``, ``speedup``, ...) is returned; None
    when timing is disabled.
    """
    config = request.config

    def run(case, shape, baseline, fast, base, target=None, check=None):
        what = f"{case} [{shape}] vs {baseline}"
        (check or _assert_same)(fast(), base(), what)
        config.stash[_checked_key] += 1
        benchmark.group = f"fastvae only: {case} {shape}"
        if not _timing_enabled(config, benchmark):
            benchmark(fast)  # runs once when disabled
            return None
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
        return row

    return run


@pytest.fixture
def add_ratio_row(request):
    """``add(row)``: a ratio row measured elsewhere (a child process) joins the session's ratio table.

    ``row`` has the keys of :func:`ratio_bench`'s rows (case, shape, baseline, baseline_ms, fastvae_ms,
    speedup, target).
    """
    rows = request.config.stash[_rows_key]

    def add(row):
        missing = {"case", "shape", "baseline", "baseline_ms", "fastvae_ms", "speedup", "target"} - set(row)
        if missing:
            raise ValueError(f"add_ratio_row: argument 'row' lacks {sorted(missing)}")
        rows.append(dict(row))

    return add


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
    if os.environ.get("FASTVAE_BENCH_ROWS_OUT"):  # a parent benchmark reads this session's rows
        with open(os.environ["FASTVAE_BENCH_ROWS_OUT"], "w", encoding="utf-8") as f:
            json.dump(rows, f)
    info = machine_info(_command(config))
    if rows:
        terminalreporter.write_sep("=", "fastvae speed-ups (medians of interleaved runs)")
        terminalreporter.write_line(
            f"torch {info['torch']}, {info['torch_num_threads']} thread(s), {info['cpu_capability']} "
            f"(ATen {info['aten_cpu_capability']}), {info['cpu']}; {info['rounds']} rounds per candidate"
        )
        for line in table_lines(rows):
            terminalreporter.write_line(line)
    for title, table_rows in tables.items():
        terminalreporter.write_sep("=", f"fastvae: {title}")
        for line in _extra_table_lines(table_rows):
            terminalreporter.write_line(line)
    if os.environ.get("FASTVAE_BENCH_SAVE") == "1":
        try:
            path = results_path_of(info)
            record = save_results(path, info, rows, tables)
        except ValueError as exc:
            terminalreporter.write_line(f"not saved: {exc}", red=True)
            return
        total = len(record["rows"]) + sum(len(t) for t in record.get("tables", {}).values())
        now = len(rows) + sum(len(t) for t in tables.values())
        terminalreporter.write_line(f"saved to {path}: {now} row(s) measured now, merged into {total}")


def results_path(isa, vendor):
    """``results/<device>-<isa>-<vendor>.json``: the saved rows of one CPU class (``cpu-avx512-amd.json``,
    ``cpu-avx2-amd.json``, ``cpu-avx512-intel.json``, ...)."""
    return os.path.join(RESULTS_DIR, f"{DEVICE}-{isa}-{vendor}.json")


def results_path_of(info):
    """The file a session's rows go to (``info``: :func:`_ratios.machine_info`), or a ValueError saying why none.

    The class is the ISA fastvae's kernels ran with and the CPU's vendor (``info["vendor"]``; derived from
    ``info["cpu"]`` by :func:`_ratios.cpu_vendor` when absent). No file when fastvae's kernels did not run (no
    ISA to file the rows under), or when the baselines' ATen ran another ISA than fastvae's kernels (their
    ratio belongs to no single CPU class).
    """
    isa = info.get("isa")
    if not isa:
        raise ValueError(f"no ISA to file the rows under ({info.get('cpu_capability')})")
    aten = info.get("aten_cpu_capability")
    if aten in ATEN_ISA.values() and aten != ATEN_ISA.get(isa):
        raise ValueError(
            f"fastvae's kernels ran with isa={isa} but ATen's (the baselines') with {aten}; set the same level "
            "for both (FASTVAE_CPU_ISA, ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA, MKL_ENABLE_INSTRUCTIONS)"
        )
    return results_path(isa, _session_vendor(info))


def _session_vendor(info):
    """The CPU vendor a session ran on: ``info["vendor"]``, else derived from ``info["cpu"]``."""
    return info.get("vendor") or cpu_vendor(info.get("cpu"))


def _record_isa(machine):
    """The ISA of a saved record's machine (records before ``"isa"`` was stored: from its cpu_capability)."""
    return machine.get("isa") or isa_of(machine.get("cpu_capability"))


def _record_vendor(machine):
    """The CPU vendor of a saved record's machine or a row (before ``"vendor"`` was stored: from its ``"cpu"``);
    None when neither is there."""
    if machine.get("vendor"):
        return machine["vendor"]
    return cpu_vendor(machine["cpu"]) if machine.get("cpu") else None


def _row_key(row):
    """Which saved row a new one replaces: same case, shape and baseline (rows without them: same content)."""
    if any(k in row for k in ("case", "shape", "baseline")):
        return (row.get("case"), row.get("shape"), row.get("baseline"))
    return json.dumps(row, sort_keys=True)


def _merge_rows(old_rows, new_rows):
    """``old_rows`` with the rows that ``new_rows`` re-measured replaced in place, then the new keys in order."""
    new_by_key = {_row_key(r): r for r in new_rows}  # a key measured twice: the last measurement
    merged, placed = [], set()
    for row in old_rows:
        key = _row_key(row)
        if key not in new_by_key:
            merged.append(row)
        elif key not in placed:  # a key the old file held twice ends up once
            merged.append(new_by_key[key])
            placed.add(key)
    merged += [row for key, row in new_by_key.items() if key not in placed]
    return merged


def merge_results(old, info, rows, tables=None):
    """The results record after a session: ``old`` (a saved record, or None) updated with this session's rows.

    ``info``: the session's machine (:func:`_ratios.machine_info`), which becomes ``"machine"``, with the
    device (and the vendor, derived from its ``"cpu"`` when it has none). ``rows``: the ratio table's new
    rows; ``tables``: ``title -> rows`` of the extra tables. New rows get ``"measured"`` (the session's date),
    ``"isa"``, ``"cpu"`` and ``"vendor"`` (the session's) and replace the saved rows of the same (case, shape,
    baseline); the saved rows the session did not measure are kept, each with the date, ISA, CPU and vendor it
    was measured with (rows saved before those were recorded get the ones of the record they came from; a row
    with a ``"cpu"`` but no ``"vendor"`` gets the vendor of its own CPU).
    """
    old = old or {}
    old_machine = old.get("machine") or {}
    old_tags = {"measured": old_machine.get("date"), "isa": _record_isa(old_machine), "cpu": old_machine.get("cpu"),
                "vendor": _record_vendor(old_machine)}

    def dated(rs):
        out = []
        for r in rs:
            tags = {**old_tags, "vendor": _record_vendor(r) or old_tags["vendor"]}
            out.append({**r, **{k: v for k, v in tags.items() if k not in r}})
        return out

    vendor = _session_vendor(info)
    new_tags = {"measured": info.get("date"), "isa": info.get("isa"), "cpu": info.get("cpu"), "vendor": vendor}
    stamp = lambda rs: [{**r, **new_tags} for r in rs]  # noqa: E731
    record = {
        "machine": {**info, "vendor": vendor, "device": DEVICE},
        "rows": _merge_rows(dated(old.get("rows", [])), stamp(rows)),
    }
    merged_tables = {title: dated(t) for title, t in (old.get("tables") or {}).items()}
    for title, t in (tables or {}).items():
        merged_tables[title] = _merge_rows(merged_tables.get(title, []), stamp(t))
    if merged_tables:
        record["tables"] = merged_tables
    return record


def save_results(path, info, rows, tables=None):
    """Merge this session's rows into the record at ``path`` (see :func:`merge_results`) and write it atomically.

    Returns the record written. A file there that is not such a record, or one of another ISA or CPU vendor
    than the session's, raises a ValueError (it is left as is).
    """
    old = None
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                old = json.load(f)
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot merge into {path}: {exc}; move it away to start a new file") from None
        ok = (isinstance(old, dict) and isinstance(old.get("rows", []), list)
              and isinstance(old.get("machine", {}), dict)
              and isinstance(old.get("tables", {}), dict)
              and all(isinstance(r, dict) for r in old.get("rows", []))
              and all(isinstance(t, list) and all(isinstance(r, dict) for r in t)
                      for t in old.get("tables", {}).values()))
        if not ok:
            raise ValueError(f"cannot merge into {path}: not a benchmark results record; "
                             "move it away to start a new file")
        saved_isa = _record_isa(old.get("machine") or {})
        if saved_isa and saved_isa != info.get("isa"):
            raise ValueError(f"cannot merge into {path}: it holds rows measured with isa={saved_isa}, "
                             f"this session ran isa={info.get('isa')}")
        session_vendor = _session_vendor(info)
        saved_rows = old.get("rows", []) + [r for t in old.get("tables", {}).values() for r in t]
        saved_vendors = {v for v in [_record_vendor(old.get("machine") or {})]
                         + [r.get("vendor") for r in saved_rows] if v}
        if any(v != session_vendor for v in saved_vendors):
            raise ValueError(f"cannot merge into {path}: it holds rows measured on a CPU of vendor="
                             f"{'/'.join(sorted(saved_vendors))}, this session ran on vendor={session_vendor} "
                             f"({info.get('cpu')})")
    record = merge_results(old, info, rows, tables)
    write_report(path, record)  # atomic, folder created
    return record
