"""The latent ops (reparameterize, gaussian_kl, kl_label_loss) against their ``*_ref`` twins.

CPU: the public ops run the C++ kernels for float32/float64. Tolerances are
per dtype and scale with the reference's magnitude. Sampled ``eps`` is drawn
in float32 on both sides, with the C++ kernel's polynomial log/sin/cos against
torch's, so sampled values agree to ~1e-6 absolute whatever the dtype.
"""

import importlib
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import fastvae
from fastvae.ops import (
    _philox,
    gaussian_kl,
    gaussian_kl_ref,
    kl_label_loss,
    kl_label_loss_ref,
    reparameterize,
    reparameterize_ref,
)

kl_module = importlib.import_module("fastvae.ops.kl")
reparam_module = importlib.import_module("fastvae.ops.reparameterize")

NEEDS_EXT = pytest.mark.skipif(not fastvae.HAS_EXTENSION, reason="fastvae._C is not built")

DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
SAMPLED_TOL = 5e-6  # |eps_fast - eps_ref|, eps in float32 on both sides
SHAPES = [(1, 1), (1, 7), (5, 1), (5, 7), (64, 8), (3, 130), (2, 1030)]
SHAPE_IDS = [f"B{b}-Z{z}" for b, z in SHAPES]


def assert_close(actual, expected, tol):
    """allclose with rtol = tol and atol = tol * max(1, |expected|max)."""
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype
    scale = max(1.0, expected.detach().abs().max().item()) if expected.numel() else 1.0
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol * scale)


def leaves(B, Z, dtype, n, seed=0, scale=0.7):
    """n random [B, Z] leaf tensors that require grad."""
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(B, Z, generator=gen, dtype=dtype) * scale).requires_grad_() for _ in range(n)]


def clones(tensors):
    return [t.detach().clone().requires_grad_(t.requires_grad) for t in tensors]


def grads(tensors):
    return [t.grad for t in tensors]


def gen(seed):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------ reparameterize


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


# ------------------------------------------------------------- KL helpers


def kl_inputs(B, Z, dtype, prior, seed=0):
    ins = leaves(B, Z, dtype, 4 if prior else 2, seed=seed)
    return ins if prior else ins + [None, None]


def per_dim_kl(mu_q, logvar_q, mu_p, logvar_p):
    with torch.no_grad():
        return kl_module._kl_terms_ref(mu_q, logvar_q, mu_p, logvar_p)


def free_bits_between(terms):
    """A free_bits value that clamps some latent dims and keeps others (away from ties)."""
    means = terms.mean(0).sort().values
    if means.numel() < 2:
        return means[0].item() * 0.5
    k = means.numel() // 2
    return 0.5 * (means[k - 1] + means[k]).item()


# -------------------------------------------------------------- gaussian_kl


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


# ------------------------------------------------------------ kl_label_loss


def kll_inputs(B, Z, dtype, prior, seed=0):
    ins = kl_inputs(B, Z, dtype, prior, seed)
    z, z_label = leaves(B, Z, dtype, 2, seed=seed + 100)
    return ins + [z, z_label]


@pytest.mark.parametrize("free_bits", ["off", "active"])
@pytest.mark.parametrize("prior", [True, False], ids=["prior", "std-normal"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_kl_label_loss_matches_ref(shape, dtype, prior, free_bits):
    ins = kll_inputs(*shape, dtype, prior)
    fb = 0.0 if free_bits == "off" else free_bits_between(per_dim_kl(*ins[:4]))
    ins_r = [None if t is None else t.detach().clone().requires_grad_() for t in ins]
    out = kl_label_loss(*ins, 0.7, 1.3, fb)
    out_ref = kl_label_loss_ref(*ins_r, 0.7, 1.3, fb)
    for got, want in zip(out, out_ref):
        assert got.shape == (shape[0],)
        assert_close(got, want, TOL[dtype])
    # Gradients through all three outputs (kl and label are for logging, but differentiable).
    gen_ = torch.Generator().manual_seed(1)
    weights = [torch.randn(shape[0], generator=gen_, dtype=dtype) for _ in range(3)]
    sum(((o * w).sum() for o, w in zip(out, weights))).backward()
    sum(((o * w).sum() for o, w in zip(out_ref, weights))).backward()
    for t, t_r in zip(ins[:5], ins_r[:5]):
        if t is not None:
            assert_close(t.grad, t_r.grad, TOL[dtype])
    assert ins[5].grad is None and ins_r[5].grad is None


def test_kl_label_loss_total_only_backward():
    """The usual training use: only total is differentiated."""
    ins = kll_inputs(8, 5, torch.float64, prior=True, seed=2)
    ins_r = clones(ins)
    kl_label_loss(*ins, 0.5, 2.0)[0].mean().backward()
    kl_label_loss_ref(*ins_r, 0.5, 2.0)[0].mean().backward()
    for t, t_r in zip(ins[:5], ins_r[:5]):
        assert_close(t.grad, t_r.grad, TOL[torch.float64])


def test_z_label_gets_no_gradient():
    mu_q, logvar_q, mu_p, logvar_p, z, z_label = kll_inputs(5, 7, torch.float32, prior=True)
    assert z_label.requires_grad
    total, kl, label = kl_label_loss(mu_q, logvar_q, mu_p, logvar_p, z, z_label, 1.0, 1.0)
    (total.sum() + label.sum()).backward()
    assert z_label.grad is None
    assert z.grad is not None and z.grad.abs().sum() > 0
    # Even as the only input that requires grad, z_label gets none.
    frozen = [t.detach() for t in (mu_q, logvar_q, mu_p, logvar_p, z)]
    total, _, _ = kl_label_loss(*frozen, z_label, 1.0, 1.0)
    if total.requires_grad:
        total.sum().backward()
    assert z_label.grad is None


def test_kl_label_loss_components():
    ins = kll_inputs(6, 4, torch.float64, prior=True, seed=8)
    total, kl, label = kl_label_loss(*ins, 0.25, 3.0)
    torch.testing.assert_close(kl, gaussian_kl(*ins[:4]))
    torch.testing.assert_close(label, ((ins[4] - ins[5]) ** 2).sum(1))
    torch.testing.assert_close(total, 0.25 * kl + 3.0 * label)


def test_slcvae_step_matches_ref():
    """reparameterize feeding kl_label_loss, as in training, equals the composed reference."""
    mu_q, logvar_q, mu_p, logvar_p = leaves(64, 8, torch.float32, 4, seed=6)
    z_label = torch.randn(64, 8)
    ref = clones([mu_q, logvar_q, mu_p, logvar_p])
    z = reparameterize(mu_q, logvar_q, generator=gen(5))
    kl_label_loss(mu_q, logvar_q, mu_p, logvar_p, z, z_label, 1.0, 0.5, 0.05)[0].mean().backward()
    z_r = reparameterize_ref(ref[0], ref[1], generator=gen(5))
    kl_label_loss_ref(*ref, z_r, z_label, 1.0, 0.5, 0.05)[0].mean().backward()
    for t, t_r in zip([mu_q, logvar_q, mu_p, logvar_p], ref):
        assert_close(t.grad, t_r.grad, 1e-5)


@pytest.mark.parametrize("free_bits", [0.0, "active"])
@pytest.mark.parametrize("prior", [True, False], ids=["prior", "std-normal"])
def test_kl_label_loss_float64_gradcheck(prior, free_bits):
    ins = kll_inputs(4, 5, torch.float64, prior, seed=9)
    fb = free_bits if free_bits == 0.0 else free_bits_between(per_dim_kl(*ins[:4]))
    z_label = ins[5]
    tensors = [t for t in ins[:5] if t is not None]

    def fn(*args):
        if prior:
            return kl_label_loss(*args, z_label, 0.7, 1.3, fb)
        mu_q, logvar_q, z = args
        return kl_label_loss(mu_q, logvar_q, None, None, z, z_label, 0.7, 1.3, fb)

    assert torch.autograd.gradcheck(fn, tensors)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(z=torch.randn(4, 2)), ValueError, "z"),
        (dict(z_label=torch.randn(4, 3, dtype=torch.float64)), TypeError, "z_label"),
        (dict(z_label=torch.full((4, 3), float("nan"))), ValueError, "z_label"),
        (dict(kl_weight="1"), TypeError, "kl_weight"),
        (dict(label_weight=float("inf")), ValueError, "label_weight"),
        (dict(free_bits=-1.0), ValueError, "free_bits"),
        (dict(logvar_p=torch.full((4, 3), float("inf"))), ValueError, "logvar_p"),
        (dict(mu_q=torch.ones(4, 3, dtype=torch.int32)), TypeError, "mu_q"),
    ],
    ids=["z-shape", "z_label-dtype", "z_label-nan", "kl_weight-type", "label_weight-inf", "free_bits", "inf", "int"],
)
def test_kl_label_loss_bad_inputs(kwargs, error, match):
    args = dict(
        mu_q=torch.randn(4, 3), logvar_q=torch.randn(4, 3), mu_p=torch.randn(4, 3), logvar_p=torch.randn(4, 3),
        z=torch.randn(4, 3), z_label=torch.randn(4, 3), kl_weight=1.0, label_weight=1.0,
    )
    args.update(kwargs)
    with pytest.raises(error, match=match):
        kl_label_loss(**args)


# ------------------------------------------------------------------ opcheck


def _opcheck_cases():
    """(op name, args) for every registered C++ latent op; inputs of the forwards require grad."""
    B, Z = 5, 7
    gen_ = torch.Generator().manual_seed(0)

    def t(grad=False, dtype=torch.float32):
        return torch.randn(B, Z, generator=gen_, dtype=dtype).mul_(0.5).requires_grad_(grad)

    rows = lambda: torch.randn(B, generator=gen_)  # noqa: E731
    seed = torch.tensor(1234)
    active = torch.tensor([True, False, True, True, False, True, True])
    none = torch.empty(0, dtype=torch.bool)
    mq, lq, mp, lp, z, zl = (t() for _ in range(6))
    return [
        ("reparameterize", (t(True), t(True), None, seed)),
        ("reparameterize", (t(True), t(True), t(True), None)),
        ("reparameterize", (t(True, torch.float64), t(True, torch.float64), None, seed)),
        ("reparameterize_bwd", (t(), t(), None, seed)),
        ("reparameterize_bwd", (t(), t(), t(), None)),
        ("gaussian_kl", (t(True), t(True), t(True), t(True), 0.0)),
        ("gaussian_kl", (t(True), t(True), None, None, 0.3)),
        ("gaussian_kl_bwd", (rows(), mq, lq, mp, lp, none)),
        ("gaussian_kl_bwd", (rows(), mq, lq, None, None, active)),
        ("kl_label_loss", (t(True), t(True), t(True), t(True), t(True), t(), 0.7, 1.3, 0.0)),
        ("kl_label_loss", (t(True), t(True), None, None, t(True), t(), 0.7, 1.3, 0.2)),
        ("kl_label_loss_bwd", (rows(), rows(), rows(), mq, lq, mp, lp, z, zl, 0.7, 1.3, none)),
        ("kl_label_loss_bwd", (rows(), None, None, mq, lq, None, None, z, zl, 0.7, 1.3, active)),
    ]


@NEEDS_EXT
@pytest.mark.parametrize("case", range(len(_opcheck_cases())))
def test_opcheck_cpu_ops(case):
    name, args = _opcheck_cases()[case]
    torch.library.opcheck(getattr(torch.ops.fastvae, name).default, args)


# ------------------------------------------------------------- ISA levels
# The CPU loops are compiled once per ISA level (generic SSE2 / AVX2 /
# AVX-512 vectors, csrc/cpu/vec_ext.h); FASTVAE_CPU_ISA picks one, once
# per process, so each level runs in a subprocess. Flat sizes B*Z cover one
# element, less than one vector (4/8/16 lanes), partial last vectors, several
# 256-normal blocks of the sampler and several 1024-element tiles.

ISA_CHECK = textwrap.dedent(
    """
    import importlib, sys
    import pytest, torch
    from fastvae.ops import (_philox, gaussian_kl, gaussian_kl_ref, kl_label_loss, kl_label_loss_ref,
                             reparameterize, reparameterize_ref)

    isa = sys.argv[1]
    assert torch.ops.fastvae.cpu_capability().split()[0] == "isa=" + isa, torch.ops.fastvae.cpu_capability()
    kl_terms_ref = importlib.import_module("fastvae.ops.kl")._kl_terms_ref
    TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
    SAMPLED = 5e-6

    def close(got, want, tol):
        assert got.dtype == want.dtype and got.shape == want.shape
        scale = max(1.0, want.abs().max().item()) if want.numel() else 1.0
        torch.testing.assert_close(got, want.detach(), rtol=tol, atol=tol * scale)

    def leaves(tensors):
        return [None if t is None else t.clone().requires_grad_() for t in tensors]

    def free_bits_between(ins):
        means = kl_terms_ref(*ins).mean(0).sort().values
        k = means.numel() // 2
        return 0.5 * (means[0] if k == 0 else means[k - 1] + means[k]).item()

    for B, Z in [(1, 1), (1, 3), (3, 5), (1, 17), (7, 37), (64, 8), (3, 130), (37, 301)]:
        for dtype in (torch.float32, torch.float64):
            gen = torch.Generator().manual_seed(1000 * B + Z)
            mu, lv, mp, lp, zl, eps, gz = (torch.randn(B, Z, generator=gen, dtype=dtype) * 0.7 for _ in range(7))
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
            w = [torch.randn(B, generator=gen, dtype=dtype) for _ in range(3)]
            for prior in (True, False):
                ins = [mu, lv, mp, lp] if prior else [mu, lv, None, None]
                for fb in (0.0, free_bits_between(ins)):
                    fast, ref = leaves(ins + [eps]), leaves(ins + [eps])
                    out = kl_label_loss(*fast, zl, 0.7, 1.3, fb)
                    out_ref = kl_label_loss_ref(*ref, zl, 0.7, 1.3, fb)
                    for a, b in zip(out, out_ref):
                        close(a, b, TOL[dtype])
                    sum((o * wi).sum() for o, wi in zip(out, w)).backward()
                    sum((o * wi).sum() for o, wi in zip(out_ref, w)).backward()
                    for a, b in zip(fast, ref):
                        if a is not None:
                            close(a.grad, b.grad, TOL[dtype])
                    fast, ref = leaves(ins), leaves(ins)
                    kl, kl_ref = gaussian_kl(*fast, free_bits=fb), gaussian_kl_ref(*ref, free_bits=fb)
                    close(kl, kl_ref, TOL[dtype])
                    (kl * w[0]).sum().backward()
                    (kl_ref * w[0]).sum().backward()
                    for a, b in zip(fast, ref):
                        if a is not None:
                            close(a.grad, b.grad, TOL[dtype])

    # The stream itself, against the torch-ops twin, at odd lengths and extreme seeds.
    for n in (1, 3, 5, 1027, 4099):
        for s in (0, -5, 2**62 + 12345, -(2**63)):
            seed = torch.tensor(s)
            eps = torch.ops.fastvae.reparameterize(torch.zeros(1, n), torch.zeros(1, n), None, seed)
            torch.testing.assert_close(eps, _philox.philox_normal(seed, (1, n)), rtol=0, atol=SAMPLED)

    # Log-variances past float32's exp range, in whole vectors and in the last partial one.
    edges = torch.tensor([89.0, 200.0, -200.0, 88.5, -86.0, 40.0, -100.0, -89.0, 0.3])
    lv = edges[torch.arange(3 * 19) % 9].reshape(3, 19)
    zeros, ones = torch.zeros(3, 19), torch.ones(3, 19)
    torch.testing.assert_close(reparameterize(zeros, lv, ones), reparameterize_ref(zeros, lv, ones), rtol=1e-5, atol=1e-37)
    torch.testing.assert_close(gaussian_kl(zeros, lv), gaussian_kl_ref(zeros, lv), rtol=1e-5, atol=0)
    prior = (zeros, torch.zeros(3, 19), zeros.clone(), lv)
    torch.testing.assert_close(gaussian_kl(*prior), gaussian_kl_ref(*prior), rtol=1e-5, atol=0)
    torch.testing.assert_close(kl_label_loss(*prior, ones, ones, 1.0, 1.0)[1],
                               kl_label_loss_ref(*prior, ones, ones, 1.0, 1.0)[1], rtol=1e-5, atol=0)

    # A NaN or inf in the first or the last element (a full vector's lane, a partial vector's) is named.
    names = ["mu_q", "logvar_q", "mu_p", "logvar_p", "z", "z_label"]
    for n in (1, 5, 17, 37):
        for pos in (0, n - 1):
            for bad in (float("nan"), float("inf")):
                for k, name in enumerate(names):
                    args = [torch.randn(1, n) for _ in names]
                    args[k][0, pos] = bad
                    with pytest.raises(ValueError, match=f"argument '{name}'"):
                        kl_label_loss(*args, 1.0, 1.0)
                for k, name in enumerate(["mu", "logvar", "eps"]):
                    args = [torch.randn(1, n) for _ in range(3)]
                    args[k][0, pos] = bad
                    with pytest.raises(ValueError, match=f"argument '{name}'"):
                        reparameterize(*args)
    print("ok", isa)
    """
)


def run_python(code, *argv, **env):
    return subprocess.run(
        [sys.executable, "-c", code, *argv], env=dict(os.environ, **env), capture_output=True, text=True, timeout=600
    )


@NEEDS_EXT
@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
def test_isa_level_matches_ref(isa):
    """Each ISA level of the CPU loops against the *_ref twins: odd sizes, both dtypes, edges, bad values."""
    result = run_python(ISA_CHECK, isa, FASTVAE_CPU_ISA=isa)
    if result.returncode != 0 and "is not supported by this CPU" in result.stderr:
        pytest.skip(f"this CPU has no {isa}")
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"ok {isa}" in result.stdout


@NEEDS_EXT
@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
def test_isa_levels_agree(isa, tmp_path):
    """Every ISA level draws the same eps and computes the same losses as this process's level."""
    script = (
        "import sys, torch, fastvae\n"
        "from fastvae.ops import reparameterize, kl_label_loss\n"
        "g = torch.Generator().manual_seed(0)\n"
        "x = [torch.randn(7, 37, generator=g) for _ in range(6)]\n"
        "z = reparameterize(x[0], x[1], generator=torch.Generator().manual_seed(3))\n"
        "out = kl_label_loss(*x[:4], z, x[5], 0.7, 1.3, 0.1)\n"
        "torch.save([z, *out], sys.argv[1])\n"
    )
    result = run_python(script, str(tmp_path / "out.pt"), FASTVAE_CPU_ISA=isa)
    if result.returncode != 0 and "is not supported by this CPU" in result.stderr:
        pytest.skip(f"this CPU has no {isa}")
    assert result.returncode == 0, result.stderr[-4000:]
    got = torch.load(tmp_path / "out.pt")
    gen_ = torch.Generator().manual_seed(0)
    x = [torch.randn(7, 37, generator=gen_) for _ in range(6)]
    z = reparameterize(x[0], x[1], generator=gen(3))
    want = [z, *kl_label_loss(*x[:4], z, x[5], 0.7, 1.3, 0.1)]
    # Same integer stream; the generic level has no FMA, so floats may differ by an ulp.
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


@pytest.fixture
def two_threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


def test_parallel_chunks_match_ref(two_threads):
    """Inputs large enough to be split over threads (chunk edges inside a Philox group of 4)."""
    B, Z = 3, 12345
    mu, logvar, mu_p, logvar_p, z_label = leaves(B, Z, torch.float32, 5, seed=12)
    ref = clones([mu, logvar, mu_p, logvar_p])
    z = reparameterize(mu, logvar, generator=gen(8))
    z_r = reparameterize_ref(ref[0], ref[1], generator=gen(8))
    assert_close(z, z_r.detach(), SAMPLED_TOL)
    fb = free_bits_between(per_dim_kl(mu, logvar, mu_p, logvar_p))
    out = kl_label_loss(mu, logvar, mu_p, logvar_p, z, z_label, 0.5, 2.0, fb)
    out_r = kl_label_loss_ref(*ref, z_r, z_label, 0.5, 2.0, fb)
    for a, b in zip(out, out_r):
        assert_close(a, b.detach(), 1e-4)  # sums over 12345 dims
    out[0].sum().backward()
    out_r[0].sum().backward()
    for t, t_r in zip([mu, logvar, mu_p, logvar_p], ref):
        assert_close(t.grad, t_r.grad, 2e-5)


@NEEDS_EXT
def test_torch_compile_fullgraph():
    """The ops trace into one graph (after a first eager call registered them) with the same gradients.

    backend="aot_eager": dynamo + AOTAutograd (fake kernels, the C++ autograd
    node) without inductor, whose triton import would disturb the Triton
    interpreter tests in the same process.
    """
    mu_q, logvar_q, mu_p, logvar_p = leaves(8, 5, torch.float32, 4, seed=13)
    z_label, eps = torch.randn(8, 5), torch.randn(8, 5)

    def step(mu_q, logvar_q, mu_p, logvar_p):
        z = reparameterize(mu_q, logvar_q, eps)
        total, _, _ = kl_label_loss(mu_q, logvar_q, mu_p, logvar_p, z, z_label, 1.0, 0.5, 0.05)
        return total.mean() + gaussian_kl(mu_q, logvar_q).mean()

    inputs = [mu_q, logvar_q, mu_p, logvar_p]
    step(*inputs).backward()
    expected = [t.grad.clone() for t in inputs]
    for t in inputs:
        t.grad = None
    torch._dynamo.reset()
    torch.compile(step, fullgraph=True, backend="aot_eager")(*inputs).backward()
    for t, g in zip(inputs, expected):
        torch.testing.assert_close(t.grad, g, rtol=1e-5, atol=1e-6)
