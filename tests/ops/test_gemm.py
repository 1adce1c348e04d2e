"""``torch.ops.fastvae._gemm``: the GEMM the CPU kernels use (csrc/cpu/blas.h), against ``torch.mm``.

An internal op (schema csrc/gemm_ops.cpp, kernel csrc/cpu/gemm_cpu.cpp, fake
kernel fastvae/ops/_gemm.py): float GEMMs run fastvae's register-tiled
kernels on AVX2/AVX-512 CPUs, double ones (and the generic level) BLAS.
"""

import math
import textwrap

import pytest
import torch

from .helpers import ISA_LEVELS, NEEDS_EXT, run_at_isa

pytestmark = NEEDS_EXT

OPS = torch.ops.fastvae

GEMM_ARGS = (torch.randn(3, 4), torch.randn(4, 5), False, False)


def test_opcheck_gemm_schema():
    torch.library.opcheck(OPS._gemm.default, GEMM_ARGS, test_utils="test_schema")


def test_opcheck_gemm_full():
    torch.library.opcheck(OPS._gemm.default, GEMM_ARGS)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("trans_a, trans_b", [(False, False), (False, True), (True, False), (True, True)])
def test_gemm_matches_mm(trans_a, trans_b, dtype):
    for M in (1, 5, 13, 37):
        for K in (1, 7, 300, 520):
            for N in (1, 17, 33, 100):
                a = torch.randn(*((K, M) if trans_a else (M, K)), dtype=dtype)
                b = torch.randn(*((N, K) if trans_b else (K, N)), dtype=dtype)
                expected = torch.mm(a.t() if trans_a else a, b.t() if trans_b else b)
                out = OPS._gemm(a, b, trans_a, trans_b)
                assert out.shape == (M, N)
                # fp32: the error of a K-term dot product grows with K
                tol = 1e-5 * math.sqrt(K) if dtype == torch.float32 else 1e-12 * math.sqrt(K)
                torch.testing.assert_close(out, expected, rtol=tol, atol=tol, msg=lambda m: f"M={M} K={K} N={N}: {m}")


def test_gemm_large_rows_and_non_contiguous():
    a = torch.randn(300, 517)[:, ::2]  # [300, 259], strided
    b = torch.randn(70, 259)
    torch.testing.assert_close(OPS._gemm(a, b, False, True), a @ b.t(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(OPS._gemm(torch.randn(0, 5), torch.randn(5, 3), False, False), torch.zeros(0, 3))
    torch.testing.assert_close(OPS._gemm(torch.randn(4, 0), torch.randn(0, 3), False, False), torch.zeros(4, 3))


def test_gemm_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        OPS._gemm(torch.randn(3), torch.randn(3, 4), False, False)
    with pytest.raises(ValueError, match="inner sizes"):
        OPS._gemm(torch.randn(3, 4), torch.randn(5, 4), False, False)
    with pytest.raises(TypeError, match="float32 or both float64"):
        OPS._gemm(torch.randn(3, 4), torch.randn(4, 4, dtype=torch.float64), False, False)


ISA_CHECK = textwrap.dedent(
    """
    torch.manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        for ta in (False, True):
            for tb in (False, True):
                # N = 300: a last column group of 12 (one vector wide on AVX-512, A copied into tiles)
                for N in (33, 300):
                    a, b = torch.randn(37, 300, dtype=dtype), torch.randn(300, N, dtype=dtype)
                    a_in, b_in = (a.t().contiguous() if ta else a), (b.t().contiguous() if tb else b)
                    out = torch.ops.fastvae._gemm(a_in, b_in, ta, tb)
                    torch.testing.assert_close(out, a @ b, rtol=2e-4, atol=2e-4)
    # Tall products of several depth passes (the LSTM's weight gradients [x | hprev]^T @ dgates:
    # M 256-300, K 1248-1280): row blocks whose tail split of the register tiles crosses a block
    # boundary, each row's sum over every pass counted once (a row computed twice adds a pass twice).
    # Then both loop orders of the AVX-512 tile, whatever this core's L2: panels that stay in L2
    # (K300 x N256, 300 KB: row tiles over the whole depth, a 7-row tail) and panels larger than any
    # L2 (K1248 x N1024, 5 MB: depth passes).
    tall = [(M, 1248, 96) for M in (37, 256, 301)]
    for M, K, N in tall + [(37, 300, 256), (301, 300, 256), (301, 1248, 1024)]:
        for ta in (False, True):
            a, b = torch.randn(M, K), torch.randn(K, N)
            out = torch.ops.fastvae._gemm(a.t().contiguous() if ta else a, b, ta, False)
            torch.testing.assert_close(out, a @ b, rtol=1e-3, atol=1e-3)
    """
)


@pytest.mark.parametrize("isa", ISA_LEVELS)
def test_isa_variant_matches_mm(isa):
    run_at_isa(ISA_CHECK, isa)
