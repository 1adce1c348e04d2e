"""Tests of ``fastvae.ops.lstm_stack``: a whole nn.LSTM-like stack in one op (one C++ autograd node).

Checked against its twin ``lstm_stack_ref`` (lstm_ref layer by layer) and against
``torch.nn.LSTM`` for outputs and every gradient, in float32 and float64, 1-3
layers, one or two directions, with and without biases, full and mixed lengths;
``torch.library.opcheck`` on the three registered ops; gradcheck; named errors.
"""

import math

import pytest
import torch

from fastvae.ops import lstm_stack, lstm_stack_ref
from fastvae.ops.lstm import KERNELS

pytestmark = pytest.mark.skipif(KERNELS.cpu is None, reason="fastvae._C is not built")

OPS = torch.ops.fastvae
TOL = {torch.float32: (1e-5, 1e-5), torch.float64: (1e-10, 1e-10)}
GRAD_TOL = {torch.float32: (1e-4, 1e-4), torch.float64: (1e-9, 1e-9)}
T, B, E, H = 6, 5, 7, 9
MIXED = [6, 1, 4, 6, 2]


def make_stack(L, bidirectional, bias=True, dtype=torch.float32, seed=0):
    """x, h0, c0 and the flat parameter list at nn.LSTM's scale."""
    g = torch.Generator().manual_seed(seed)
    D = 2 if bidirectional else 1
    k = 1.0 / math.sqrt(H)

    def uniform(*shape):
        return (torch.rand(*shape, generator=g, dtype=dtype) * 2 - 1) * k

    params = []
    for layer in range(L):
        for _ in range(D):
            params += [uniform(4 * H, E if layer == 0 else D * H), uniform(4 * H, H)]
            if bias:
                params += [uniform(4 * H), uniform(4 * H)]
    x = torch.randn(T, B, E, generator=g, dtype=dtype)
    h0 = torch.randn(L * D, B, H, generator=g, dtype=dtype)
    c0 = torch.randn(L * D, B, H, generator=g, dtype=dtype)
    return x, h0, c0, params


def run(fn, x, h0, c0, params, lengths, bidirectional, through=("y", "h", "c")):
    """Outputs and the gradients of a weighted sum of the chosen outputs w.r.t. every input."""
    leaves = [t.detach().clone().requires_grad_() for t in (x, h0, c0, *params)]
    y, h_n, c_n = fn(leaves[0], leaves[1], leaves[2], leaves[3:], lengths, bidirectional)
    outs = {"y": y, "h": h_n, "c": c_n}
    loss = sum((outs[k] * torch.linspace(-1, 1, outs[k].numel(), dtype=y.dtype).view_as(outs[k])).sum() for k in through)
    loss.backward()
    return [y.detach(), h_n.detach(), c_n.detach()] + [t.grad for t in leaves]


def assert_all_close(fused, ref, dtype):
    rtol, atol = TOL[dtype]
    for k, (a, e) in enumerate(zip(fused[:3], ref[:3])):
        torch.testing.assert_close(a, e, rtol=rtol, atol=atol, msg=lambda m, k=k: f"output {k}: {m}")
    rtol, atol = GRAD_TOL[dtype]
    for k, (a, e) in enumerate(zip(fused[3:], ref[3:])):
        torch.testing.assert_close(a, e, rtol=rtol, atol=atol, msg=lambda m, k=k: f"gradient of input {k}: {m}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("lengths", [None, MIXED], ids=["full", "mixed"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("L", [1, 2, 3])
def test_matches_reference(L, bidirectional, lengths, dtype):
    args = make_stack(L, bidirectional, dtype=dtype)
    fused = run(lstm_stack, *args, lengths, bidirectional)
    ref = run(lstm_stack_ref, *args, lengths, bidirectional)
    assert_all_close(fused, ref, dtype)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_without_biases(bidirectional):
    args = make_stack(2, bidirectional, bias=False)
    assert len(args[3]) == 2 * 2 * (2 if bidirectional else 1)
    assert_all_close(run(lstm_stack, *args, MIXED, bidirectional), run(lstm_stack_ref, *args, MIXED, bidirectional),
                     torch.float32)


@pytest.mark.parametrize("through", [("h",), ("c",), ("y",)], ids=["h_n only", "c_n only", "y only"])
def test_gradient_through_one_output(through):
    """An encoder reads only h_n: the other outputs' gradients are undefined in the backward."""
    args = make_stack(2, True)
    fused = run(lstm_stack, *args, MIXED, True, through=through)
    ref = run(lstm_stack_ref, *args, MIXED, True, through=through)
    assert_all_close(fused, ref, torch.float32)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_matches_nn_lstm(bidirectional):
    torch.manual_seed(0)
    module = torch.nn.LSTM(E, H, num_layers=2, bidirectional=bidirectional)
    x = torch.randn(T, B, E)
    D = 2 if bidirectional else 1
    h0, c0 = torch.randn(2 * D, B, H), torch.randn(2 * D, B, H)
    with torch.no_grad():
        expected_y, (expected_h, expected_c) = module(x, (h0, c0))
        y, h_n, c_n = lstm_stack(x, h0, c0, [p.detach() for p in module._flat_weights], bidirectional=bidirectional)
    for a, e in ((y, expected_y), (h_n, expected_h), (c_n, expected_c)):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)


def test_no_grad_gives_the_same_outputs():
    args = make_stack(2, True)
    with torch.no_grad():
        plain = lstm_stack(*args, MIXED, True)
    for a, e in zip(plain, run(lstm_stack, *args, MIXED, True)[:3]):
        torch.testing.assert_close(a, e, rtol=0, atol=0)


def test_gradcheck():
    x, h0, c0, params = make_stack(2, True, dtype=torch.float64)
    leaves = [t.requires_grad_() for t in (x, h0, c0, *params)]

    def fn(*inputs):
        return lstm_stack(inputs[0], inputs[1], inputs[2], list(inputs[3:]), MIXED, True)

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-6)


def test_second_order_is_refused_by_name():
    x, h0, c0, params = make_stack(1, False)
    x.requires_grad_()
    y, _, _ = lstm_stack(x, h0, c0, params)
    with pytest.raises(RuntimeError, match="lstm_stack is differentiable once"):
        torch.autograd.grad(y.sum(), x, create_graph=True)


def test_one_op_call_for_the_whole_stack():
    from torch.utils._python_dispatch import TorchDispatchMode

    calls = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.namespace == "fastvae":
                calls.append(func.name())
            return func(*args, **(kwargs or {}))

    x, h0, c0, params = make_stack(3, True)
    params = [p.requires_grad_() for p in params]
    with Record():
        y, _, _ = lstm_stack(x, h0, c0, params, MIXED, True)
        y.sum().backward()
    assert calls == ["fastvae::lstm_stack_fwd", "fastvae::lstm_stack_bwd"]


def test_other_dtypes_run_the_reference():
    args = [t.bfloat16() for t in make_stack(2, False)[:3]] + [[p.bfloat16() for p in make_stack(2, False)[3]]]
    y, h_n, c_n = lstm_stack(*args)
    ref = lstm_stack_ref(*args)
    for a, e in zip((y, h_n, c_n), ref):
        torch.testing.assert_close(a, e)


# ------------------------------------------------------------- bad input


def test_bad_input_is_a_named_error():
    x, h0, c0, params = make_stack(2, True)
    with pytest.raises(ValueError, match="params must hold"):
        lstm_stack(x, h0, c0, params[:-1], bidirectional=True)
    with pytest.raises(ValueError, match="h0 must have shape"):
        lstm_stack(x, h0[:3], c0[:3], params, bidirectional=True)
    with pytest.raises(ValueError, match="c0 must have shape"):
        lstm_stack(x, h0, c0[:, :2], params, bidirectional=True)
    with pytest.raises(TypeError, match="bidirectional must be a bool"):
        lstm_stack(x, h0, c0, params, bidirectional=1)
    with pytest.raises(TypeError, match=r"params\[5\] has dtype torch.float64"):
        lstm_stack(x, h0, c0, params[:5] + [params[5].double()] + params[6:], bidirectional=True)
    with pytest.raises(ValueError, match="lengths"):
        lstm_stack(x, h0, c0, params, lengths=[T + 1] * B, bidirectional=True)
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        lstm_stack(x, h0, c0, params[:4] + ["w"] + params[5:], bidirectional=True)
    bad = list(params)
    bad[4] = torch.randn(4 * H, E + 1)  # layer 0, reverse direction: w_ih with one feature too many
    with pytest.raises(ValueError, match=r"w_ih of layer 0 direction 1 must have shape"):
        lstm_stack(x, h0, c0, bad, bidirectional=True)
    bad = list(params)
    bad[9] = torch.randn(4 * H, H + 1)  # layer 1, forward direction: w_hh
    with pytest.raises(ValueError, match=r"w_hh of layer 1 direction 0 must have shape"):
        lstm_stack(x, h0, c0, bad, bidirectional=True)


def test_raw_ops_bad_input():
    x, h0, c0, params = make_stack(2, False)
    with pytest.raises(ValueError, match="num_layers"):
        OPS.lstm_stack(x, h0, c0, params, None, 0, False)
    with pytest.raises(ValueError, match="params"):
        OPS.lstm_stack_fwd(x, h0, c0, params[:3], None, 2, False, True)
    _, _, _, saved = OPS.lstm_stack_fwd(x, h0, c0, params, None, 2, False, True)
    with pytest.raises(ValueError, match="saved"):
        OPS.lstm_stack_bwd(None, None, None, x, h0, params, None, saved[:-1], 2, False)
    assert len(saved) == 3 and saved[0].shape == (7 * T * B * H,)  # a block per layer, then layer 1's input
    with pytest.raises(ValueError, match="'saved' entry 1 must be a contiguous 1-d tensor of"):
        OPS.lstm_stack_bwd(None, None, None, x, h0, params, None, [saved[0], saved[1][:-1], saved[2]], 2, False)
    y = torch.randn(x.shape[0], x.shape[1], h0.shape[2])
    with pytest.raises(ValueError, match="'grad_hn' must have shape"):
        OPS.lstm_stack_bwd(y, h0[:1], None, x, h0, params, None, saved, 2, False)
    with pytest.raises(TypeError, match="'grad_cn' must have dtype"):
        OPS.lstm_stack_bwd(y, None, h0.double(), x, h0, params, None, saved, 2, False)


def test_raw_bwd_state_grads_any_layout():
    """grad_hn / grad_cn strided, contiguous or absent (zero): the same gradients."""
    x, h0, c0, params = make_stack(2, False)
    _, _, _, saved = OPS.lstm_stack_fwd(x, h0, c0, params, None, 2, False, True)
    y = torch.randn(x.shape[0], x.shape[1], h0.shape[2])
    gh = torch.randn(h0.shape[2], h0.shape[1], h0.shape[0]).permute(2, 1, 0)  # strided
    expected = OPS.lstm_stack_bwd(y, gh.contiguous(), None, x, h0, params, None, saved, 2, False)
    actual = OPS.lstm_stack_bwd(y, gh, torch.zeros_like(h0), x, h0, params, None, saved, 2, False)
    assert not gh.is_contiguous()
    for a, e in zip(actual[:3], expected[:3]):
        torch.testing.assert_close(a, e)
    for a, e in zip(actual[3], expected[3]):
        torch.testing.assert_close(a, e)


# ------------------------------------------------------------------ opcheck


@pytest.mark.parametrize("lengths", [None, MIXED], ids=["full", "mixed"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_opcheck(bidirectional, lengths):
    x, h0, c0, params = make_stack(2, bidirectional, dtype=torch.float64)
    length_tensor = None if lengths is None else torch.tensor(lengths)
    leaves = [t.requires_grad_() for t in (x, *params)]
    torch.library.opcheck(OPS.lstm_stack.default, (leaves[0], h0, c0, leaves[1:], length_tensor, 2, bidirectional))
    for need_grad in (False, True):
        torch.library.opcheck(
            OPS.lstm_stack_fwd.default, (x.detach(), h0, c0, [p.detach() for p in params], length_tensor, 2,
                                         bidirectional, need_grad)
        )
    plain = [p.detach() for p in params]
    y, h_n, _, saved = OPS.lstm_stack_fwd(x.detach(), h0, c0, plain, length_tensor, 2, bidirectional, True)
    torch.library.opcheck(
        OPS.lstm_stack_bwd.default,
        (torch.randn_like(y), torch.randn_like(h_n), None, x.detach(), h0, plain, length_tensor, saved, 2,
         bidirectional),
    )
