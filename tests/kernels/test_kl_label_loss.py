"""The Triton launchers of kl_label_loss (``fastvae.kernels.kl_label_loss``, kernels in ``_kl``) and its triton_ops.

Without CUDA the kernels run under the Triton interpreter on CPU tensors, so
shapes are tiny. Reference: ``kl_label_loss_ref`` (autograd for gradients).
"""

import importlib

import pytest
import torch

from fastvae.kernels import _kl as shared_kernels
from fastvae.kernels import kl_label_loss as kernels
from fastvae.ops import kl_label_loss_ref

from .helpers import (
    DEVICE,
    NEEDS_CUDA,
    OPCHECK_UTILS,
    SHAPE_IDS,
    SHAPES,
    assert_close,
    free_bits_between,
    kl_inputs,
    rand,
)

ops_module = importlib.import_module("fastvae.ops.kl_label_loss")


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
    *out, active = kernels.kl_label_loss(*ins, *weights, fb)
    for got, want in zip(out, out_ref):
        assert_close(got, want)
    grads = kernels.kl_label_loss_bwd(*out_grads, *ins, *weights, active)
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
    *_, active = kernels.kl_label_loss(*ins, 1.0, 0.5, 0.0)
    grads = kernels.kl_label_loss_bwd(*out_grads, *ins, 1.0, 0.5, active)
    for got, want in zip(grads, grads_ref):
        assert_close(got, want)


@pytest.mark.parametrize("prior", [True, False], ids=["prior", "std-normal"])
def test_multiple_blocks(monkeypatch, prior):
    """Force small blocks so rows, dims and the Z loop span several blocks."""
    monkeypatch.setattr(shared_kernels, "_MAX_ROWS", 2)
    monkeypatch.setattr(shared_kernels, "_MAX_COLS", 4)
    ins = kl_inputs(5, 11, prior, label=True, seed=7)
    fb = free_bits_between(*ins[:4])
    out_grads = [rand(5, seed=40), rand(5, seed=41), rand(5, seed=42)]
    out_ref, grads_ref = ref_kll(ins, (0.3, 2.0), fb, out_grads)
    *out, active = kernels.kl_label_loss(*ins, 0.3, 2.0, fb)
    for got, want in zip(out, out_ref):
        assert_close(got, want)
    grads = kernels.kl_label_loss_bwd(*out_grads, *ins, 0.3, 2.0, active)
    for got, want in zip(grads, grads_ref):
        if want is not None:
            assert_close(got, want)


def test_triton_ops_autograd():
    """The triton_ops with their registered (Python) autograd, against the reference."""
    kernels = ops_module.KERNELS.triton()
    ins = [rand(4, 6, seed=s).requires_grad_() for s in range(5)] + [rand(4, 6, seed=9).requires_grad_()]
    ref = [t.detach().clone().requires_grad_() for t in ins]
    fb = free_bits_between(*[t.detach() for t in ins[:4]])
    total, kl, label, _ = kernels.fwd(*ins, 0.7, 1.3, fb)
    total_r, kl_r, label_r = kl_label_loss_ref(*ref, 0.7, 1.3, fb)
    (total.sum() + 0.5 * label.sum()).backward()
    (total_r.sum() + 0.5 * label_r.sum()).backward()
    for t, t_r in zip(ins[:5], ref[:5]):
        assert_close(t.grad, t_r.grad)
    assert ins[5].grad is None


@pytest.mark.parametrize("dtype", [torch.float16, pytest.param(torch.bfloat16, marks=NEEDS_CUDA)], ids=["fp16", "bf16"])
def test_low_precision_close_to_fp32(dtype):
    """16-bit inputs, fp32 math: results close to fp32 on the same (rounded) inputs."""
    tol = {torch.float16: 2e-3, torch.bfloat16: 1e-2}[dtype]
    ins = kl_inputs(5, 7, True, label=True, seed=11, dtype=dtype)
    ins32 = [t.float() for t in ins]
    *out, active = kernels.kl_label_loss(*ins, 0.7, 1.3, 0.0)
    *out32, _ = kernels.kl_label_loss(*ins32, 0.7, 1.3, 0.0)
    for got, want in zip(out, out32):
        assert got.dtype == dtype
        assert_close(got.float(), want, tol)
    g = rand(5, seed=3)
    for got, want in zip(
        kernels.kl_label_loss_bwd(g.to(dtype), None, None, *ins, 0.7, 1.3, active),
        kernels.kl_label_loss_bwd(g, None, None, *ins32, 0.7, 1.3, active),
    ):
        assert got.dtype == dtype
        assert_close(got.float(), want, tol)


def _triton_opcheck_cases():
    def t(grad=False, seed=0):
        return rand(3, 5, seed=seed).requires_grad_(grad)

    none = torch.empty(0, dtype=torch.bool, device=DEVICE)
    return [
        ("kl_label_loss_triton", (t(True, 1), t(True, 2), t(True, 3), t(True, 4), t(True, 5), t(False, 6), 0.7, 1.3, 0.0)),
        ("kl_label_loss_bwd_triton", (rand(3, seed=1), None, rand(3, seed=2), t(False, 1), t(False, 2), t(False, 3),
                                      t(False, 4), t(False, 5), t(False, 6), 0.7, 1.3, none)),
    ]


@pytest.mark.parametrize("case", range(len(_triton_opcheck_cases())))
def test_opcheck_triton_ops(case):
    ops_module.KERNELS.triton()  # registers the triton_ops
    name, args = _triton_opcheck_cases()[case]
    torch.library.opcheck(getattr(torch.ops.fastvae, name).default, args, test_utils=OPCHECK_UTILS)
