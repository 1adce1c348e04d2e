"""What one core's FMA peak allows: the compute-bound rows measured against it.

A speed-up over a baseline that already runs near the FMA peak is bounded:
at most ``peak / baseline rate``, whatever fastvae does with the same flops.
``record_fma_limit`` times fastvae, the baseline and the FMA probe
(``torch.ops.fastvae._fma_loop``: a register-only loop of vector FMAs on the
ISA fastvae's kernels run) interleaved in one run, and adds to the table
``LIMIT_TABLE`` each side's GFLOP/s, its fraction of the peak, the bound that
the peak puts on the speed-up, and the fraction of the peak a speed-up
target asks of fastvae (target x baseline rate / peak; above 1 nothing can
reach it, and near 1 only a bare micro-kernel on cached operands does --
fastvae's GEMM tiles ran 0.87-1.0 of the probe on L1/L2-resident data across
runs on the Xeon, its whole ops 0.6-0.9 with their memory traffic and
elementwise work) -- next to the measurement, on whatever CPU runs the
benchmarks.

The probe is a ceiling no real product reaches. The practical one is the
library GEMM: ``torch.mm alone`` times the row's products as bare
``torch.mm`` calls (row-major operands made once, MKL or oneDNN behind it),
with the same flops as the row and nothing else of the op (no softmax, no
gates, no packing), interleaved with the rest. A target that asks fastvae
for more of the peak than ``torch.mm alone`` reaches asks it to run its
whole op faster than the library runs only its products.
"""

import torch

from _ratios import interleaved_medians

FMA_STEPS = 200_000  # one probe call: 200k steps of 12 vector FMAs (~1 ms)
LIMIT_TABLE = "compute-bound rows at the FMA limit: GFLOP/s vs this core's FMA peak, and the speed-up it allows"


def fma_probe():
    """One call of the FMA peak probe of the ISA fastvae's kernels run; returns its flops."""
    return torch.ops.fastvae._fma_loop(FMA_STEPS)


def fma_rates(candidates):
    """``{name: seconds per call}`` of ``candidates`` and the FMA peak in GFLOP/s, all timed interleaved."""
    probe_flops = fma_probe()
    medians = interleaved_medians({**candidates, "fma peak probe": fma_probe})
    peak = probe_flops / medians.pop("fma peak probe") / 1e9
    return medians, peak


def mm_products(products, flops, seed=0):
    """A call that runs ``torch.mm`` ``count`` times for each ``(M, K, N, count)`` of ``products``.

    The operands are made once, row-major and contiguous (the library's own layout). The products must add
    up to ``flops`` (the row's count), or the comparison would not be like for like: ValueError otherwise.
    """
    total = sum(2 * M * K * N * count for M, K, N, count in products)
    if total != flops:
        raise ValueError(f"products: {total} flops, but the row counts {flops}")
    gen = torch.Generator().manual_seed(seed)
    operands = [(torch.randn(M, K, generator=gen), torch.randn(K, N, generator=gen), torch.empty(M, N), count)
                for M, K, N, count in products]

    def run():
        for a, b, out, count in operands:
            for _ in range(count):
                torch.mm(a, b, out=out)

    return run


def mm_columns(seconds, flops, peak):
    """The ``torch.mm alone`` columns of a row: its GFLOP/s and its fraction of the peak."""
    rate = flops / seconds / 1e9
    return {"torch.mm alone GFLOP/s": f"{rate:.1f}", "torch.mm alone / peak": f"{rate / peak:.2f}"}


def record_fma_limit(extra_table, case, shape, baseline, flops, fast, base, target=None, products=None):
    """Add the row of one compute-bound case (``flops`` per call of ``fast`` and of ``base``) to ``LIMIT_TABLE``.

    ``products``: the case's matrix products as ``(M, K, N, count)``, timed as bare ``torch.mm`` calls."""
    candidates = {"fastvae": fast, "baseline": base}
    if products is not None:
        candidates["torch.mm alone"] = mm_products(products, flops)
    medians, peak = fma_rates(candidates)
    fast_rate, base_rate = flops / medians["fastvae"] / 1e9, flops / medians["baseline"] / 1e9
    bound = peak / base_rate
    row = {
        "case": case,
        "shape": shape,
        "baseline": baseline,
        "GFLOP per call": f"{flops / 1e9:.3f}",
        "baseline GFLOP/s": f"{base_rate:.1f}",
        "fastvae GFLOP/s": f"{fast_rate:.1f}",
        "FMA peak GFLOP/s": f"{peak:.1f}",
        "baseline / peak": f"{base_rate / peak:.2f}",
        "fastvae / peak": f"{fast_rate / peak:.2f}",
        "speed-up": f"{medians['baseline'] / medians['fastvae']:.2f}x",
        "bound at the peak": f"{bound:.2f}x",
    }
    if products is not None:
        row.update(mm_columns(medians["torch.mm alone"], flops, peak))
    if target is not None:
        # The rate the target asks of fastvae, as a fraction of the peak (> 1: beyond this core).
        needs = target * base_rate / peak
        row["target"] = f"{target:g}x (needs {needs:.2f} of the peak)"
    extra_table(LIMIT_TABLE, row)
    return row
