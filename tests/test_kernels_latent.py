"""Tests for the Triton latent kernels (``fastvae.kernels.latent``) and their triton_ops.

Without CUDA the kernels run under the Triton interpreter on CPU tensors, so
shapes are tiny. References: the ``*_ref`` twins (autograd for gradients),
the C++ kernels for the sampled eps (same Philox stream), and
``fastvae.ops._philox`` (the stream in torch ops).
"""

import importlib
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import fastvae  # noqa: E402
from fastvae.kernels import latent as klatent  # noqa: E402
from fastvae.ops import _philox, gaussian_kl_ref, kl_label_loss_ref  # noqa: E402

kl_module = importlib.import_module("fastvae.ops.kl")
reparam_module = importlib.import_module("fastvae.ops.reparameterize")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = 1e-5  # fp32: rtol, and atol relative to the reference's scale
EPS_TOL = 2e-6  # sampled eps vs the C++ / torch streams (log/sin/cos differ by ~1 ulp)
SHAPES = [(1, 1), (5, 7), (3, 130)]
SHAPE_IDS = [f"B{b}-Z{z}" for b, z in SHAPES]
NEEDS_EXT = pytest.mark.skipif(not fastvae.HAS_EXTENSION, reason="fastvae._C is not built")
NEEDS_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16 is not supported by the Triton interpreter")


def assert_close(actual, expected, tol=TOL):
    assert actual.shape == expected.shape
    scale = max(1.0, expected.detach().abs().max().item()) if expected.numel() else 1.0
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol * scale)


def rand(*shape, seed=0, scale=0.7, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=gen) * scale).to(DEVICE, dtype)


def seed_tensor(value):
    return torch.tensor(value, dtype=torch.int64, device=DEVICE)


def free_bits_between(mu_q, logvar_q, mu_p, logvar_p):
    """A free_bits value that clamps some dims and keeps others (midway between two dim means)."""
    means = kl_module._kl_terms_ref(mu_q, logvar_q, mu_p, logvar_p).mean(0).sort().values
    if means.numel() < 2:
        return 0.5 * means[0].item()
    k = means.numel() // 2
    return 0.5 * (means[k - 1] + means[k]).item()


# ------------------------------------------------------------ reparameterize


@pytest.mark.parametrize("seed", [0, 42, -5, 2**62 + 12345])
def test_sampled_eps_matches_torch_stream(seed):
    n = 1027  # not a multiple of 4 or of the block
    zeros = torch.zeros(1, n, device=DEVICE)
    eps = klatent.reparameterize(zeros, zeros, None, seed_tensor(seed))
    ref = _philox.philox_normal(seed_tensor(seed), (1, n))
    torch.testing.assert_close(eps, ref, rtol=0, atol=EPS_TOL)


@NEEDS_EXT
@pytest.mark.parametrize("seed", [7, -(2**63)])
def test_sampled_eps_matches_cpu_kernel(seed):
    """CPU (C++) and GPU (Triton) kernels draw the same eps for a seed."""
    shape = (6, 37)
    zeros = torch.zeros(shape, device=DEVICE)
    eps = klatent.reparameterize(zeros, zeros, None, seed_tensor(seed)).cpu()
    cpu = torch.ops.fastvae.reparameterize(torch.zeros(shape), torch.zeros(shape), None, torch.tensor(seed))
    torch.testing.assert_close(eps, cpu, rtol=0, atol=EPS_TOL)
    assert (eps == cpu).float().mean() > 0.5  # most draws agree bit for bit


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_reparameterize_forward_backward(shape):
    mu, logvar, eps, grad_z = (rand(*shape, seed=s) for s in range(4))
    seed = seed_tensor(99)
    sampled = klatent.reparameterize(torch.zeros_like(mu), torch.zeros_like(mu), None, seed)
    for e, eps_arg, seed_arg in ((eps, eps, None), (sampled, None, seed)):
        z = klatent.reparameterize(mu, logvar, eps_arg, seed_arg)
        assert_close(z, mu + e * torch.exp(0.5 * logvar))
        grad_logvar = klatent.reparameterize_bwd(grad_z, logvar, eps_arg, seed_arg)
        assert_close(grad_logvar, 0.5 * grad_z * e * torch.exp(0.5 * logvar))


def test_reparameterize_triton_op_autograd():
    backend = reparam_module.BACKENDS.triton()
    mu, logvar = rand(5, 7, seed=1).requires_grad_(), rand(5, 7, seed=2).requires_grad_()
    seed = seed_tensor(3)
    z = backend.fwd(mu, logvar, None, seed)
    eps = _philox.philox_normal(seed, (5, 7))
    mu_r, logvar_r = mu.detach().clone().requires_grad_(), logvar.detach().clone().requires_grad_()
    z_ref = mu_r + eps * torch.exp(0.5 * logvar_r)
    assert_close(z, z_ref.detach(), EPS_TOL * 10)
    g = rand(5, 7, seed=4)
    (z * g).sum().backward()
    (z_ref * g).sum().backward()
    assert_close(mu.grad, mu_r.grad)
    assert_close(logvar.grad, logvar_r.grad, EPS_TOL * 10)


# ----------------------------------------------------------------- KL + label


def kl_inputs(B, Z, prior, label, seed=0, dtype=torch.float32):
    n = 4 if prior else 2
    ins = [rand(B, Z, seed=seed + k, dtype=dtype) for k in range(n)]
    if not prior:
        ins += [None, None]
    if label:
        ins += [rand(B, Z, seed=seed + 10, dtype=dtype), rand(B, Z, seed=seed + 11, dtype=dtype)]
    return ins


def ref_kl(ins, free_bits):
    """gaussian_kl_ref and the gradients of (kl * g).sum() for a fixed g."""
    leaves = [None if t is None else t.detach().clone().requires_grad_() for t in ins]
    kl = gaussian_kl_ref(*leaves, free_bits=free_bits)
    g = rand(kl.shape[0], seed=77)
    (kl * g).sum().backward()
    return kl.detach(), g, [None if t is None else t.grad for t in leaves]


@pytest.mark.parametrize("free_bits", ["off", "active"])
@pytest.mark.parametrize("prior", [True, False], ids=["prior", "std-normal"])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_gaussian_kl_forward_backward(shape, prior, free_bits):
    ins = kl_inputs(*shape, prior, label=False)
    fb = 0.0 if free_bits == "off" else free_bits_between(*ins)
    kl_ref, g, grads_ref = ref_kl(ins, fb)
    kl, active = klatent.gaussian_kl(*ins, fb)
    assert_close(kl, kl_ref)
    assert active.dtype == torch.bool and active.numel() == (shape[1] if fb > 0 else 0)
    grads = klatent.gaussian_kl_bwd(g, *ins, active)
    for got, want in zip(grads, grads_ref):
        if want is None:
            assert got.numel() == 0
        else:
            assert_close(got, want)


def ref_kll(ins, weights, free_bits, out_grads):
    leaves = [None if t is None else t.detach().clone().requires_grad_() for t in ins]
    out = kl_label_loss_ref(*leaves, *weights, free_bits)
    sum(((o * g).sum() for o, g in zip(out, out_grads) if g is not None)).backward()
    return [o.detach() for o in out], [None if t is None else t.grad for t in leaves[:5]]


@pytest.mark.parametrize("free_bits", ["off", "active"])
@pytest.mark.parametrize("prior", [True, False], ids=["prior", "std-normal"])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_kl_label_loss_forward_backward(shape, prior, free_bits):
    ins = kl_inputs(*shape, prior, label=True, seed=3)
    fb = 0.0 if free_bits == "off" else free_bits_between(*ins[:4])
    weights = (0.7, 1.3)
    B = shape[0]
    out_grads = [rand(B, seed=20), rand(B, seed=21), rand(B, seed=22)]
    out_ref, grads_ref = ref_kll(ins, weights, fb, out_grads)
    *out, active = klatent.kl_label_loss(*ins, *weights, fb)
    for got, want in zip(out, out_ref):
        assert_close(got, want)
    grads = klatent.kl_label_loss_bwd(*out_grads, *ins, *weights, active)
    for got, want in zip(grads, grads_ref):
        if want is None:
            assert got.numel() == 0
        else:
            assert_close(got, want)


def test_kl_label_loss_backward_without_component_grads():
    """grad_kl / grad_label None (only total is used) count as zero."""
    ins = kl_inputs(5, 7, True, label=True, seed=5)
    out_grads = [rand(5, seed=30), None, None]
    _, grads_ref = ref_kll(ins, (1.0, 0.5), 0.0, out_grads)
    *_, active = klatent.kl_label_loss(*ins, 1.0, 0.5, 0.0)
    grads = klatent.kl_label_loss_bwd(*out_grads, *ins, 1.0, 0.5, active)
    for got, want in zip(grads, grads_ref):
        assert_close(got, want)


@pytest.mark.parametrize("prior", [True, False], ids=["prior", "std-normal"])
def test_multiple_blocks(monkeypatch, prior):
    """Force small blocks so rows, dims and the Z loop span several blocks."""
    monkeypatch.setattr(klatent, "_MAX_ROWS", 2)
    monkeypatch.setattr(klatent, "_MAX_COLS", 4)
    monkeypatch.setattr(klatent, "_ELEM_BLOCK", 16)
    ins = kl_inputs(5, 11, prior, label=True, seed=7)
    fb = free_bits_between(*ins[:4])
    out_grads = [rand(5, seed=40), rand(5, seed=41), rand(5, seed=42)]
    out_ref, grads_ref = ref_kll(ins, (0.3, 2.0), fb, out_grads)
    *out, active = klatent.kl_label_loss(*ins, 0.3, 2.0, fb)
    for got, want in zip(out, out_ref):
        assert_close(got, want)
    grads = klatent.kl_label_loss_bwd(*out_grads, *ins, 0.3, 2.0, active)
    for got, want in zip(grads, grads_ref):
        if want is not None:
            assert_close(got, want)
    zeros = torch.zeros(3, 13, device=DEVICE)
    eps = klatent.reparameterize(zeros, zeros, None, seed_tensor(8))
    torch.testing.assert_close(eps, _philox.philox_normal(seed_tensor(8), (3, 13)), rtol=0, atol=EPS_TOL)


def test_kl_is_zero_when_q_equals_p():
    mu, logvar = rand(5, 7, seed=1), rand(5, 7, seed=2)
    kl, _ = klatent.gaussian_kl(mu, logvar, mu.clone(), logvar.clone(), 0.0)
    assert torch.equal(kl, torch.zeros_like(kl))
    zeros = torch.zeros(5, 7, device=DEVICE)
    kl, _ = klatent.gaussian_kl(zeros, zeros, None, None, 0.0)
    assert torch.equal(kl, torch.zeros_like(kl))


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")  # the interpreter's numpy
@pytest.mark.filterwarnings("ignore:invalid value encountered in multiply:RuntimeWarning")  # tl.where's dropped side
def test_kl_with_a_vanishing_prior_variance_is_inf_like_the_reference():
    # e^-logvar_p overflows below -88; equal means used to give 0 * inf = NaN
    mu = torch.zeros(2, 3, device=DEVICE)
    lq, lp = torch.zeros(2, 3, device=DEVICE), torch.full((2, 3), -100.0, device=DEVICE)
    kl, _ = klatent.gaussian_kl(mu, lq, mu.clone(), lp, 0.0)
    assert torch.isinf(kl).all() and torch.isinf(gaussian_kl_ref(mu, lq, mu, lp)).all()


def test_triton_ops_autograd():
    """The triton_ops with their registered (Python) autograd, against the references."""
    backend = kl_module.BACKENDS.triton()
    ins = [rand(4, 6, seed=s).requires_grad_() for s in range(5)] + [rand(4, 6, seed=9).requires_grad_()]
    ref = [t.detach().clone().requires_grad_() for t in ins]
    fb = free_bits_between(*[t.detach() for t in ins[:4]])
    total, kl, label, _ = backend.kll(*ins, 0.7, 1.3, fb)
    total_r, kl_r, label_r = kl_label_loss_ref(*ref, 0.7, 1.3, fb)
    (total.sum() + 0.5 * label.sum()).backward()
    (total_r.sum() + 0.5 * label_r.sum()).backward()
    for t, t_r in zip(ins[:5], ref[:5]):
        assert_close(t.grad, t_r.grad)
    assert ins[5].grad is None
    kl2, _ = backend.kl(*ref[:2], None, None, 0.0)
    assert_close(kl2.detach(), gaussian_kl_ref(*[t.detach() for t in ref[:2]]))


@pytest.mark.parametrize("dtype", [torch.float16, pytest.param(torch.bfloat16, marks=NEEDS_CUDA)], ids=["fp16", "bf16"])
def test_low_precision_close_to_fp32(dtype):
    """16-bit inputs, fp32 math: results close to fp32 on the same (rounded) inputs."""
    tol = {torch.float16: 2e-3, torch.bfloat16: 1e-2}[dtype]
    ins = kl_inputs(5, 7, True, label=True, seed=11, dtype=dtype)
    ins32 = [t.float() for t in ins]
    *out, active = klatent.kl_label_loss(*ins, 0.7, 1.3, 0.0)
    *out32, _ = klatent.kl_label_loss(*ins32, 0.7, 1.3, 0.0)
    for got, want in zip(out, out32):
        assert got.dtype == dtype
        assert_close(got.float(), want, tol)
    g = rand(5, seed=3)
    for got, want in zip(
        klatent.kl_label_loss_bwd(g.to(dtype), None, None, *ins, 0.7, 1.3, active),
        klatent.kl_label_loss_bwd(g, None, None, *ins32, 0.7, 1.3, active),
    ):
        assert got.dtype == dtype
        assert_close(got.float(), want, tol)
    z = klatent.reparameterize(ins[0], ins[1], None, seed_tensor(4))
    z32 = klatent.reparameterize(ins32[0], ins32[1], None, seed_tensor(4))
    assert z.dtype == dtype
    assert_close(z.float(), z32, tol)


# ------------------------------------------------------------------ opcheck
# Under the interpreter wrap_triton hands back the raw kernel, which cannot run
# on the FakeTensors of aot_dispatch, so that test needs a GPU.
OPCHECK_UTILS = ("test_schema", "test_autograd_registration", "test_faketensor")


def _triton_opcheck_cases():
    B, Z = 3, 5

    def t(grad=False, seed=0):
        return rand(B, Z, seed=seed).requires_grad_(grad)

    rows = lambda s: rand(B, seed=s)  # noqa: E731
    active = torch.tensor([True, False, True, True, False], device=DEVICE)
    none = torch.empty(0, dtype=torch.bool, device=DEVICE)
    seed = seed_tensor(5)
    return [
        ("reparameterize_triton", (t(True, 1), t(True, 2), None, seed)),
        ("reparameterize_triton", (t(True, 1), t(True, 2), t(False, 3), None)),
        ("reparameterize_bwd_triton", (t(False, 1), t(False, 2), None, seed)),
        ("gaussian_kl_triton", (t(True, 1), t(True, 2), t(True, 3), t(True, 4), 0.0)),
        ("gaussian_kl_triton", (t(True, 1), t(True, 2), None, None, 0.4)),
        ("gaussian_kl_bwd_triton", (rows(1), t(False, 1), t(False, 2), None, None, active)),
        ("kl_label_loss_triton", (t(True, 1), t(True, 2), t(True, 3), t(True, 4), t(True, 5), t(False, 6), 0.7, 1.3, 0.0)),
        ("kl_label_loss_bwd_triton", (rows(1), None, rows(2), t(False, 1), t(False, 2), t(False, 3), t(False, 4),
                                      t(False, 5), t(False, 6), 0.7, 1.3, none)),
    ]


@pytest.mark.parametrize("case", range(len(_triton_opcheck_cases())))
def test_opcheck_triton_ops(case):
    reparam_module.BACKENDS.triton()  # registers the triton_ops
    kl_module.BACKENDS.triton()
    name, args = _triton_opcheck_cases()[case]
    torch.library.opcheck(getattr(torch.ops.fastvae, name).default, args, test_utils=OPCHECK_UTILS)
