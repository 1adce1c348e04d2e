"""fastvae.ops.kl_label_loss (C++ CPU kernel) against its twin ``kl_label_loss_ref``, and the SLCVAE latent step.

CPU: the public op runs the C++ kernel for float32/float64. Tolerances are
per dtype and scale with the reference's magnitude. The last section runs
the latent step of SLCVAE training -- reparameterize feeding kl_label_loss
(and gaussian_kl) -- as a whole: across ISA levels, threads and
torch.compile. The Triton kernel: tests/kernels/test_kl_label_loss.py.
"""

import textwrap

import pytest
import torch

from fastvae.ops import gaussian_kl, kl_label_loss, kl_label_loss_ref, reparameterize, reparameterize_ref

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
    free_bits_between,
    gen,
    kll_inputs,
    leaves,
    per_dim_kl,
    run_at_isa,
    second_order,
)


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


def test_overflow_and_underflow_like_the_reference():
    """A prior log-variance of -89 or -100: e^-logvar_p overflows; the KL is inf as in the twin (not NaN)."""
    mu = torch.zeros(1, 3)
    for lp in (-89.0, -100.0):
        prior = (mu, torch.zeros(1, 3), mu, torch.full((1, 3), lp))
        z = torch.zeros(1, 3)
        kl = kl_label_loss(*prior, z, z, 1.0, 1.0)[1]
        assert torch.equal(kl, kl_label_loss_ref(*prior, z, z, 1.0, 1.0)[1])


def test_refuses_double_backward_by_name():
    h = torch.randn(5, 4, requires_grad=True)
    loss = kl_label_loss(h, h, None, None, h, torch.randn(5, 4), 1.0, 1.0)[0].sum()
    with pytest.raises(RuntimeError, match="fastvae.ops.kl_label_loss is differentiable once"):
        second_order(loss, h)


def test_names_a_missing_tensor():
    m = torch.randn(2, 3)
    for missing in ("z", "z_label"):
        args = dict(mu_q=m, logvar_q=m, mu_p=None, logvar_p=None, z=m, z_label=m, kl_weight=1.0, label_weight=1.0)
        args[missing] = None
        with pytest.raises(TypeError, match=f"{missing} must be a torch.Tensor"):
            kl_label_loss(**args)


def test_reference_twin_checks_the_weights_too():
    m = torch.randn(2, 3)
    with pytest.raises(ValueError, match="kl_weight"):
        kl_label_loss_ref(m, m, None, None, m, m, float("inf"), 1.0)


# ------------------------------------------------------------------ opcheck


def _opcheck_cases():
    """(op name, args) for kl_label_loss and its backward; inputs of the forward require grad."""
    B, Z = 5, 7
    gen_ = torch.Generator().manual_seed(0)

    def t(grad=False):
        return torch.randn(B, Z, generator=gen_).mul_(0.5).requires_grad_(grad)

    rows = lambda: torch.randn(B, generator=gen_)  # noqa: E731
    active = torch.tensor([True, False, True, True, False, True, True])
    none = torch.empty(0, dtype=torch.bool)
    mq, lq, mp, lp, z, zl = (t() for _ in range(6))
    return [
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


ISA_CHECK = LATENT_ISA_PRELUDE + textwrap.dedent(
    """
    for B, Z, dtype, (mu, lv, mp, lp, zl, eps, gz, w) in cases():
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

    # Log-variances past float32's exp range, in whole vectors and in the last partial one.
    prior = (zeros, torch.zeros(3, 19), zeros.clone(), lv_edges)
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
    print("ok", isa)
    """
)


@NEEDS_EXT
@pytest.mark.parametrize("isa", ISA_LEVELS)
def test_isa_level_matches_ref(isa):
    """Each ISA level of the CPU loops against the twin: odd sizes, both dtypes, priors, free bits, edges, bad values."""
    assert f"ok {isa}" in run_at_isa(ISA_CHECK, isa)


# ------------------------------------------------- the SLCVAE latent step


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


@NEEDS_EXT
@pytest.mark.parametrize("isa", ISA_LEVELS)
def test_isa_levels_agree(isa, tmp_path):
    """Every ISA level draws the same eps and computes the same losses as this process's level."""
    script = (
        "import sys, torch, fastvae\n"
        "from fastvae.ops import reparameterize, kl_label_loss\n"
        "g = torch.Generator().manual_seed(0)\n"
        "x = [torch.randn(7, 37, generator=g) for _ in range(6)]\n"
        "z = reparameterize(x[0], x[1], generator=torch.Generator().manual_seed(3))\n"
        "out = kl_label_loss(*x[:4], z, x[5], 0.7, 1.3, 0.1)\n"
        "torch.save([z, *out], sys.argv[2])\n"
    )
    run_at_isa(script, isa, str(tmp_path / "out.pt"))
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
