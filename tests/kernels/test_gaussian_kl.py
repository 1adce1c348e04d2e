"""The Triton launchers of gaussian_kl (``fastvae.kernels.gaussian_kl``, kernels in ``_kl``) and its triton_ops.

Without CUDA the kernels run under the Triton interpreter on CPU tensors, so
shapes are tiny. Reference: ``gaussian_kl_ref`` (autograd for gradients).
"""

import importlib

import pytest
import torch

from fastvae.kernels import gaussian_kl as kernels
from fastvae.ops import gaussian_kl_ref

from .helpers import DEVICE, OPCHECK_UTILS, SHAPE_IDS, SHAPES, assert_close, free_bits_between, kl_inputs, rand

ops_module = importlib.import_module("fastvae.ops.gaussian_kl")


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
    kl, active = kernels.gaussian_kl(*ins, fb)
    assert_close(kl, kl_ref)
    assert active.dtype == torch.bool and active.numel() == (shape[1] if fb > 0 else 0)
    grads = kernels.gaussian_kl_bwd(g, *ins, active)
    for got, want in zip(grads, grads_ref):
        if want is None:
            assert got.numel() == 0
        else:
            assert_close(got, want)


def test_kl_is_zero_when_q_equals_p():
    mu, logvar = rand(5, 7, seed=1), rand(5, 7, seed=2)
    kl, _ = kernels.gaussian_kl(mu, logvar, mu.clone(), logvar.clone(), 0.0)
    assert torch.equal(kl, torch.zeros_like(kl))
    zeros = torch.zeros(5, 7, device=DEVICE)
    kl, _ = kernels.gaussian_kl(zeros, zeros, None, None, 0.0)
    assert torch.equal(kl, torch.zeros_like(kl))


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")  # the interpreter's numpy
@pytest.mark.filterwarnings("ignore:invalid value encountered in multiply:RuntimeWarning")  # tl.where's dropped side
def test_kl_with_a_vanishing_prior_variance_is_inf_like_the_reference():
    # e^-logvar_p overflows below -88; equal means used to give 0 * inf = NaN
    mu = torch.zeros(2, 3, device=DEVICE)
    lq, lp = torch.zeros(2, 3, device=DEVICE), torch.full((2, 3), -100.0, device=DEVICE)
    kl, _ = kernels.gaussian_kl(mu, lq, mu.clone(), lp, 0.0)
    assert torch.isinf(kl).all() and torch.isinf(gaussian_kl_ref(mu, lq, mu, lp)).all()


def test_triton_ops_autograd():
    """The triton_op with its registered (Python) autograd, against the reference."""
    kernels = ops_module.KERNELS.triton()
    ins = [rand(4, 6, seed=s).requires_grad_() for s in range(2)]
    kl, _ = kernels.fwd(*ins, None, None, 0.0)
    assert_close(kl.detach(), gaussian_kl_ref(*[t.detach() for t in ins]))


def _triton_opcheck_cases():
    def t(grad=False, seed=0):
        return rand(3, 5, seed=seed).requires_grad_(grad)

    active = torch.tensor([True, False, True, True, False], device=DEVICE)
    return [
        ("gaussian_kl_triton", (t(True, 1), t(True, 2), t(True, 3), t(True, 4), 0.0)),
        ("gaussian_kl_triton", (t(True, 1), t(True, 2), None, None, 0.4)),
        ("gaussian_kl_bwd_triton", (rand(3, seed=1), t(False, 1), t(False, 2), None, None, active)),
    ]


@pytest.mark.parametrize("case", range(len(_triton_opcheck_cases())))
def test_opcheck_triton_ops(case):
    ops_module.KERNELS.triton()  # registers the triton_ops
    name, args = _triton_opcheck_cases()[case]
    torch.library.opcheck(getattr(torch.ops.fastvae, name).default, args, test_utils=OPCHECK_UTILS)
