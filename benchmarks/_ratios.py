"""Interleaved timing, the ratio table and the machine record of the benchmarks.

Plain functions, no pytest: ``conftest.py`` wires them into fixtures and hooks.
"""

import datetime
import gc
import os
import platform
import statistics
import sys
import time

import torch

ROUNDS = 21  # timed samples per candidate (medians of an odd count)
WARMUP_S = 0.2  # warm-up time per candidate before calibration
MIN_SAMPLE_S = 2e-3  # a sample repeats a call until it lasts at least this long

COLUMNS = ("case", "shape", "baseline", "baseline ms (median)", "fastvae ms (median)", "speed-up", "target")


def interleaved_medians(candidates, rounds=ROUNDS, warmup_s=WARMUP_S, min_sample_s=MIN_SAMPLE_S):
    """Median seconds per call of each callable, timed in alternating order.

    Args:
        candidates: dict ``name -> callable`` (no arguments).
    Returns:
        dict ``name -> median seconds per call`` over ``rounds`` samples each.

    Each callable is warmed up, then given a repeat count so that one sample
    lasts at least ``min_sample_s``. The samples interleave the candidates
    (A B, B A, A B, ...), so a slow phase of the shared machine hits all of
    them alike; the median discards the outliers.
    """
    repeats = {}
    for name, fn in candidates.items():
        calls, start = 0, time.perf_counter()
        while calls < 2 or time.perf_counter() - start < warmup_s:
            fn()
            calls += 1
        per_call = (time.perf_counter() - start) / calls
        repeats[name] = max(1, int(min_sample_s / per_call) + 1)

    samples = {name: [] for name in candidates}
    names = list(candidates)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            for name in names if r % 2 == 0 else reversed(names):
                fn, n = candidates[name], repeats[name]
                start = time.perf_counter()
                for _ in range(n):
                    fn()
                samples[name].append((time.perf_counter() - start) / n)
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: statistics.median(s) for name, s in samples.items()}


def format_target(speedup, target):
    if target is None:
        return "-"
    verdict = "met" if speedup >= target else "NOT met"
    return f">= {target:g}x ({verdict})"


def table_lines(rows):
    """The rows (dicts from the benchmarks) as aligned text lines, header first."""
    cells = [
        (
            r["case"],
            r["shape"],
            r["baseline"],
            f"{r['baseline_ms']:.3f}",
            f"{r['fastvae_ms']:.3f}",
            f"{r['speedup']:.2f}x",
            format_target(r["speedup"], r["target"]),
        )
        for r in rows
    ]
    return text_table(COLUMNS, cells, numeric={3, 4, 5})


def text_table(header, rows, numeric=()):
    """``rows`` (sequences of strings) under ``header`` as aligned text lines.

    Columns whose index is in ``numeric`` are right-aligned (except the header).
    """
    cells = [tuple(header)] + [tuple(row) for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for k, row in enumerate(cells):
        parts = [c.rjust(w) if i in numeric and k else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(parts).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def cpu_capability():
    """What fastvae's CPU kernels run with, or why they do not run at all."""
    try:
        import fastvae  # noqa: F401  (loads fastvae._C if it was built)

        return torch.ops.fastvae.cpu_capability()
    except (AttributeError, RuntimeError) as exc:
        return f"unavailable: fastvae._C not loaded, fastvae timings are the reference fallback ({exc})"


def isa_of(capability):
    """The ISA named in a ``cpu_capability()`` string (``"isa=avx2 blas=direct"`` -> ``"avx2"``), else None."""
    for word in str(capability).split():
        if word.startswith("isa="):
            return word[len("isa="):] or None
    return None


# fastvae's ISA names and what ATen's torch.backends.cpu.get_cpu_capability() says on the same x86 level
ATEN_ISA = {"avx512": "AVX512", "avx2": "AVX2", "generic": "DEFAULT"}


def aten_capability():
    """The vector level ATen's CPU kernels (the baselines' ops) run with, e.g. ``"AVX2"``."""
    try:
        return torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError) as exc:
        return f"unknown ({exc})"


def cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_vendor(cpu_model_string):
    """The CPU vendor class of a CPU model string (:func:`cpu_model`): ``"amd"``, ``"intel"`` or ``"other"``.

    ``"AMD EPYC 9R14"`` -> ``"amd"``, ``"Intel(R) Xeon(R) Platinum 8488C"`` -> ``"intel"``. Part of a CPU
    class with the ISA: cores of the two vendors at the same ISA give different ratios (L2 size, FMA ports).
    """
    text = str(cpu_model_string or "").lower()
    if "amd" in text:
        return "amd"
    if "intel" in text:
        return "intel"
    return "other"


def machine_info(command):
    """Where and how the numbers were taken (stored next to them in the JSON).

    ``"isa"``: the ISA fastvae's kernels ran with (None without ``fastvae._C``);
    ``"aten_cpu_capability"``: ATen's, the baselines' (ATEN_CPU_CAPABILITY lowers it);
    ``"vendor"``: the CPU's vendor class (:func:`cpu_vendor`: ``"amd"``, ``"intel"`` or ``"other"``).
    """
    capability = cpu_capability()
    cpu = cpu_model()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "torch": torch.__version__,
        "cpu_capability": capability,
        "isa": isa_of(capability),
        "aten_cpu_capability": aten_capability(),
        "cpu": cpu,
        "vendor": cpu_vendor(cpu),
        "cpu_count": os.cpu_count(),
        "torch_num_threads": torch.get_num_threads(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "rounds": ROUNDS,
    }
