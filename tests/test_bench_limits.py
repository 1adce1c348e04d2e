"""The ``torch.mm alone`` columns of the benchmarks' GEMM-limit tables (``benchmarks/_limits.py``).

No timing: the products each row hands to ``mm_products`` must be the flops the row counts (else the
practical ceiling would be measured on other work), and the columns are computed from the time given.
"""

import pytest
import torch


@pytest.fixture
def limits(benchmarks_module):
    return benchmarks_module("_limits.py")


@pytest.fixture
def bench_lstm(benchmarks_module):
    return benchmarks_module("test_bench_lstm.py")


def test_products_must_add_up_to_the_rows_flops(limits):
    with pytest.raises(ValueError, match="products: 2048 flops, but the row counts 4096"):
        limits.mm_products([(4, 8, 16, 2)], 4096)


def test_products_run_torch_mm_on_each_shape_count_times(limits, monkeypatch):
    calls = []
    real_mm = torch.mm

    def counting_mm(a, b, out):
        calls.append((tuple(a.shape), tuple(b.shape)))
        return real_mm(a, b, out=out)

    run = limits.mm_products([(3, 5, 7, 2), (2, 4, 6, 1)], 2 * (3 * 5 * 7 * 2 + 2 * 4 * 6))
    monkeypatch.setattr(torch, "mm", counting_mm)
    run()
    assert calls == [((3, 5), (5, 7)), ((3, 5), (5, 7)), ((2, 4), (4, 6))]


def test_columns_are_the_rate_and_its_fraction_of_the_peak(limits):
    assert limits.mm_columns(0.5, 3e9, 8.0) == {"torch.mm alone GFLOP/s": "6.0", "torch.mm alone / peak": "0.75"}


@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
def test_lstm_products_are_the_flops_the_rows_count(bench_lstm, backward):
    for spec in bench_lstm.SHAPES.values():
        dims = (spec["T"], spec["B"], spec["E"], spec["H"], spec["layers"], backward)
        products = bench_lstm.lstm_products(*dims)
        assert sum(2 * M * K * N * count for M, K, N, count in products) == bench_lstm.lstm_flops(*dims)
    cell = bench_lstm.CELL
    dims = (1, cell["B"], cell["E"], cell["H"], 1, False)
    assert bench_lstm.lstm_products(*dims) == [(cell["B"], cell["E"], 4 * cell["H"], 1),
                                               (cell["B"], cell["H"], 4 * cell["H"], 1)]
