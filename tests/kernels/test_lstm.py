"""Tests for the Triton LSTM kernels in ``fastvae.kernels.lstm``.

Without CUDA the kernels run under the Triton interpreter, so every shape here
is tiny. References are ``torch.nn.LSTM`` (with packed sequences for mixed
lengths), ``fastvae.ops.lstm_ref`` and ``torch.nn.LSTMCell``. The recurrence
has two implementations -- one launch per sequence (H <= 256) and one launch
per time step (larger H) -- and the ``path`` fixture runs a test on each.
"""

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from fastvae.kernels import _launch
from fastvae.kernels import lstm as klstm
from fastvae.ops import lstm_ref

from .helpers import DEVICE, NEEDS_CUDA, OPCHECK_UTILS

ATOL = RTOL = 1e-5
GRAD_ATOL = GRAD_RTOL = 1e-4

T, B, E, H = 4, 5, 19, 23
MIXED_LENGTHS = [4, 1, 3, 4, 2]

PATHS = ["sequence", "per-step"]


@pytest.fixture(params=PATHS)
def path(request, monkeypatch):
    """Run the test with the one-launch sequence kernels, then with the per-step kernels."""
    if request.param == "per-step":
        monkeypatch.setattr(klstm, "SEQUENCE_MAX_HIDDEN", 0)
    return request.param


def make_inputs(t, b, e, h, dtype=torch.float32, seed=0):
    """Random x [t,b,e], h0/c0 [b,h], w_ih [4h,e], w_hh [4h,h], b_ih/b_hh [4h] on DEVICE."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).mul_(0.5).to(DEVICE, dtype)

    return {
        "x": rand(t, b, e), "h0": rand(b, h), "c0": rand(b, h),
        "w_ih": rand(4 * h, e), "w_hh": rand(4 * h, h), "b_ih": rand(4 * h), "b_hh": rand(4 * h),
    }


def flip_within_lengths(t, lengths):
    """Reverse each sequence of t [T, B, ...] within its length; padded positions stay put."""
    steps = torch.arange(t.shape[0], device=t.device)[:, None]
    idx = torch.where(steps < lengths[None, :], lengths[None, :] - 1 - steps, steps)
    idx = idx.view(*idx.shape, *([1] * (t.dim() - 2))).expand_as(t)
    return t.gather(0, idx)


def reference_lstm(inp, lengths, reverse):
    """nn.LSTM with PackedSequence semantics. Returns (y, h_n, c_n); y zero-padded."""
    e, h = inp["x"].shape[2], inp["h0"].shape[1]
    module = torch.nn.LSTM(e, h).to(DEVICE, inp["x"].dtype)
    params = {
        "weight_ih_l0": inp["w_ih"], "weight_hh_l0": inp["w_hh"],
        "bias_ih_l0": inp["b_ih"], "bias_hh_l0": inp["b_hh"],
    }
    x = flip_within_lengths(inp["x"], lengths) if reverse else inp["x"]
    packed = pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False)
    state = (inp["h0"][None], inp["c0"][None])
    out, (h_n, c_n) = torch.func.functional_call(module, params, (packed, state))
    y, _ = pad_packed_sequence(out, total_length=x.shape[0])
    if reverse:
        y = flip_within_lengths(y, lengths)
    return y, h_n[0], c_n[0]


def run_fwd(inp, lengths, reverse, need_grad=True, with_bias=True):
    """klstm.lstm_fwd on an input dict from make_inputs."""
    bias = inp["b_ih"] + inp["b_hh"] if with_bias else None
    return klstm.lstm_fwd(
        inp["x"], inp["h0"], inp["c0"], inp["w_ih"], inp["w_hh"], bias, lengths, reverse, need_grad
    )


def as_lengths(values):
    return torch.tensor(values, dtype=torch.int64, device=DEVICE)


def assert_close(actual, expected, atol=ATOL, rtol=RTOL):
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol)


def check_forward(inp, lengths, reverse):
    y, h_n, c_n, *_ = run_fwd(inp, lengths, reverse)
    y_ref, h_ref, c_ref = reference_lstm(inp, lengths, reverse)
    assert_close(y, y_ref)
    assert_close(h_n, h_ref)
    assert_close(c_n, c_ref)


def check_backward(inp, lengths, reverse):
    leaves = {k: v.clone().requires_grad_() for k, v in inp.items()}
    y_ref, h_ref, c_ref = reference_lstm(leaves, lengths, reverse)
    gen = torch.Generator().manual_seed(1)
    grad_y, grad_hn, grad_cn = (
        torch.randn(t.shape, generator=gen).to(DEVICE) for t in (y_ref, h_ref, c_ref)
    )
    loss = (y_ref * grad_y).sum() + (h_ref * grad_hn).sum() + (c_ref * grad_cn).sum()
    loss.backward()

    _, _, _, gates, cprev, tanh_c, hprev = run_fwd(inp, lengths, reverse)
    dx, dh0, dc0, dw_ih, dw_hh, db = klstm.lstm_bwd(
        grad_y, grad_hn, grad_cn, inp["x"], inp["w_ih"], inp["w_hh"], lengths,
        gates, cprev, tanh_c, hprev, reverse,
    )
    got = {"x": dx, "h0": dh0, "c0": dc0, "w_ih": dw_ih, "w_hh": dw_hh, "b_ih": db}
    for name, grad in got.items():
        assert grad.shape == leaves[name].shape, name
        assert_close(grad, leaves[name].grad, atol=GRAD_ATOL, rtol=GRAD_RTOL)


LENGTH_CASES = [pytest.param([T] * B, id="full"), pytest.param(MIXED_LENGTHS, id="mixed")]


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("lengths", LENGTH_CASES)
def test_forward_matches_nn_lstm(path, lengths, reverse):
    check_forward(make_inputs(T, B, E, H), as_lengths(lengths), reverse)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("lengths", LENGTH_CASES)
def test_backward_matches_autograd(path, lengths, reverse):
    check_backward(make_inputs(T, B, E, H), as_lengths(lengths), reverse)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_sequence_kernels_match_lstm_ref(reverse):
    """The one-launch kernels against the op's own twin, lstm_ref, with lengths and both directions."""
    inp = make_inputs(5, 3, 6, 10, seed=12)
    lengths = as_lengths([5, 2, 4])
    y, h_n, c_n, *_ = run_fwd(inp, lengths, reverse)
    y_ref, h_ref, c_ref = lstm_ref(
        inp["x"], inp["h0"], inp["c0"], inp["w_ih"], inp["w_hh"], inp["b_ih"], inp["b_hh"],
        lengths=lengths.cpu(), reverse=reverse,
    )
    assert_close(y, y_ref)
    assert_close(h_n, h_ref)
    assert_close(c_n, c_ref)


def _launches_of_a_layer(t, b, hidden, reverse):
    """Kernel names launched by lstm_fwd and by lstm_bwd for one layer (meta tensors: nothing runs)."""
    inp = {k: torch.empty(shape, device="meta") for k, shape in {
        "x": (t, b, 3), "h0": (b, hidden), "c0": (b, hidden), "w_ih": (4 * hidden, 3),
        "w_hh": (4 * hidden, hidden), "b_ih": (4 * hidden,), "b_hh": (4 * hidden,),
    }.items()}
    lengths = torch.full((b,), t, dtype=torch.int64, device="meta")
    with _launch.recording() as fwd_launches:
        y, _, _, *saved = run_fwd(inp, lengths, reverse)
    with _launch.recording() as bwd_launches:
        klstm.lstm_bwd(y, inp["h0"], inp["c0"], inp["x"], inp["w_ih"], inp["w_hh"], lengths, *saved, reverse)
    return [launch.kernel.__name__ for launch in fwd_launches], [launch.kernel.__name__ for launch in bwd_launches]


@pytest.mark.parametrize("hidden", [1, 32, klstm.SEQUENCE_MAX_HIDDEN])
def test_one_launch_per_sequence(hidden):
    """Forward and backward of one layer and direction: one kernel launch each, whatever T."""
    fwd, bwd = _launches_of_a_layer(40, 32, hidden, reverse=True)
    assert fwd == ["_lstm_fwd_seq_kernel"]
    assert bwd == ["_lstm_bwd_seq_kernel"]


def test_per_step_launches_above_the_limit():
    """Past SEQUENCE_MAX_HIDDEN the recurrence launches one kernel per time step."""
    fwd, bwd = _launches_of_a_layer(3, 2, klstm.SEQUENCE_MAX_HIDDEN + 1, reverse=False)
    assert fwd == ["_lstm_fwd_step_kernel"] * 3
    assert bwd == ["_lstm_bwd_step_kernel"] * 3


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_multiple_blocks_per_dim(path, monkeypatch, reverse):
    """Force 16-wide blocks so B, H and the reductions span several blocks / K chunks."""
    monkeypatch.setattr(klstm, "_fwd_blocks", lambda hidden: (16, 16, 16))
    monkeypatch.setattr(klstm, "_bwd_blocks", lambda batch, hidden, sequence: (16, 16, 16))
    inp = make_inputs(3, 17, 19, 21, seed=3)
    lengths = as_lengths([3, 1, 2] + [3, 2] * 7)
    check_forward(inp, lengths, reverse)
    check_backward(inp, lengths, reverse)


def test_single_step_and_batch_of_one(path):
    inp = make_inputs(1, 1, 3, 5, seed=4)
    lengths = as_lengths([1])
    check_forward(inp, lengths, reverse=False)
    check_backward(inp, lengths, reverse=True)


def test_non_contiguous_input(path):
    inp = make_inputs(T, B, E, H, seed=5)
    inp["x"] = inp["x"].transpose(0, 1).contiguous().transpose(0, 1)
    assert not inp["x"].is_contiguous()
    check_forward(inp, as_lengths(MIXED_LENGTHS), reverse=True)


def test_without_bias(path):
    inp = make_inputs(T, B, E, H, seed=6)
    inp["b_ih"].zero_()
    inp["b_hh"].zero_()
    lengths = as_lengths(MIXED_LENGTHS)
    y, h_n, c_n, *_ = run_fwd(inp, lengths, reverse=False, with_bias=False)
    y_ref, h_ref, c_ref = reference_lstm(inp, lengths, reverse=False)
    assert_close(y, y_ref)
    assert_close(h_n, h_ref)
    assert_close(c_n, c_ref)


def test_saved_buffers(path):
    inp = make_inputs(T, B, E, H, seed=7)
    lengths = as_lengths(MIXED_LENGTHS)
    y, _, _, gates, cprev, tanh_c, hprev = run_fwd(inp, lengths, reverse=False)
    assert gates.shape == (T, B, 4 * H)
    assert cprev.shape == tanh_c.shape == hprev.shape == (T, B, H)
    padded = torch.arange(T, device=DEVICE)[:, None] >= lengths[None, :]
    for buf in (y, gates, cprev, tanh_c, hprev):
        assert torch.all(buf[padded] == 0)
    assert_close(hprev[0], inp["h0"])
    assert_close(cprev[0], inp["c0"])
    assert_close(hprev[1:][~padded[1:]], y[:-1][~padded[1:]])
    assert_close(tanh_c[~padded] * gates[..., 3 * H:][~padded], y[~padded])


def test_need_grad_false_returns_empty_buffers():
    inp = make_inputs(T, B, E, H, seed=8)
    lengths = as_lengths(MIXED_LENGTHS)
    with_grad = run_fwd(inp, lengths, reverse=True, need_grad=True)
    without = run_fwd(inp, lengths, reverse=True, need_grad=False)
    for got, expected in zip(without[:3], with_grad[:3]):
        assert torch.equal(got, expected)
    for buf in without[3:]:
        assert buf.numel() == 0


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
def test_cell_matches_nn_lstm_cell(with_bias):
    b, e, h = 5, 19, 23
    inp = make_inputs(1, b, e, h, seed=9)
    cell = torch.nn.LSTMCell(e, h, bias=with_bias).to(DEVICE)
    with torch.no_grad():
        cell.weight_ih.copy_(inp["w_ih"])
        cell.weight_hh.copy_(inp["w_hh"])
        if with_bias:
            cell.bias_ih.copy_(inp["b_ih"])
            cell.bias_hh.copy_(inp["b_hh"])
        x, h0, c0 = inp["x"][0], inp["h0"], inp["c0"]
        h_ref, c_ref = cell(x, (h0, c0))
    bias = inp["b_ih"] + inp["b_hh"] if with_bias else None
    h_new, c_new = klstm.lstm_cell(x, h0, c0, inp["w_ih"], inp["w_hh"], bias)
    assert_close(h_new, h_ref)
    assert_close(c_new, c_ref)


def test_cell_non_contiguous_inputs():
    b, e, h = 3, 7, 9
    inp = make_inputs(1, b, e, h, seed=10)
    w_ih_t = inp["w_ih"].t().contiguous().t()
    x = inp["x"][0].t().contiguous().t()
    bias = inp["b_ih"] + inp["b_hh"]
    h_new, c_new = klstm.lstm_cell(x, inp["h0"], inp["c0"], w_ih_t, inp["w_hh"], bias)
    expected = klstm.lstm_cell(inp["x"][0], inp["h0"], inp["c0"], inp["w_ih"], inp["w_hh"], bias)
    assert_close(h_new, expected[0])
    assert_close(c_new, expected[1])


def _shape_check_inputs(device):
    """Uninitialised inputs of the default sizes on ``device`` (for shape-only checks)."""
    inp = {k: torch.empty_like(v, device=device) for k, v in make_inputs(T, B, E, H).items()}
    lengths = torch.full((B,), T, dtype=torch.int64, device=device)
    return inp, lengths


def _assert_shapes(fwd, bwd, cell):
    y, h_n, c_n, gates, cprev, tanh_c, hprev = fwd
    assert y.shape == (T, B, H) and h_n.shape == c_n.shape == (B, H)
    assert gates.shape == (T, B, 4 * H) and cprev.shape == tanh_c.shape == hprev.shape == (T, B, H)
    assert [t.shape for t in bwd] == [(T, B, E), (B, H), (B, H), (4 * H, E), (4 * H, H), (4 * H,)]
    assert [t.shape for t in cell] == [(B, H), (B, H)]
    assert all(t.dtype == torch.float32 for t in (y, h_n, c_n, *bwd, *cell))


def _run_all(inp, lengths):
    """Call lstm_fwd, lstm_bwd and lstm_cell once each; returns their outputs."""
    fwd = run_fwd(inp, lengths, reverse=True)
    bwd = klstm.lstm_bwd(
        fwd[0], inp["h0"], inp["c0"], inp["x"], inp["w_ih"], inp["w_hh"], lengths, *fwd[3:], True
    )
    cell = klstm.lstm_cell(inp["x"][0], inp["h0"], inp["c0"], inp["w_ih"], inp["w_hh"], None)
    return fwd, bwd, cell


def test_meta_tensors_give_shapes():
    inp, lengths = _shape_check_inputs("meta")
    _assert_shapes(*_run_all(inp, lengths))


def test_fake_tensors_give_shapes():
    inp, lengths = _shape_check_inputs(DEVICE)
    with FakeTensorMode() as mode:
        fake_inp = {k: mode.from_tensor(v) for k, v in inp.items()}
        _assert_shapes(*_run_all(fake_inp, mode.from_tensor(lengths)))


LOW_PRECISION_TOL = {torch.float16: 1e-2, torch.bfloat16: 6e-2}


def fp32_grads(inp, lengths, reverse, grad_y):
    """lstm_bwd on fp32 inputs with grad_y only; returns the six gradients."""
    _, h_n, _, *saved = run_fwd(inp, lengths, reverse)
    zeros = torch.zeros_like(h_n)
    return klstm.lstm_bwd(
        grad_y, zeros, zeros, inp["x"], inp["w_ih"], inp["w_hh"], lengths, *saved, reverse
    )


@pytest.mark.parametrize(
    "dtype", [torch.float16, pytest.param(torch.bfloat16, marks=NEEDS_CUDA)], ids=["fp16", "bf16"]
)
def test_low_precision_close_to_fp32(path, dtype):
    """16-bit inputs give 16-bit results close to fp32 on the same (rounded) inputs."""
    inp = {k: v.to(dtype) for k, v in make_inputs(T, B, E, H, seed=11).items()}
    inp32 = {k: v.float() for k, v in inp.items()}
    lengths = as_lengths(MIXED_LENGTHS)
    tol = LOW_PRECISION_TOL[dtype]
    outputs = run_fwd(inp, lengths, reverse=True)
    for got, ref in zip(outputs[:3], reference_lstm(inp32, lengths, reverse=True)):
        assert got.dtype == dtype
        assert_close(got.float(), ref, atol=tol, rtol=tol)
    grad_y = torch.ones(T, B, H, device=DEVICE)
    grads = fp32_grads(inp32, lengths, True, grad_y)
    zeros = torch.zeros_like(outputs[1])
    grads_lp = klstm.lstm_bwd(
        grad_y.to(dtype), zeros, zeros, inp["x"], inp["w_ih"], inp["w_hh"], lengths,
        *outputs[3:], True,
    )
    for got, ref in zip(grads_lp, grads):
        assert got.dtype == dtype
        assert_close(got.float(), ref, atol=2 * tol, rtol=2 * tol)


# ------------------------------------------------------------ the triton_ops
# fastvae::lstm_{fwd,bwd,cell}_triton (fastvae.ops.lstm registers them) run the
# launchers above; under the interpreter wrap_triton hands back the raw kernel,
# which cannot run on aot_dispatch's FakeTensors, so opcheck skips that test (OPCHECK_UTILS).


def _triton_kernels():
    from fastvae.ops.lstm import KERNELS

    return KERNELS.triton()


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_triton_op_autograd_matches_lstm_ref(path, reverse):
    """The registered triton_op and its autograd, against lstm_ref's autograd (lengths, both directions)."""
    kernels = _triton_kernels()
    inp = make_inputs(4, 3, 5, 7, seed=13)
    lengths = torch.tensor([4, 1, 3])
    leaves = {k: v.clone().requires_grad_() for k, v in inp.items()}
    ref_leaves = {k: v.clone().requires_grad_() for k, v in inp.items()}
    names = ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh")
    y, h_n, c_n, *_ = kernels.fwd(*(leaves[n] for n in names), lengths.to(DEVICE), reverse, True)
    y_ref, h_ref, c_ref = lstm_ref(*(ref_leaves[n] for n in names), lengths=lengths, reverse=reverse)
    for got, want in ((y, y_ref), (h_n, h_ref), (c_n, c_ref)):
        assert_close(got, want)
    gen = torch.Generator().manual_seed(2)
    weights = [torch.randn(t.shape, generator=gen).to(DEVICE) for t in (y_ref, h_ref, c_ref)]
    sum((t * w).sum() for t, w in zip((y, h_n, c_n), weights)).backward()
    sum((t * w).sum() for t, w in zip((y_ref, h_ref, c_ref), weights)).backward()
    for n in names:
        assert_close(leaves[n].grad, ref_leaves[n].grad, atol=GRAD_ATOL, rtol=GRAD_RTOL)


def _lstm_opcheck_cases():
    inp = make_inputs(3, 2, 4, 5, seed=14)
    lengths = as_lengths([3, 2])
    grads = {k: v.clone().requires_grad_() for k, v in inp.items()}
    fwd_args = (*(grads[n] for n in ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh")), lengths)
    y, h_n, c_n, *saved = run_fwd(inp, lengths, reverse=True)
    bwd_args = (y, h_n, c_n, inp["x"], inp["w_ih"], inp["w_hh"], lengths, *saved, True)
    cell_args = (inp["x"][0], inp["h0"], inp["c0"], inp["w_ih"], inp["w_hh"], inp["b_ih"], None)
    return [
        ("lstm_fwd_triton", (*fwd_args, False, True)),
        ("lstm_fwd_triton", (*fwd_args, True, False)),
        ("lstm_bwd_triton", bwd_args),
        ("lstm_cell_triton", cell_args),
    ]


@pytest.mark.parametrize("case", range(4))
def test_opcheck_triton_ops(case):
    _triton_kernels()  # registers the triton_ops
    name, args = _lstm_opcheck_cases()[case]
    torch.library.opcheck(getattr(torch.ops.fastvae, name).default, args, test_utils=OPCHECK_UTILS)
