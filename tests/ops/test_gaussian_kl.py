"""fastvae.ops.gaussian_kl (C++ CPU kernel) against its twin ``gaussian_kl_ref``.

CPU: the public op runs the C++ kernel for float32/float64, with and without
a prior, with and without free bits. Tolerances are per dtype and scale with
the reference's magnitude. The Triton kernel: tests/kernels/test_gaussian_kl.py.
"""

import textwrap

import pytest
import torch

from fastvae.ops import gaussian_kl, gaussian_kl_ref

from .helpers import (
    DTYPES,
    ISA_LEVELS,
    LATENT_ISA_PRELUDE,
    NEEDS_EXT,
    SHAPE_IDS,
    SHAPES,
    TOL,
    assert_close,
    free_bits_between,
    kl_inputs,
    per_dim_kl,
    run_at_isa,
    second_order,
)


@pytest.mark.parametrize("free_bits", ["off", "active"])
@pytest.mark.parametrize("prior", [True, False], ids=["prior", "std-normal"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_gaussian_kl_matches_ref(shape, dtype, prior, free_bits):
    ins = kl_inputs(*shape, dtype, prior)
    fb = 0.0 if free_bits == "off" else free_bits_between(per_dim_kl(*ins))
    ins_r = [None if t is None else t.detach().clone().requires_grad_() for t in ins]
    kl = gaussian_kl(*ins, free_bits=fb)
    kl_ref = gaussian_kl_ref(*ins_r, free_bits=fb)
    assert kl.shape == (shape[0],)
    assert_close(kl, kl_ref, TOL[dtype])
    g = torch.randn(shape[0], dtype=dtype)
    (kl * g).sum().backward()
    (kl_ref * g).sum().backward()
    for t, t_r in zip(ins, ins_r):
        if t is not None:
            assert_close(t.grad, t_r.grad, TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_gaussian_kl_is_zero_when_q_equals_p(dtype):
    mu, logvar = torch.randn(5, 7, dtype=dtype), torch.randn(5, 7, dtype=dtype)
    assert torch.equal(gaussian_kl(mu, logvar, mu.clone(), logvar.clone()), torch.zeros(5, dtype=dtype))
    zeros = torch.zeros(5, 7, dtype=dtype)
    assert torch.equal(gaussian_kl(zeros, zeros), torch.zeros(5, dtype=dtype))


def test_gaussian_kl_standard_prior_equals_explicit_zero_prior():
    mu_q, logvar_q = torch.randn(5, 7), torch.randn(5, 7)
    zeros = torch.zeros(5, 7)
    torch.testing.assert_close(gaussian_kl(mu_q, logvar_q), gaussian_kl(mu_q, logvar_q, zeros, zeros))
    expected = 0.5 * (mu_q**2 + logvar_q.exp() - 1 - logvar_q).sum(1)
    torch.testing.assert_close(gaussian_kl(mu_q, logvar_q), expected)


@pytest.mark.parametrize("prior", [True, False], ids=["prior", "std-normal"])
def test_free_bits_semantics(prior):
    """kl.mean() == sum_j max(mean_b KL_bj, free_bits); clamped dims get no gradient."""
    ins = kl_inputs(16, 9, torch.float64, prior, seed=3)
    terms = per_dim_kl(*ins)
    fb = free_bits_between(terms)
    kl = gaussian_kl(*ins, free_bits=fb)
    expected = torch.clamp(terms.mean(0), min=fb).sum()
    torch.testing.assert_close(kl.mean(), expected)
    kl.sum().backward()
    clamped = terms.mean(0) < fb
    assert clamped.any() and (~clamped).any()
    for t in ins:
        if t is not None:
            assert torch.all(t.grad[:, clamped] == 0)
            assert torch.all(t.grad[:, ~clamped].abs().sum(0) > 0)
    # Below every dimension's mean, free bits change nothing.
    low = 0.5 * terms.mean(0).min().item()
    torch.testing.assert_close(gaussian_kl(*ins, free_bits=low), gaussian_kl(*ins))


@pytest.mark.parametrize("free_bits", [0.0, "active"])
@pytest.mark.parametrize("prior", [True, False], ids=["prior", "std-normal"])
def test_gaussian_kl_float64_gradcheck(prior, free_bits):
    ins = kl_inputs(4, 5, torch.float64, prior, seed=5)
    fb = free_bits if free_bits == 0.0 else free_bits_between(per_dim_kl(*ins))
    tensors = [t for t in ins if t is not None]
    assert torch.autograd.gradcheck(lambda *a: gaussian_kl(*a, free_bits=fb), tensors)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(free_bits=-0.1), ValueError, "free_bits"),
        (dict(free_bits=float("nan")), ValueError, "free_bits"),
        (dict(free_bits="1"), TypeError, "free_bits"),
        (dict(mu_p=torch.randn(4, 3)), ValueError, "mu_p"),
        (dict(mu_p=torch.randn(4, 2), logvar_p=torch.randn(4, 2)), ValueError, "mu_p"),
        (dict(logvar_q=torch.randn(3, 3)), ValueError, "logvar_q"),
        (dict(mu_q=torch.ones(4, 3, dtype=torch.int64)), TypeError, "mu_q"),
        (dict(mu_p=torch.randn(4, 3), logvar_p=torch.ones(4, 3, dtype=torch.int64)), TypeError, "logvar_p"),
        (dict(mu_p=torch.randn(4, 3), logvar_p=torch.full((4, 3), float("nan"))), ValueError, "logvar_p"),
        (dict(mu_q=torch.full((4, 3), float("-inf"))), ValueError, "mu_q"),
    ],
    ids=["negative", "nan-fb", "str-fb", "half-prior", "prior-shape", "shape", "int", "int-prior", "nan", "inf"],
)
def test_gaussian_kl_bad_inputs(kwargs, error, match):
    args = dict(mu_q=torch.randn(4, 3), logvar_q=torch.randn(4, 3))
    args.update(kwargs)
    with pytest.raises(error, match=match):
        gaussian_kl(**args)


def test_overflow_and_underflow_like_the_reference():
    """Log-variances past float32's exp range give inf as torch.exp does, not a clamped number."""
    mu = torch.zeros(1, 3)
    logvar = torch.tensor([[89.0, 200.0, -200.0]])
    kl, ref = gaussian_kl(mu, logvar), gaussian_kl_ref(mu, logvar)
    assert torch.isinf(kl).all() and torch.isinf(ref).all()
    # a prior log-variance of -89 or -100: e^-logvar_p overflows; both give inf (the kernel
    # used to give NaN where the means are equal: 0 * inf)
    for lp in (-89.0, -100.0):
        prior = (mu, torch.zeros(1, 3), mu, torch.full((1, 3), lp))
        assert torch.isinf(gaussian_kl(*prior)).all() and torch.isinf(gaussian_kl_ref(*prior)).all()
    shifted = (mu, torch.zeros(1, 3), mu + 1, torch.full((1, 3), -100.0))
    assert torch.isinf(gaussian_kl(*shifted)).all()
    # near the end of the range the values still match the reference
    near = torch.tensor([[88.5, -86.0, 40.0]])
    torch.testing.assert_close(gaussian_kl(mu, near), gaussian_kl_ref(mu, near), rtol=1e-5, atol=0)


def test_refuses_double_backward_by_name():
    h = torch.randn(5, 4, requires_grad=True)
    with pytest.raises(RuntimeError, match="fastvae.ops.gaussian_kl is differentiable once"):
        second_order(gaussian_kl(h, h).sum(), h)
    # first-order gradients are unaffected, and the twin does give second-order ones
    torch.autograd.grad(gaussian_kl(h, h).sum(), h)
    assert second_order(gaussian_kl_ref(h, h).sum(), h)[0].shape == h.shape


def test_names_a_missing_tensor():
    m = torch.randn(2, 3)
    with pytest.raises(TypeError, match="logvar_q must be a torch.Tensor"):
        gaussian_kl(m, None)


def test_reference_twin_checks_free_bits_too():
    m = torch.randn(2, 3)
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="free_bits"):
            gaussian_kl_ref(m, m, free_bits=bad)


# ------------------------------------------------------------------ opcheck


def _opcheck_cases():
    """(op name, args) for gaussian_kl and its backward; inputs of the forward require grad."""
    B, Z = 5, 7
    gen_ = torch.Generator().manual_seed(0)

    def t(grad=False):
        return torch.randn(B, Z, generator=gen_).mul_(0.5).requires_grad_(grad)

    active = torch.tensor([True, False, True, True, False, True, True])
    none = torch.empty(0, dtype=torch.bool)
    mq, lq, mp, lp = (t() for _ in range(4))
    return [
        ("gaussian_kl", (t(True), t(True), t(True), t(True), 0.0)),
        ("gaussian_kl", (t(True), t(True), None, None, 0.3)),
        ("gaussian_kl_bwd", (torch.randn(B, generator=gen_), mq, lq, mp, lp, none)),
        ("gaussian_kl_bwd", (torch.randn(B, generator=gen_), mq, lq, None, None, active)),
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
        for prior in (True, False):
            ins = [mu, lv, mp, lp] if prior else [mu, lv, None, None]
            for fb in (0.0, free_bits_between(ins)):
                fast, ref = leaves(ins), leaves(ins)
                kl, kl_ref = gaussian_kl(*fast, free_bits=fb), gaussian_kl_ref(*ref, free_bits=fb)
                close(kl, kl_ref, TOL[dtype])
                (kl * w[0]).sum().backward()
                (kl_ref * w[0]).sum().backward()
                for a, b in zip(fast, ref):
                    if a is not None:
                        close(a.grad, b.grad, TOL[dtype])

    # Log-variances past float32's exp range, in whole vectors and in the last partial one.
    torch.testing.assert_close(gaussian_kl(zeros, lv_edges), gaussian_kl_ref(zeros, lv_edges), rtol=1e-5, atol=0)
    prior = (zeros, torch.zeros(3, 19), zeros.clone(), lv_edges)
    torch.testing.assert_close(gaussian_kl(*prior), gaussian_kl_ref(*prior), rtol=1e-5, atol=0)
    print("ok", isa)
    """
)


@NEEDS_EXT
@pytest.mark.parametrize("isa", ISA_LEVELS)
def test_isa_level_matches_ref(isa):
    """Each ISA level of the CPU loops against the twin: odd sizes, both dtypes, priors, free bits, edges."""
    assert f"ok {isa}" in run_at_isa(ISA_CHECK, isa)
