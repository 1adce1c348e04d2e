"""Tests of the fused LSTM ops (``fastvae.ops``) and the registered CPU ops.

The fused op (C++ kernels on CPU) is checked against its plain-PyTorch twin
``lstm_ref`` -- itself checked against ``torch.nn.LSTM`` on packed sequences --
for outputs and every gradient, in float32 and float64, forward and reverse,
full and mixed lengths, odd shapes and non-contiguous views.
"""

import math
import textwrap

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from torch.utils._python_dispatch import TorchDispatchMode

from fastvae.ops import lstm, lstm_cell, lstm_cell_ref, lstm_ref
from fastvae.ops.lstm import KERNELS

from .helpers import ISA_LEVELS, run_at_isa, run_python, second_order

pytestmark = pytest.mark.skipif(KERNELS.cpu is None, reason="fastvae._C is not built")

OPS = torch.ops.fastvae
NAMES = ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh")

# (rtol, atol) for outputs and for gradients, per dtype.
TOL = {torch.float32: (1e-5, 1e-5), torch.float64: (1e-10, 1e-10)}
GRAD_TOL = {torch.float32: (1e-4, 1e-4), torch.float64: (1e-9, 1e-9)}


def make_args(T, B, E, H, dtype=torch.float32, bias=True):
    """[x, h0, c0, w_ih, w_hh, b_ih, b_hh]; weights at nn.LSTM's scale U(-1/sqrt(H), 1/sqrt(H))."""
    k = 1.0 / math.sqrt(H)

    def uniform(*shape):
        return torch.empty(*shape, dtype=dtype).uniform_(-k, k)

    return [
        torch.randn(T, B, E, dtype=dtype),
        torch.randn(B, H, dtype=dtype),
        torch.randn(B, H, dtype=dtype),
        uniform(4 * H, E),
        uniform(4 * H, H),
        uniform(4 * H) if bias else None,
        uniform(4 * H) if bias else None,
    ]


def leaves(args, which=NAMES):
    """Detached clones; those named in ``which`` require grad."""
    out = []
    for name, t in zip(NAMES, args):
        if t is not None:
            t = t.detach().clone().requires_grad_(name in which)
        out.append(t)
    return out


def run_with_grads(fn, args, upstream, lengths=None, reverse=False, which=NAMES):
    """Run ``fn`` on fresh leaves; backprop ``upstream`` (a (gy, gh, gc) tuple, None entries unused).

    Returns (outputs, {name: grad}) for the inputs named in ``which``.
    """
    inputs = leaves(args, which)
    outputs = fn(*inputs, lengths=lengths, reverse=reverse)
    pairs = [(o, g) for o, g in zip(outputs, upstream) if g is not None]
    torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])
    grads = {n: t.grad for n, t in zip(NAMES, inputs) if t is not None and n in which}
    return [o.detach() for o in outputs], grads


def assert_outputs_close(actual, expected, dtype):
    rtol, atol = TOL[dtype]
    for name, a, e in zip(("y", "h_n", "c_n"), actual, expected):
        torch.testing.assert_close(a, e, rtol=rtol, atol=atol, msg=lambda m, n=name: f"{n}: {m}")


def assert_grads_close(actual, expected, dtype):
    rtol, atol = GRAD_TOL[dtype]
    assert actual.keys() == expected.keys()
    for name in expected:
        assert actual[name] is not None, f"no gradient for {name}"
        torch.testing.assert_close(
            actual[name], expected[name], rtol=rtol, atol=atol, msg=lambda m, n=name: f"d{n}: {m}"
        )


def upstream_grads(T, B, H, dtype):
    return torch.randn(T, B, H, dtype=dtype), torch.randn(B, H, dtype=dtype), torch.randn(B, H, dtype=dtype)


def check_fused_vs_ref(args, lengths=None, reverse=False, which=NAMES, upstream=None):
    x, h0 = args[0], args[1]
    T, B, H, dtype = x.shape[0], x.shape[1], h0.shape[1], x.dtype
    upstream = upstream_grads(T, B, H, dtype) if upstream is None else upstream
    out, grads = run_with_grads(lstm, args, upstream, lengths, reverse, which)
    out_ref, grads_ref = run_with_grads(lstm_ref, args, upstream, lengths, reverse, which)
    assert_outputs_close(out, out_ref, dtype)
    assert_grads_close(grads, grads_ref, dtype)
    return out, grads


def flip_within_lengths(t, lengths):
    """Reverse each sequence of t [T, B, ...] within its own length."""
    steps = torch.arange(t.shape[0])[:, None]
    idx = torch.where(steps < lengths[None, :], lengths[None, :] - 1 - steps, steps)
    return t.gather(0, idx.view(*idx.shape, *([1] * (t.dim() - 2))).expand_as(t))


def nn_lstm(x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths=None, reverse=False):
    """torch.nn.LSTM with PackedSequence semantics, same signature as lstm_ref."""
    T, B, E = x.shape
    H = h0.shape[1]
    lengths = torch.full((B,), T) if lengths is None else torch.as_tensor(lengths)
    module = torch.nn.LSTM(E, H, bias=b_ih is not None).to(x.dtype)
    params = {"weight_ih_l0": w_ih, "weight_hh_l0": w_hh}
    if b_ih is not None:
        params.update(bias_ih_l0=b_ih, bias_hh_l0=b_hh)
    x = flip_within_lengths(x, lengths) if reverse else x
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    out, (h_n, c_n) = torch.func.functional_call(module, params, (packed, (h0[None], c0[None])))
    y, _ = pad_packed_sequence(out, total_length=T)
    if reverse:
        y = flip_within_lengths(y, lengths)
    return y, h_n[0], c_n[0]


MIXED = [13, 1, 7, 13, 2]  # unsorted, includes 1 and T


class RecordOps(TorchDispatchMode):
    """Records the ops dispatched inside it: ``names`` (a set) and ``calls`` [(name, args)]."""

    def __init__(self):
        super().__init__()
        self.names = set()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func.name())
        self.calls.append((func.name(), args))
        return func(*args, **(kwargs or {}))

    def need_grad_flags(self):
        """The need_grad argument of every fastvae::lstm_fwd call."""
        return [args[-1] for name, args in self.calls if name == "fastvae::lstm_fwd"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_fused_path_is_taken(dtype):
    """Guards every fused-vs-reference test: the fused op must not quietly run the reference."""
    args = leaves(make_args(4, 3, 5, 6, dtype))
    with RecordOps() as rec:
        y, h, c = lstm(*args, lengths=[4, 1, 2])
        (y.sum() + h.sum() + c.sum()).backward()
    assert {"fastvae::lstm_fwd", "fastvae::lstm_bwd"} <= rec.names
    assert "aten::sigmoid" not in rec.names
    with RecordOps() as rec, torch.no_grad():
        lstm_cell(args[0][0], *args[1:])
    assert "fastvae::lstm_cell" in rec.names
    with RecordOps() as rec:
        lstm_cell(args[0][0], *args[1:])
    assert "fastvae::lstm_fwd" in rec.names


# ------------------------------------------------------ the oracle itself


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("lengths", [None, MIXED], ids=["full", "mixed"])
def test_reference_matches_nn_lstm(lengths, reverse):
    args = make_args(13, 5, 19, 23)
    upstream = upstream_grads(13, 5, 23, torch.float32)
    out, grads = run_with_grads(lstm_ref, args, upstream, lengths, reverse)
    out_nn, grads_nn = run_with_grads(nn_lstm, args, upstream, lengths, reverse)
    assert_outputs_close(out, out_nn, torch.float32)
    assert_grads_close(grads, grads_nn, torch.float32)


# ------------------------------------------------------- fused vs reference


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("lengths", [None, MIXED, [13] * 5, [1] * 5], ids=["none", "mixed", "all-T", "all-1"])
def test_fused_matches_reference(lengths, reverse, dtype):
    out, _ = check_fused_vs_ref(make_args(13, 5, 19, 23, dtype), lengths, reverse)
    if lengths is not None:
        pad = torch.arange(13)[:, None] >= torch.tensor(lengths)[None, :]
        assert torch.all(out[0][pad] == 0), "y must be exactly zero past each length"


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_fused_matches_nn_lstm(reverse):
    args = make_args(13, 5, 19, 23)
    upstream = upstream_grads(13, 5, 23, torch.float32)
    out, grads = run_with_grads(lstm, args, upstream, MIXED, reverse)
    out_nn, grads_nn = run_with_grads(nn_lstm, args, upstream, MIXED, reverse)
    assert_outputs_close(out, out_nn, torch.float32)
    assert_grads_close(grads, grads_nn, torch.float32)


@pytest.mark.parametrize(
    "T, B, E, H, lengths",
    [
        (1, 5, 19, 23, None),  # T = 1
        (13, 1, 19, 23, None),  # B = 1
        (13, 1, 19, 23, [6]),  # B = 1, shorter than T
        (6, 4, 3, 1, [6, 2, 1, 5]),  # H = 1
        (5, 3, 1, 4, [1, 5, 3]),  # E = 1
        (3, 300, 8, 32, None),  # enough rows for the parallel row loop
        (3, 300, 8, 32, [3, 1, 2] * 100),
    ],
)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_fused_odd_shapes(T, B, E, H, lengths, reverse):
    check_fused_vs_ref(make_args(T, B, E, H), lengths, reverse)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("T", [1, 13])
@pytest.mark.parametrize("lengths", [None, "mixed"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_fused_zero_initial_state(reverse, lengths, T, dtype):
    """h0 = 0 (the usual state): the kernels skip its products, forward and in dw_hh; dh0 still exact."""
    args = make_args(T, 5, 19, 23, dtype)
    args[1] = torch.zeros(5, 23, dtype=dtype)
    lens = None if lengths is None else [T, 1, max(1, T // 2), T, 2 if T > 1 else 1]
    check_fused_vs_ref(args, lens, reverse)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_fused_without_bias(reverse, dtype):
    check_fused_vs_ref(make_args(13, 5, 19, 23, dtype, bias=False), MIXED, reverse)


@pytest.mark.parametrize("which", ["b_ih", "b_hh"])
def test_fused_with_one_bias(which):
    args = make_args(7, 5, 19, 23)
    args[NAMES.index("b_hh" if which == "b_ih" else "b_ih")] = None
    check_fused_vs_ref(args, [7, 1, 3, 7, 2], which=("x", "w_ih", "w_hh", which))


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_fused_non_contiguous_inputs(reverse):
    T, B, E, H = 13, 5, 19, 23
    args = make_args(T, B, E, H)
    args[0] = torch.randn(T, B, 2 * E)[..., ::2]  # strided x
    args[1] = torch.randn(H, B).t()  # transposed h0
    args[3] = torch.empty(E, 4 * H).uniform_(-0.2, 0.2).t()  # transposed w_ih
    assert not args[0].is_contiguous() and not args[1].is_contiguous() and not args[3].is_contiguous()
    check_fused_vs_ref(args, MIXED, reverse)


def test_fused_non_contiguous_upstream_grad():
    """The incoming gradient may be a strided/expanded view (e.g. from y.sum() or y.transpose)."""
    args = make_args(6, 4, 5, 7)
    gy = torch.randn(4, 6, 7).transpose(0, 1)
    gh = torch.ones(1, 1).expand(4, 7)
    check_fused_vs_ref(args, [6, 1, 4, 2], upstream=(gy, gh, None))


def test_lengths_accepted_as_list_and_int32_tensor():
    args = make_args(7, 3, 4, 5)
    expected = lstm_ref(*args, lengths=[7, 1, 4])
    for lengths in ([7, 1, 4], torch.tensor([7, 1, 4], dtype=torch.int32), (7, 1, 4)):
        assert_outputs_close(lstm(*args, lengths=lengths), expected, torch.float32)


@pytest.mark.parametrize(
    "which",
    [("x",), ("h0", "c0"), ("w_ih",), ("w_hh", "b_hh"), ("b_ih",), ("x", "w_hh")],
    ids=lambda w: "+".join(w),
)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_fused_grads_when_only_some_inputs_require_grad(which, reverse):
    _, grads = check_fused_vs_ref(make_args(7, 5, 6, 9), [7, 1, 3, 7, 2], reverse, which=which)
    assert set(grads) == set(which)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("through", ["y", "h_n", "c_n"])
def test_fused_grad_through_one_output(through, reverse):
    T, B, H = 9, 5, 8
    gy, gh, gc = upstream_grads(T, B, H, torch.float32)
    upstream = {"y": (gy, None, None), "h_n": (None, gh, None), "c_n": (None, None, gc)}[through]
    check_fused_vs_ref(make_args(T, B, 6, H), [9, 1, 4, 9, 2], reverse, upstream=upstream)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_padded_positions_get_zero_input_grad(reverse):
    lengths = [6, 1, 4]
    _, grads = run_with_grads(lstm, make_args(6, 3, 5, 7), upstream_grads(6, 3, 7, torch.float32), lengths, reverse)
    pad = torch.arange(6)[:, None] >= torch.tensor(lengths)[None, :]
    assert torch.all(grads["x"][pad] == 0)
    assert torch.all(grads["x"][~pad].abs().sum(-1) > 0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_other_dtypes_run_the_reference(dtype):
    args = [t.to(dtype) for t in make_args(4, 3, 5, 6)]
    for a, e in zip(lstm(*args, lengths=[4, 1, 2]), lstm_ref(*args, lengths=[4, 1, 2])):
        assert a.dtype == dtype
        torch.testing.assert_close(a, e, rtol=0, atol=0)


def test_empty_batch():
    args = make_args(4, 0, 5, 6)
    y, h, c = lstm(*args)
    assert y.shape == (4, 0, 6) and h.shape == (0, 6) and c.shape == (0, 6)


def test_zero_steps_returns_initial_state():
    args = make_args(0, 3, 5, 6)
    y, h, c = lstm(*args)
    assert y.shape == (0, 3, 6)
    torch.testing.assert_close(h, args[1], rtol=0, atol=0)
    torch.testing.assert_close(c, args[2], rtol=0, atol=0)
    with pytest.raises(ValueError, match="lengths"):
        lstm(*args, lengths=[0, 0, 0])


# ----------------------------------------------------------------- gradcheck


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("lengths", [None, [4, 1, 3]], ids=["full", "mixed"])
def test_gradcheck(lengths, reverse):
    args = leaves(make_args(4, 3, 3, 2, torch.float64))

    def fn(*a):
        return lstm(*a, lengths=lengths, reverse=reverse)

    assert torch.autograd.gradcheck(fn, tuple(args))


def test_gradcheck_without_bias():
    args = leaves(make_args(3, 2, 3, 2, torch.float64, bias=False))
    assert torch.autograd.gradcheck(lambda *a: lstm(*a, None, None, lengths=[3, 2], reverse=True), tuple(args[:5]))


# ------------------------------------------------------------------ no grad


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_no_grad_gives_same_outputs(reverse):
    args = leaves(make_args(7, 5, 6, 9))
    with RecordOps() as rec:
        with_grad = lstm(*args, lengths=[7, 1, 3, 7, 2], reverse=reverse)
        with torch.no_grad():
            without = lstm(*args, lengths=[7, 1, 3, 7, 2], reverse=reverse)
        detached = lstm(*[a.detach() for a in args], lengths=[7, 1, 3, 7, 2], reverse=reverse)
    assert rec.need_grad_flags() == [True, False, False]
    assert all(t.requires_grad for t in with_grad)
    assert not any(t.requires_grad for t in without + detached)
    for a, b, e in zip(without, detached, with_grad):
        torch.testing.assert_close(a, e.detach(), rtol=0, atol=0)
        torch.testing.assert_close(b, e.detach(), rtol=0, atol=0)


def test_need_grad_when_only_a_bias_requires_grad():
    args = make_args(4, 3, 5, 6)
    args[6].requires_grad_()
    with RecordOps() as rec:
        _, h, _ = lstm(*args)
    assert rec.need_grad_flags() == [True]
    assert h.requires_grad


def test_tied_inputs():
    """The same tensor passed as h0 and c0, and as b_ih and b_hh: gradients add up."""
    x, s, _, w_ih, w_hh, b, _ = make_args(6, 4, 5, 7)
    upstream = upstream_grads(6, 4, 7, torch.float32)
    results = []
    for fn in (lstm, lstm_ref):
        leaves_ = [t.clone().requires_grad_() for t in (x, s, w_ih, w_hh, b)]
        x_, s_, wi, wh, b_ = leaves_
        out = fn(x_, s_, s_, wi, wh, b_, b_, lengths=[6, 1, 3, 6])
        torch.autograd.backward(out, upstream)
        results.append((out, [t.grad for t in leaves_]))
    (out, grads), (out_ref, grads_ref) = results
    assert_outputs_close(out, out_ref, torch.float32)
    for a, e in zip(grads, grads_ref):
        torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-4)


def test_raw_op_need_grad_false_saves_nothing():
    x, h0, c0, w_ih, w_hh, b_ih, b_hh = make_args(5, 3, 4, 6)
    lengths = torch.tensor([5, 1, 3])
    full = OPS.lstm_fwd(x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, True, True)
    lean = OPS.lstm_fwd(x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, True, False)
    for a, e in zip(lean[:4], full[:4]):
        torch.testing.assert_close(a, e, rtol=0, atol=0)
    assert all(t.shape == (0,) for t in lean[4:])
    assert all(t.shape == (5, 3, 6) for t in full[4:])


def test_backward_of_need_grad_false_forward_is_a_named_error():
    args = leaves(make_args(3, 2, 4, 5))
    x, h0, c0, w_ih, w_hh, b_ih, b_hh = args
    y, *_ = OPS.lstm_fwd(x, h0, c0, w_ih, w_hh, b_ih, b_hh, torch.tensor([3, 2]), False, False)
    with pytest.raises(RuntimeError, match="need_grad=False"):
        y.sum().backward()


# ---------------------------------------------------------------- lstm_cell


def nn_lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh):
    module = torch.nn.LSTMCell(x.shape[1], h.shape[1], bias=b_ih is not None).to(x.dtype)
    params = {"weight_ih": w_ih, "weight_hh": w_hh}
    if b_ih is not None:
        params.update(bias_ih=b_ih, bias_hh=b_hh)
    return torch.func.functional_call(module, params, (x, (h, c)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_cell_without_grad(bias, dtype):
    x, h, c, *w = make_args(1, 640, 24, 32, dtype, bias)
    with torch.no_grad():
        out = lstm_cell(x[0], h, c, *w)
        ref = lstm_cell_ref(x[0], h, c, *w)
        ref_nn = nn_lstm_cell(x[0], h, c, *w)
    rtol, atol = TOL[dtype]
    for a, e, e_nn in zip(out, ref, ref_nn):
        torch.testing.assert_close(a, e, rtol=rtol, atol=atol)
        torch.testing.assert_close(a, e_nn, rtol=rtol, atol=atol)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_cell_with_grad(bias):
    x, h, c, *w = make_args(1, 640, 24, 32, torch.float32, bias)
    gh, gc = torch.randn_like(h), torch.randn_like(c)
    results = []
    for fn in (lstm_cell, lstm_cell_ref, nn_lstm_cell):
        inputs = leaves([x[0], h, c, *w])
        out = fn(*inputs)
        torch.autograd.backward(out, (gh, gc))
        results.append((out, [t.grad for t in inputs if t is not None]))
    (out, grads), *refs = results
    for out_ref, grads_ref in refs:
        for a, e in zip(out, out_ref):
            torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)
        assert len(grads) == len(grads_ref)
        for a, e in zip(grads, grads_ref):
            torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-4)


def test_cell_non_contiguous_inputs():
    x, h, c, *w = make_args(1, 5, 6, 7)
    xs = torch.randn(5, 12)[:, ::2]
    ht = torch.randn(7, 5).t()
    with torch.no_grad():
        out = lstm_cell(xs, ht, c, *w)
        ref = lstm_cell_ref(xs, ht, c, *w)
    for a, e in zip(out, ref):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)


def test_cell_bad_input():
    x, h, c, *w = make_args(1, 4, 3, 5)
    with pytest.raises(ValueError, match="h must have shape"):
        lstm_cell(x[0, :3], h, c, *w)
    with pytest.raises(ValueError, match="x must be 2-D"):
        lstm_cell(x, h, c, *w)
    with pytest.raises(ValueError, match="w_ih"):
        with torch.no_grad():
            lstm_cell(x[0], h, c, w[0][:, :2], *w[1:])
    with pytest.raises(TypeError, match="has dtype torch.float64"):
        with torch.no_grad():
            lstm_cell(x[0], h.double(), c, *w)


def test_cell_errors_name_its_own_arguments():
    x, h, c, *w = make_args(1, 4, 3, 5)
    with pytest.raises(TypeError, match="^h has dtype"):
        with torch.no_grad():
            lstm_cell(x[0], h.double(), c, *w)
    with pytest.raises(ValueError, match="^c must have shape"):
        with torch.no_grad():
            lstm_cell(x[0], h, c[:, :2], *w)


# --------------------------------------------------------------- NaN / inf


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_nan_propagates(reverse, dtype):
    x, *rest = make_args(6, 3, 4, 5, dtype)
    x[2, 1, 3] = float("nan")  # an active position of row 1 (length 6)
    y, h, c = lstm(x, *rest, lengths=[6, 6, 4], reverse=reverse)
    # from that step on (in processing order) row 1 is NaN; other rows are untouched
    later = slice(2, 6) if not reverse else slice(0, 3)
    assert torch.isnan(y[later, 1]).all()
    assert torch.isnan(h[1]).all() and torch.isnan(c[1]).all()
    assert torch.isfinite(y[:, [0, 2]]).all() and torch.isfinite(h[[0, 2]]).all()


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_nan_in_padding_does_not_leak(reverse):
    args = make_args(6, 3, 4, 5)
    lengths = [6, 2, 4]
    clean = lstm(*args, lengths=lengths, reverse=reverse)
    args[0][4:, 1] = float("nan")
    args[0][5, 2] = float("inf")
    dirty = lstm(*args, lengths=lengths, reverse=reverse)
    for a, e in zip(dirty, clean):
        torch.testing.assert_close(a, e, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_infinite_inputs_saturate_without_nan(reverse, dtype):
    x, *rest = make_args(6, 3, 4, 5, dtype)
    x[1, 0, 2] = float("inf")
    x[3, 1, 0] = -float("inf")
    x[0, 2, 1] = 1e30
    out = lstm(x, *rest, lengths=[6, 5, 6], reverse=reverse)
    ref = lstm_ref(x, *rest, lengths=[6, 5, 6], reverse=reverse)
    for a in out:
        assert torch.isfinite(a).all()
    assert_outputs_close(out, ref, dtype)


# ------------------------------------------------------------ edge inputs


def test_hidden_size_zero_is_the_reference_result():
    # this shape killed the process (SIGFPE) in the C++ kernel
    x, w_ih, w_hh = torch.randn(2, 3, 5), torch.randn(0, 5), torch.randn(0, 0)
    h0 = c0 = torch.randn(3, 0)
    for got, want in zip(lstm(x, h0, c0, w_ih, w_hh), lstm_ref(x, h0, c0, w_ih, w_hh)):
        assert got.shape == want.shape
    h, c = lstm_cell(x[0], h0, c0, w_ih, w_hh)
    assert h.shape == c.shape == (3, 0)


def test_reverse_must_be_a_bool():
    with pytest.raises(TypeError, match="reverse must be a bool"):
        lstm(torch.randn(2, 1, 3), torch.zeros(1, 2), torch.zeros(1, 2), torch.randn(8, 3), torch.randn(8, 2),
             reverse=None)


def test_refuses_double_backward_by_name():
    h = torch.randn(5, 4, requires_grad=True)
    loss = lstm(h.unsqueeze(0), torch.zeros(5, 2), torch.zeros(5, 2), torch.randn(8, 4), torch.randn(8, 2))[0]
    with pytest.raises(RuntimeError, match="fastvae.ops.lstm is differentiable once"):
        second_order(loss.pow(2).sum(), h)


# -------------------------------------------------------------- bad input


def bad_call(**overrides):
    args = dict(zip(NAMES, make_args(5, 3, 4, 6)))
    lengths = overrides.pop("lengths", None)
    args.update(overrides)
    return lambda: lstm(**args, lengths=lengths)


@pytest.mark.parametrize(
    "overrides, error, match",
    [
        (dict(x=torch.randn(5, 3)), ValueError, "x must be 3-D"),
        (dict(x=torch.randn(5, 3, 4, 1)), ValueError, "x must be 3-D"),
        (dict(x=torch.ones(5, 3, 4, dtype=torch.int64)), TypeError, "x must be a floating-point"),
        (dict(x=[[[0.0] * 4] * 3] * 5), TypeError, "x must be a torch.Tensor"),
        (dict(w_ih=torch.randn(24, 5)), ValueError, "w_ih must have shape"),
        (dict(w_ih=torch.randn(24)), ValueError, "w_ih must be 2-D"),
        (dict(w_hh=torch.randn(24, 5)), ValueError, "w_hh must have shape"),
        (dict(h0=torch.randn(3, 5)), ValueError, "h0 must have shape"),
        (dict(h0=torch.randn(1, 3, 6)), ValueError, "h0 must be 2-D"),
        (dict(c0=torch.randn(2, 6)), ValueError, "c0 must have shape"),
        (dict(b_ih=torch.randn(23)), ValueError, "b_ih must have shape"),
        (dict(b_hh=torch.randn(1, 24)), ValueError, "b_hh must be 1-D"),
        (dict(lengths=[5, 0, 3]), ValueError, "lengths must lie in 1..5"),
        (dict(lengths=[5, -1, 3]), ValueError, "lengths must lie in 1..5"),
        (dict(lengths=[5, 6, 3]), ValueError, "lengths must lie in 1..5"),
        (dict(lengths=[5, 3]), ValueError, "lengths must have one entry per sequence"),
        (dict(lengths=torch.tensor([[5, 3, 1]])), ValueError, "lengths must have one entry per sequence"),
        (dict(lengths=torch.tensor([5.0, 3.0, 1.0])), TypeError, "lengths must be an integer tensor"),
        (dict(lengths=[5.0, 3.0, 1.0]), TypeError, "lengths must be an integer tensor"),
        (dict(lengths=torch.tensor([True, True, True])), TypeError, "lengths must be an integer tensor"),
        (dict(lengths="abc"), TypeError, "lengths"),
        (dict(h0=torch.randn(3, 6, device="meta")), ValueError, "h0 is on meta"),
        (dict(w_hh=torch.randn(24, 6, device="meta")), ValueError, "w_hh is on meta"),
        (dict(b_hh=torch.randn(24, device="meta")), ValueError, "b_hh is on meta"),
        (dict(w_ih=torch.randn(24, 4, dtype=torch.float64)), TypeError, "w_ih has dtype torch.float64"),
        (dict(c0=torch.randn(3, 6, dtype=torch.float64)), TypeError, "c0 has dtype"),
        (dict(b_ih=torch.randn(24, dtype=torch.float16)), TypeError, "b_ih has dtype"),
    ],
)
def test_bad_input_is_a_named_error(overrides, error, match):
    with pytest.raises(error, match=match):
        bad_call(**overrides)()


def test_bad_input_x_on_another_device():
    args = make_args(5, 3, 4, 6)
    with pytest.raises(ValueError, match="h0 is on cpu but x is on meta"):
        lstm(args[0].to("meta"), *args[1:])


def raw_fwd_args(**overrides):
    x, h0, c0, w_ih, w_hh, b_ih, b_hh = make_args(5, 3, 4, 6)
    args = dict(x=x, h0=h0, c0=c0, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh, lengths=torch.tensor([5, 1, 3]))
    args.update(overrides)
    return list(args.values())


@pytest.mark.parametrize(
    "overrides, error, match",
    [
        (dict(lengths=torch.tensor([5, 0, 3])), ValueError, "'lengths' must lie in 1..5"),
        (dict(lengths=torch.tensor([5, 6, 3])), ValueError, "'lengths' must lie in 1..5"),
        (dict(lengths=torch.tensor([5, 3])), ValueError, "'lengths' must have shape \\[3\\]"),
        (dict(lengths=torch.tensor([5, 1, 3], dtype=torch.int32)), TypeError, "'lengths' must be int64"),
        (dict(w_ih=torch.randn(24, 5)), ValueError, "'w_ih' must have shape"),
        (dict(h0=torch.randn(3, 5)), ValueError, "'h0' must have shape"),
        (dict(x=torch.randn(5, 3)), ValueError, "'x' must be 3-D"),
        (dict(x=torch.ones(5, 3, 4, dtype=torch.int64)), TypeError, "'x' must be a floating-point"),
        (dict(w_hh=torch.randn(24, 6, dtype=torch.float64)), TypeError, "dtype"),
        (dict(b_ih=torch.randn(23)), ValueError, "b_ih/b_hh must have shape"),
        (dict(b_hh=torch.randn(1, 24)), ValueError, "b_ih/b_hh must have shape"),
        (dict(b_hh=torch.randn(24, dtype=torch.float64)), TypeError, "biases must have x's dtype"),
    ],
)
def test_raw_fwd_op_bad_input(overrides, error, match):
    with pytest.raises(error, match=match):
        OPS.lstm_fwd(*raw_fwd_args(**overrides), False, True)


def test_raw_bwd_op_bad_input():
    x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths = raw_fwd_args()
    _, _, _, gates, cprev, tanh_c, hprev = OPS.lstm_fwd(x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, False, True)
    gy, gh, gc = upstream_grads(5, 3, 6, torch.float32)
    with pytest.raises(ValueError, match="'lengths' must lie in 1..5"):
        OPS.lstm_bwd(gy, gh, gc, x, w_ih, w_hh, torch.tensor([5, 7, 3]), gates, cprev, tanh_c, hprev, False)
    with pytest.raises(ValueError, match="'grad_y' must have shape"):
        OPS.lstm_bwd(gy[:4], gh, gc, x, w_ih, w_hh, lengths, gates, cprev, tanh_c, hprev, False)
    with pytest.raises(ValueError, match="'cprev' must have shape"):  # buffers of a need_grad=False forward
        OPS.lstm_bwd(gy, gh, gc, x, w_ih, w_hh, lengths, gates, x.new_empty(0), tanh_c, hprev, False)
    with pytest.raises(TypeError, match="'grad_hn' must have dtype"):
        OPS.lstm_bwd(gy, gh.double(), gc, x, w_ih, w_hh, lengths, gates, cprev, tanh_c, hprev, False)


def test_raw_cell_op_bad_input():
    x, h, c, w_ih, w_hh, b_ih, b_hh = make_args(1, 3, 4, 6)
    with pytest.raises(ValueError, match="must have shape"):
        OPS.lstm_cell(x[0], h[:2], c, w_ih, w_hh, None, None)
    with pytest.raises(ValueError, match="must be 2-D"):
        OPS.lstm_cell(x, h, c, w_ih, w_hh, None, None)
    with pytest.raises(ValueError, match="b_ih/b_hh must have shape"):
        OPS.lstm_cell(x[0], h, c, w_ih, w_hh, b_ih[:5], None)
    with pytest.raises((TypeError, RuntimeError)):  # never a silent read of float64 memory as float32
        OPS.lstm_cell(x[0], h.double(), c, w_ih, w_hh, None, None)


def test_raw_cell_op_errors_name_schema_arguments():
    x, h, c, w_ih, w_hh, b_ih, b_hh = make_args(1, 3, 4, 6)
    with pytest.raises(ValueError, match="argument 'h' must have shape"):
        OPS.lstm_cell(x[0], h[:2], c, w_ih, w_hh, None, None)
    with pytest.raises(ValueError, match="argument 'x' must be 2-D"):
        OPS.lstm_cell(x, h, c, w_ih, w_hh, None, None)


# ------------------------------------------------------------------ opcheck


def fwd_op_args(need_grad, requires_grad, bias, lengths, reverse, T=4, B=3, E=5, H=6):
    x, h0, c0, w_ih, w_hh, b_ih, b_hh = make_args(T, B, E, H)
    if bias == "none":
        b_ih = b_hh = None
    elif bias == "ih":
        b_hh = None
    tensors = [t if t is None else t.requires_grad_(requires_grad) for t in (x, h0, c0, w_ih, w_hh, b_ih, b_hh)]
    lengths = torch.tensor([T, 1, T - 1][:B]) if lengths else None
    return (*tensors, lengths, reverse, need_grad)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("lengths", [True, False], ids=["mixed", "nolengths"])
@pytest.mark.parametrize(
    "need_grad, requires_grad", [(True, True), (False, False), (True, False)], ids=["grad", "nograd", "saved-no-rg"]
)
@pytest.mark.parametrize("bias", ["both", "ih", "none"])
def test_opcheck_lstm_fwd(need_grad, requires_grad, lengths, reverse, bias):
    torch.library.opcheck(OPS.lstm_fwd.default, fwd_op_args(need_grad, requires_grad, bias, lengths, reverse))


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("lengths", [True, False], ids=["mixed", "nolengths"])
def test_opcheck_lstm_bwd(lengths, reverse):
    x, h0, c0, w_ih, w_hh, b_ih, b_hh, lens, _, _ = fwd_op_args(True, False, "both", lengths, reverse)
    _, _, _, gates, cprev, tanh_c, hprev = OPS.lstm_fwd(x, h0, c0, w_ih, w_hh, b_ih, b_hh, lens, reverse, True)
    gy, gh, gc = upstream_grads(4, 3, 6, torch.float32)
    torch.library.opcheck(
        OPS.lstm_bwd.default, (gy, gh, gc, x, w_ih, w_hh, lens, gates, cprev, tanh_c, hprev, reverse)
    )


@pytest.mark.parametrize("bias", ["both", "ih", "hh", "none"])
def test_opcheck_lstm_cell(bias):
    x, h, c, w_ih, w_hh, b_ih, b_hh = make_args(1, 3, 5, 6)
    b_ih = b_ih if bias in ("both", "ih") else None
    b_hh = b_hh if bias in ("both", "hh") else None
    args = (x[0], h, c, w_ih, w_hh, b_ih, b_hh)
    torch.library.opcheck(OPS.lstm_cell.default, args)
    for a, e in zip(OPS.lstm_cell(*args), lstm_cell_ref(*args)):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------- ISA variants

ISA_CHECK = textwrap.dedent(
    """
    import itertools
    import math
    from fastvae.ops import lstm, lstm_ref, lstm_cell, lstm_cell_ref

    torch.manual_seed(0)
    # H = 128: float on the tile kernels keeps the gate gradients in panels (H >= 128, a multiple of 16);
    # H = 23 and 32 in rows (H = 32: the weight gradients read them in place, 4H a multiple of 32;
    # H = 23: copied into panels first)
    shapes = ((7, 5, 19, 23), (6, 13, 9, 32), (5, 13, 9, 128))
    for dtype, (T, B, E, H) in itertools.product((torch.float32, torch.float64), shapes):
        k = 1 / math.sqrt(H)
        args = [torch.randn(T, B, E, dtype=dtype), torch.randn(B, H, dtype=dtype), torch.randn(B, H, dtype=dtype)]
        args += [torch.empty(*s, dtype=dtype).uniform_(-k, k) for s in ((4 * H, E), (4 * H, H), (4 * H,), (4 * H,))]
        # full lengths forward: the fused step products; else the packed schedule. A zero initial state
        # (the usual one) leaves step 0's rows out of the recurrent weight gradient's product.
        mixed = ([T, 1, 4, T, 2] * 3)[:B]
        zero_state = [args[0], torch.zeros_like(args[1]), torch.zeros_like(args[2]), *args[3:]]
        for reverse, lengths, inputs in ((False, mixed, args), (True, mixed, args), (False, None, args),
                                         (False, None, zero_state), (True, mixed, zero_state)):
            outs = []
            for fn in (lstm, lstm_ref):
                leaves = [a.clone().requires_grad_() for a in inputs]
                out = fn(*leaves, lengths=lengths, reverse=reverse)
                sum((o * torch.linspace(-1, 1, o.numel(), dtype=dtype).view_as(o)).sum() for o in out).backward()
                outs.append(list(out) + [a.grad for a in leaves])
            for a, e in zip(*outs):
                torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-4)
        with torch.no_grad():
            for a, e in zip(lstm_cell(args[0][0], *args[1:]), lstm_cell_ref(args[0][0], *args[1:])):
                torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)
    """
)


@pytest.mark.parametrize("isa", ISA_LEVELS)
def test_isa_variant_matches_reference(isa):
    run_at_isa(ISA_CHECK, isa)


def test_invalid_isa_is_a_value_error():
    code = textwrap.dedent(
        """
        import torch
        from fastvae.ops import lstm
        args = [torch.randn(3, 2, 4), torch.randn(2, 5), torch.randn(2, 5), torch.randn(20, 4), torch.randn(20, 5)]
        try:
            lstm(*args)
        except ValueError as exc:
            assert "FASTVAE_CPU_ISA" in str(exc), str(exc)
        else:
            raise AssertionError("FASTVAE_CPU_ISA=bogus was accepted")
        """
    )
    result = run_python(code, env={"FASTVAE_CPU_ISA": "bogus"})
    assert result.returncode == 0, f"subprocess failed (rc={result.returncode}):\n{result.stderr[-4000:]}"


# -------------------------------------------------------------- torch.compile


@pytest.mark.filterwarnings("ignore:Dynamo detected a call to a `functools.lru_cache`")
def test_compile_public_op_fullgraph():
    args = leaves(make_args(5, 3, 4, 6))
    lengths = torch.tensor([5, 1, 3])

    def loss(*a):
        y, h, c = lstm(*a, lengths=lengths, reverse=True)
        return (y * y).sum() + h.sum() + c.sum()

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    out = compiled(*args)
    grads = torch.autograd.grad(out, [a for a in args])
    ref_args = leaves(args)
    ref = loss(*ref_args)
    ref_grads = torch.autograd.grad(ref, ref_args)
    torch.testing.assert_close(out, ref)
    for a, e in zip(grads, ref_grads):
        torch.testing.assert_close(a, e)
