"""Tests for the Triton linear + cross-entropy kernels in ``fastvae.kernels.linear_cross_entropy``.

Without CUDA the kernels run under the Triton interpreter (on CPU tensors), so
every shape here is tiny; block sizes are forced small to get several chunks
and several vocabulary blocks. The reference is ``linear_cross_entropy_ref``.
"""

import sys

import pytest
import torch

from fastvae.kernels import linear_cross_entropy as klce
from fastvae.ops import linear_cross_entropy_ref

from .helpers import DEVICE

lce_ops = sys.modules["fastvae.ops.linear_cross_entropy"]

TOL = 1e-5
ALL = [True, True, True]


@pytest.fixture
def small_blocks(monkeypatch):
    """Chunks of 3 rows and vocabulary blocks of 16 columns."""
    monkeypatch.setattr(klce, "_chunk_rows", lambda N, H, V: 3)
    monkeypatch.setattr(klce, "_vocab_block", lambda V: 16)


def make_inputs(N, H, V, dtype=torch.float32, bias=True, ignore_every=0, ignore_index=-100, seed=0):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N, H, generator=gen).to(DEVICE, dtype)
    weight = torch.randn(V, H, generator=gen).div_(H**0.5).to(DEVICE, dtype)
    b = torch.randn(V, generator=gen).to(DEVICE, dtype) if bias else None
    target = torch.randint(0, V, (N,), generator=gen)
    if ignore_every:
        target[::ignore_every] = ignore_index
    return hidden, weight, b, target.to(DEVICE)


def reference(hidden, weight, bias, target, reduction, ignore_index=-100, grad_out=None):
    """(loss, d_hidden, d_weight, d_bias) of linear_cross_entropy_ref."""
    leaves = [None if t is None else t.detach().clone().requires_grad_() for t in (hidden, weight, bias)]
    loss = linear_cross_entropy_ref(*leaves, target, ignore_index=ignore_index, reduction=reduction)
    loss.backward(torch.ones_like(loss) if grad_out is None else grad_out)
    return (loss.detach(), *(None if t is None else t.grad for t in leaves))


def assert_close(actual, expected, tol=TOL):
    scale = max(1.0, expected.abs().max().item()) if expected.numel() else 1.0
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol * scale)


def check_fwd_grads(hidden, weight, bias, target, reduction, ignore_index=-100):
    """Forward with gradients (mean/sum) against the reference; returns lse."""
    loss, lse, dh, dw, db = klce.linear_ce_fwd(hidden, weight, bias, target, ignore_index, reduction, ALL)
    expected = reference(hidden, weight, bias, target, reduction, ignore_index)
    assert_close(loss, expected[0])
    assert_close(dh, expected[1])
    assert_close(dw, expected[2])
    if bias is None:
        assert db.numel() == 0
    else:
        assert_close(db, expected[3])
    assert_close(lse, torch.logsumexp(torch.nn.functional.linear(hidden, weight, bias).float(), 1))
    return lse


def check_recompute(hidden, weight, bias, target, reduction, grad_out, ignore_index=-100):
    """Forward without gradients, then linear_ce_bwd, against the reference."""
    loss, lse, *empty = klce.linear_ce_fwd(hidden, weight, bias, target, ignore_index, reduction, [False] * 3)
    assert all(t.numel() == 0 for t in empty)
    expected = reference(hidden, weight, bias, target, reduction, ignore_index, grad_out)
    assert_close(loss, expected[0])
    dh, dw, db = klce.linear_ce_bwd(grad_out, hidden, weight, bias, target, lse, ignore_index, reduction, ALL)
    assert_close(dh, expected[1])
    assert_close(dw, expected[2])
    if bias is not None:
        assert_close(db, expected[3])


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_forward_gradients(small_blocks, reduction):
    check_fwd_grads(*make_inputs(7, 5, 37, ignore_every=3), reduction)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_backward_by_recomputation(small_blocks, reduction):
    hidden, weight, bias, target = make_inputs(7, 5, 37, ignore_every=3, seed=1)
    grad_out = torch.randn(7, device=DEVICE) if reduction == "none" else torch.tensor(2.5, device=DEVICE)
    check_recompute(hidden, weight, bias, target, reduction, grad_out)


def test_default_block_sizes():
    check_fwd_grads(*make_inputs(6, 5, 37, ignore_every=4, seed=2), "mean")


@pytest.mark.parametrize("N,V", [(1, 20), (4, 1)], ids=["N1", "V1"])
def test_odd_shapes(small_blocks, N, V):
    inputs = make_inputs(N, 3, V, seed=3)
    check_fwd_grads(*inputs, "sum")
    check_recompute(*inputs, "none", torch.randn(N, device=DEVICE))


def test_without_bias(small_blocks):
    inputs = make_inputs(5, 4, 21, bias=False, ignore_every=2, seed=4)
    check_fwd_grads(*inputs, "mean")
    check_recompute(*inputs, "none", torch.randn(5, device=DEVICE))


def test_all_targets_ignored(small_blocks):
    hidden, weight, bias, target = make_inputs(4, 3, 20, seed=5)
    target[:] = -100
    loss, lse, dh, dw, db = klce.linear_ce_fwd(hidden, weight, bias, target, -100, "mean", ALL)
    assert loss.item() == 0
    for g in (dh, dw, db):
        assert torch.all(g == 0)
    assert torch.isfinite(lse).all()


@pytest.mark.parametrize("ignore_index", [0, 7])
def test_custom_ignore_index(small_blocks, ignore_index):
    hidden, weight, bias, target = make_inputs(6, 3, 20, seed=6)
    target[::2] = ignore_index
    check_fwd_grads(hidden, weight, bias, target, "mean", ignore_index)
    check_recompute(hidden, weight, bias, target, "none", torch.randn(6, device=DEVICE), ignore_index)


def test_non_contiguous_hidden(small_blocks):
    hidden, weight, bias, target = make_inputs(5, 4, 21, ignore_every=3, seed=7)
    strided = hidden.t().contiguous().t()
    assert not strided.is_contiguous()
    check_fwd_grads(strided, weight, bias, target, "sum")


def test_fp16_close_to_fp32(small_blocks):
    hidden, weight, bias, target = make_inputs(5, 4, 21, dtype=torch.float16, ignore_every=3, seed=8)
    loss, lse, dh, dw, db = klce.linear_ce_fwd(hidden, weight, bias, target, -100, "mean", ALL)
    expected = reference(hidden.float(), weight.float(), bias.float(), target, "mean")
    for got, ref in zip((loss, dh, dw, db), expected):
        assert got.dtype == torch.float16
        assert_close(got.float(), ref, tol=1e-2)


# ------------------------------------------------ the registered triton ops


def test_triton_ops_autograd(small_blocks):
    """fastvae::linear_ce_fwd_triton with autograd, called directly (it only runs on CUDA via the public op)."""
    kernels = lce_ops.KERNELS.triton()
    for reduction in ("mean", "none"):
        hidden, weight, bias, target = make_inputs(5, 4, 21, ignore_every=3, seed=9)
        leaves = [t.clone().requires_grad_() for t in (hidden, weight, bias)]
        mask = [reduction != "none"] * 3
        loss, *_ = kernels.fwd(*leaves, target, -100, reduction, mask)
        grad_out = torch.randn(loss.shape, device=DEVICE)
        loss.backward(grad_out)
        expected = reference(hidden, weight, bias, target, reduction, grad_out=grad_out)
        assert_close(loss.detach(), expected[0])
        for leaf, ref in zip(leaves, expected[1:]):
            assert_close(leaf.grad, ref)


# Under the interpreter, the launch inside a triton_op cannot run on fake
# tensors, so the aot_dispatch tests of opcheck (which trace through fake
# tensors) are left out; on CUDA, opcheck runs in full.
OPCHECK_UTILS = (
    ("test_schema", "test_autograd_registration", "test_faketensor")
    if not torch.cuda.is_available()
    else ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_opcheck_triton_ops(reduction):
    kernels = lce_ops.KERNELS.triton()
    hidden, weight, bias, target = make_inputs(4, 3, 20, ignore_every=3, seed=10)
    leaves = [t.clone().requires_grad_() for t in (hidden, weight, bias)]
    mask = [reduction != "none"] * 3
    torch.library.opcheck(
        torch.ops.fastvae.linear_ce_fwd_triton.default, (*leaves, target, -100, reduction, mask),
        test_utils=OPCHECK_UTILS,
    )
    _, lse, *_ = kernels.fwd(hidden, weight, bias, target, -100, reduction, [False] * 3)
    grad = torch.randn(4, device=DEVICE) if reduction == "none" else torch.tensor(1.5, device=DEVICE)
    torch.library.opcheck(
        torch.ops.fastvae.linear_ce_bwd_triton.default,
        (grad, hidden, weight, bias, target, lse, -100, reduction, ALL),
        test_utils=OPCHECK_UTILS,
    )


def test_meta_tensors_give_shapes():
    hidden, weight, bias = (torch.empty(6, 4, device="meta"), torch.empty(9, 4, device="meta"),
                            torch.empty(9, device="meta"))
    target = torch.zeros(6, dtype=torch.int64, device="meta")
    loss, lse, dh, dw, db = klce.linear_ce_fwd(hidden, weight, bias, target, -100, "mean", ALL)
    assert loss.shape == () and lse.shape == (6,) and dh.shape == (6, 4) and dw.shape == (9, 4) and db.shape == (9,)
    per_row, *_ = klce.linear_ce_fwd(hidden, weight, None, target, -100, "none", [False] * 3)
    assert per_row.shape == (6,)
    dh, dw, db = klce.linear_ce_bwd(per_row, hidden, weight, None, target, lse, -100, "none", ALL)
    assert dh.shape == (6, 4) and dw.shape == (9, 4) and db.numel() == 0
