"""fastvae.ops.reparameterize (C++ CPU kernel) against its twin ``reparameterize_ref``.

CPU: the public op runs the C++ kernel for float32/float64. Tolerances are
per dtype and scale with the reference's magnitude. Sampled ``eps`` is drawn
in float32 on both sides, with the C++ kernel's polynomial log/sin/cos against
torch's, so sampled values agree to ~1e-6 absolute whatever the dtype. The
Triton kernel: tests/kernels/test_reparameterize.py.
"""

import textwrap

import pytest
import torch

import fastvae
from fastvae.ops import _philox, reparameterize, reparameterize_ref

from .helpers import (
    DTYPES,
    ISA_LEVELS,
    LATENT_ISA_PRELUDE,
    NEEDS_EXT,
    SAMPLED_TOL,
    SHAPE_IDS,
    SHAPES,
    TOL,
    assert_close,
    clones,
    gen,
    grads,
    leaves,
    run_at_isa,
    second_order,
)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_reparameterize_sampled_matches_ref(shape, dtype):
    mu, logvar = leaves(*shape, dtype, 2)
    mu_r, logvar_r = clones([mu, logvar])
    z = reparameterize(mu, logvar, generator=gen(7))
    z_ref = reparameterize_ref(mu_r, logvar_r, generator=gen(7))
    assert_close(z, z_ref, SAMPLED_TOL)
    g = torch.randn(shape, dtype=dtype)
    (z * g).sum().backward()
    (z_ref * g).sum().backward()
    assert_close(mu.grad, mu_r.grad, TOL[dtype])
    assert_close(logvar.grad, logvar_r.grad, SAMPLED_TOL)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_reparameterize_given_eps_matches_ref(shape, dtype):
    mu, logvar, eps = leaves(*shape, dtype, 3)
    ins_r = clones([mu, logvar, eps])
    z = reparameterize(mu, logvar, eps)
    z_ref = reparameterize_ref(*ins_r)
    assert_close(z, z_ref, TOL[dtype])
    g = torch.randn(shape, dtype=dtype)
    (z * g).sum().backward()
    (z_ref * g).sum().backward()
    for got, want in zip(grads([mu, logvar, eps]), grads(ins_r)):
        assert_close(got, want, TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_reparameterize_backward_uses_the_sampled_eps(dtype):
    """Backward == autograd of mu + eps * exp(0.5 logvar) with the very eps the kernel drew."""
    B, Z = 6, 11
    mu, logvar = leaves(B, Z, dtype, 2, seed=1)
    z = reparameterize(mu, logvar, generator=gen(3))
    # With mu = 0, logvar = 0 the same stream comes out unchanged: z = eps * exp(0) = eps.
    eps = reparameterize(torch.zeros(B, Z, dtype=dtype), torch.zeros(B, Z, dtype=dtype), generator=gen(3))
    mu_r, logvar_r = clones([mu, logvar])
    z_ref = mu_r + eps * torch.exp(0.5 * logvar_r)
    assert_close(z, z_ref, TOL[dtype])
    g = torch.randn(B, Z, dtype=dtype)
    (z * g).sum().backward()
    (z_ref * g).sum().backward()
    assert_close(mu.grad, mu_r.grad, TOL[dtype])
    assert_close(logvar.grad, logvar_r.grad, TOL[dtype])


def test_reparameterize_is_reproducible_for_a_seed():
    mu, logvar = torch.randn(5, 7), torch.randn(5, 7)
    z1 = reparameterize(mu, logvar, generator=gen(11))
    z2 = reparameterize(mu, logvar, generator=gen(11))
    z3 = reparameterize(mu, logvar, generator=gen(12))
    assert torch.equal(z1, z2)
    assert not torch.allclose(z1, z3)
    torch.manual_seed(5)
    d1 = reparameterize(mu, logvar)
    d2 = reparameterize(mu, logvar)  # the default generator moved on
    torch.manual_seed(5)
    d3 = reparameterize(mu, logvar)
    assert torch.equal(d1, d3)
    assert not torch.allclose(d1, d2)


def test_reparameterize_with_eps_is_deterministic():
    mu, logvar, eps = torch.randn(5, 7), torch.randn(5, 7), torch.randn(5, 7)
    state = torch.get_rng_state()
    z1 = reparameterize(mu, logvar, eps)
    assert torch.equal(torch.get_rng_state(), state)  # no draw when eps is given
    z2 = reparameterize(mu, logvar, eps)
    assert torch.equal(z1, z2)
    torch.testing.assert_close(z1, mu + eps * torch.exp(0.5 * logvar), rtol=1e-6, atol=1e-6)


def test_sampled_eps_is_standard_normal():
    n = 100_000
    eps = reparameterize(torch.zeros(1, n), torch.zeros(1, n), generator=gen(2024)).flatten()
    assert abs(eps.mean().item()) < 0.015  # ~5 standard errors
    assert abs(eps.std().item() - 1.0) < 0.015
    assert eps.abs().max().item() < 6.0
    assert abs((eps.abs() < 1.0).float().mean().item() - 0.6827) < 0.01
    # The four normals of one Philox call (cos/sin of two Box-Muller pairs) are uncorrelated.
    lanes = eps.view(-1, 4)
    corr = torch.corrcoef(lanes.T)
    assert (corr - torch.eye(4)).abs().max().item() < 0.02


def test_reparameterize_float64_gradcheck():
    mu, logvar = leaves(3, 5, torch.float64, 2, seed=4)
    assert torch.autograd.gradcheck(lambda m, lv: reparameterize(m, lv, generator=gen(9)), (mu, logvar))
    eps = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(reparameterize, (mu, logvar, eps))


def test_reparameterize_non_contiguous():
    base = torch.randn(6, 14)
    mu, logvar = base[:, ::2], base.t().contiguous().t()[:, 1::2]
    assert not mu.is_contiguous() and not logvar.is_contiguous()
    z = reparameterize(mu, logvar, generator=gen(1))
    z_ref = reparameterize(mu.contiguous(), logvar.contiguous(), generator=gen(1))
    assert torch.equal(z, z_ref)


def test_philox_ref_matches_kernel_stream():
    seed = torch.tensor(-(2**62) - 12345)
    n = 1027
    ref = _philox.philox_normal(seed, (1, n))
    fast = torch.ops.fastvae.reparameterize(torch.zeros(1, n), torch.zeros(1, n), None, seed) if fastvae.HAS_EXTENSION else ref
    torch.testing.assert_close(fast, ref, rtol=0, atol=SAMPLED_TOL)


@pytest.mark.parametrize(
    "args, error, match",
    [
        (lambda: (torch.randn(4, 3), torch.randn(4, 2)), ValueError, "logvar"),
        (lambda: (torch.randn(4, 3, 2), torch.randn(4, 3, 2)), ValueError, "mu"),
        (lambda: (torch.ones(4, 3, dtype=torch.int64), torch.randn(4, 3)), TypeError, "mu"),
        (lambda: (torch.randn(4, 3), torch.ones(4, 3, dtype=torch.int32)), TypeError, "logvar"),
        (lambda: (torch.randn(4, 3), torch.randn(4, 3, dtype=torch.float64)), TypeError, "logvar"),
        (lambda: (torch.full((4, 3), float("nan")), torch.randn(4, 3)), ValueError, "mu"),
        (lambda: (torch.randn(4, 3), torch.full((4, 3), float("inf"))), ValueError, "logvar"),
        (lambda: ([[0.0]], torch.randn(1, 1)), TypeError, "mu"),
    ],
    ids=["shape", "3d", "int-mu", "int-logvar", "dtype-mix", "nan-mu", "inf-logvar", "not-tensor"],
)
def test_reparameterize_bad_inputs(args, error, match):
    with pytest.raises(error, match=match):
        reparameterize(*args())


def test_reparameterize_bad_eps():
    with pytest.raises(ValueError, match="eps"):
        reparameterize(torch.randn(4, 3), torch.randn(4, 3), torch.randn(3, 4))
    with pytest.raises(ValueError, match="eps"):
        reparameterize(torch.randn(4, 3), torch.randn(4, 3), torch.full((4, 3), float("nan")))


def test_overflow_and_underflow_like_the_reference():
    """Log-variances past float32's exp range give inf / 0 as torch.exp does, not a clamped number."""
    mu = torch.zeros(1, 3)
    logvar = torch.tensor([[89.0, 200.0, -200.0]])
    eps = torch.ones(1, 3)
    z, z_ref = reparameterize(mu, logvar, eps=eps), reparameterize_ref(mu, logvar, eps=eps)
    assert z[0, 0] == z_ref[0, 0]  # exp(44.5), well inside float32's range
    assert torch.isinf(z[0, 1]) and torch.isinf(z_ref[0, 1])
    assert abs(float(z[0, 2])) <= 1e-38 and abs(float(z_ref[0, 2])) <= 1e-38


def test_refuses_double_backward_by_name():
    h = torch.randn(5, 4, requires_grad=True)
    loss = reparameterize(h, h, eps=torch.randn(5, 4)).pow(2).sum()
    with pytest.raises(RuntimeError, match="fastvae.ops.reparameterize is differentiable once"):
        second_order(loss, h)


# ------------------------------------------------------------------ opcheck


def _opcheck_cases():
    """(op name, args) for reparameterize and its backward; inputs of the forward require grad."""
    B, Z = 5, 7
    gen_ = torch.Generator().manual_seed(0)

    def t(grad=False, dtype=torch.float32):
        return torch.randn(B, Z, generator=gen_, dtype=dtype).mul_(0.5).requires_grad_(grad)

    seed = torch.tensor(1234)
    return [
        ("reparameterize", (t(True), t(True), None, seed)),
        ("reparameterize", (t(True), t(True), t(True), None)),
        ("reparameterize", (t(True, torch.float64), t(True, torch.float64), None, seed)),
        ("reparameterize_bwd", (t(), t(), None, seed)),
        ("reparameterize_bwd", (t(), t(), t(), None)),
    ]


@NEEDS_EXT
@pytest.mark.parametrize("case", range(len(_opcheck_cases())))
def test_opcheck_cpu_ops(case):
    name, args = _opcheck_cases()[case]
    torch.library.opcheck(getattr(torch.ops.fastvae, name).default, args)


# ------------------------------------------------------------- ISA levels


ISA_CHECK = LATENT_ISA_PRELUDE + textwrap.dedent(
    """
    for B, Z, dtype, (mu, lv, mp, lp, zl, eps, gz, w) in cases():
        for given in (None, eps):
            tol = SAMPLED if given is None else TOL[dtype]
            fast, ref = leaves([mu, lv]), leaves([mu, lv])
            z = reparameterize(*fast, given, generator=torch.Generator().manual_seed(B + Z))
            z_ref = reparameterize_ref(*ref, given, generator=torch.Generator().manual_seed(B + Z))
            close(z, z_ref, tol)
            (z * gz).sum().backward()
            (z_ref * gz).sum().backward()
            for a, b in zip(fast, ref):
                close(a.grad, b.grad, tol)

    # The stream itself, against the torch-ops twin, at odd lengths and extreme seeds.
    for n in (1, 3, 5, 1027, 4099):
        for s in (0, -5, 2**62 + 12345, -(2**63)):
            seed = torch.tensor(s)
            eps = torch.ops.fastvae.reparameterize(torch.zeros(1, n), torch.zeros(1, n), None, seed)
            torch.testing.assert_close(eps, _philox.philox_normal(seed, (1, n)), rtol=0, atol=SAMPLED)

    # Log-variances past float32's exp range, in whole vectors and in the last partial one.
    torch.testing.assert_close(reparameterize(zeros, lv_edges, ones), reparameterize_ref(zeros, lv_edges, ones),
                               rtol=1e-5, atol=1e-37)

    # A NaN or inf in the first or the last element (a full vector's lane, a partial vector's) is named.
    for n in (1, 5, 17, 37):
        for pos in (0, n - 1):
            for bad in (float("nan"), float("inf")):
                for k, name in enumerate(["mu", "logvar", "eps"]):
                    args = [torch.randn(1, n) for _ in range(3)]
                    args[k][0, pos] = bad
                    with pytest.raises(ValueError, match=f"argument '{name}'"):
                        reparameterize(*args)
    print("ok", isa)
    """
)


@NEEDS_EXT
@pytest.mark.parametrize("isa", ISA_LEVELS)
def test_isa_level_matches_ref(isa):
    """Each ISA level of the CPU loops against the twin: odd sizes, both dtypes, the stream, edges, bad values."""
    assert f"ok {isa}" in run_at_isa(ISA_CHECK, isa)
