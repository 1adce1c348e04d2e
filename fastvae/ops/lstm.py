"""The fused LSTM: one autograd node per layer and direction for a whole sequence.

Public ops (all tensors time-major):

* ``lstm(x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None, lengths=None, reverse=False)``
  -> ``(y, h_n, c_n)``: one layer, one direction;
* ``lstm_stack(x, h0, c0, params, lengths=None, bidirectional=False)``
  -> ``(y, h_n, c_n)``: a whole ``nn.LSTM``-like stack (layers and directions)
  in one call -- on CPU one op and one autograd node registered in C++;
* ``lstm_cell(x, h, c, w_ih, w_hh, b_ih=None, b_hh=None)`` -> ``(h', c')``

and their plain-PyTorch twins ``lstm_ref`` / ``lstm_stack_ref`` /
``lstm_cell_ref`` with the same signatures (the test oracles and the
benchmark baselines).

Kernels: on CPU the C++ kernels of ``fastvae._C`` (float32/float64), on CUDA
the Triton kernels of ``fastvae.kernels.lstm`` (registered as
``torch.library.triton_op``; ``lstm_stack`` calls them layer by layer); other
dtypes/devices, or a missing build, run the reference.
"""

from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from fastvae.ops import _checks, _dispatch

Tensor = torch.Tensor
Lengths = Union[Tensor, Sequence[int]]  # [B] lengths in 1..T: an integer tensor or a list of ints

# ----------------------------------------------------------------- reference


def _reverse_within_lengths(x, lengths):
    """Flip each sequence of ``x`` [T, B, ...] within its own length (padding stays put)."""
    T = x.shape[0]
    pos = torch.arange(T).unsqueeze(1)  # [T, 1]
    lens = lengths.unsqueeze(0)  # [1, B]
    src = torch.where(pos < lens, lens - 1 - pos, pos).to(x.device)  # [T, B]
    index = src.reshape(T, -1, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(0, index)


def lstm_ref(
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Optional[Tensor] = None,
    b_hh: Optional[Tensor] = None,
    lengths: Optional[Lengths] = None,
    reverse: bool = False,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Plain-PyTorch LSTM layer with the exact semantics of :func:`lstm`."""
    T, B, _ = x.shape
    lengths = _checks.lengths(lengths, B, T)
    if reverse:
        x = _reverse_within_lengths(x, lengths)
    xg = F.linear(x, w_ih, b_ih)
    if b_hh is not None:
        xg = xg + b_hh
    active = (torch.arange(T).unsqueeze(1) < lengths.unsqueeze(0)).to(x.device).unsqueeze(-1)  # [T, B, 1]
    h, c = h0, c0
    outputs = []
    for t in range(T):
        i, f, g, o = (xg[t] + F.linear(h, w_hh)).chunk(4, dim=1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h_new = torch.sigmoid(o) * torch.tanh(c_new)
        h = torch.where(active[t], h_new, h)
        c = torch.where(active[t], c_new, c)
        outputs.append(torch.where(active[t], h_new, torch.zeros_like(h_new)))
    y = torch.stack(outputs) if outputs else x.new_zeros(0, B, w_hh.shape[1])
    if reverse:
        y = _reverse_within_lengths(y, lengths)
    return y, h, c


def _stack_layout(h0, params, bidirectional):
    """``(num_layers, D, per)``: layers, directions and parameters per layer and direction."""
    D = 2 if bidirectional else 1
    if h0.dim() != 3 or h0.shape[0] % D or h0.shape[0] == 0:
        raise ValueError(f"h0 must have shape [num_layers * {D}, B, H], got {tuple(h0.shape)}")
    L = h0.shape[0] // D
    if len(params) not in (2 * L * D, 4 * L * D):
        raise ValueError(
            f"params must hold {2 * L * D} (no biases) or {4 * L * D} tensors for {L} layer(s) x {D} direction(s), "
            f"got {len(params)}"
        )
    return L, D, len(params) // (L * D)


def _stack_parameters(params, per, k):
    """``(w_ih, w_hh, b_ih, b_hh)`` of layer-and-direction ``k`` (biases None without them)."""
    group = list(params[k * per : (k + 1) * per])
    return (*group, None, None) if per == 2 else tuple(group)


def _run_stack(layer_fn, x, h0, c0, params, lengths, bidirectional):
    """The stack as layer_fn calls (one per layer and direction), nn.LSTM's order and outputs."""
    L, D, per = _stack_layout(h0, params, bidirectional)
    layer_input, h_n, c_n = x, [], []
    for layer in range(L):
        outputs = []
        for direction in range(D):
            k = layer * D + direction
            y, h, c = layer_fn(layer_input, h0[k], c0[k], *_stack_parameters(params, per, k), lengths, bool(direction))
            outputs.append(y)
            h_n.append(h)
            c_n.append(c)
        layer_input = outputs[0] if D == 1 else torch.cat(outputs, dim=2)
    return layer_input, torch.stack(h_n), torch.stack(c_n)


def lstm_stack_ref(
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    params: Sequence[Tensor],
    lengths: Optional[Lengths] = None,
    bidirectional: bool = False,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Plain-PyTorch twin of :func:`lstm_stack`: :func:`lstm_ref` per layer and direction."""
    return _run_stack(lstm_ref, x, h0, c0, params, lengths, bidirectional)


def lstm_cell_ref(
    x: Tensor,
    h: Tensor,
    c: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Optional[Tensor] = None,
    b_hh: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """Plain-PyTorch LSTM cell (one step) with the semantics of :func:`lstm_cell`."""
    gates = F.linear(x, w_ih, b_ih) + F.linear(h, w_hh, b_hh)
    i, f, g, o = gates.chunk(4, dim=1)
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c_new), c_new


# ----------------------------------------------------- autograd and fake impls


def _setup_context(ctx, inputs, output):
    x, _h0, _c0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, _need_grad = inputs
    _y, _hn, _cn, gates, cprev, tanh_c, hprev = output
    ctx.save_for_backward(x, w_ih, w_hh, gates, cprev, tanh_c, hprev)
    ctx.lengths = lengths  # int64, never differentiated
    ctx.reverse = reverse
    ctx.has_bias = (b_ih is not None, b_hh is not None)
    ctx.mark_non_differentiable(gates, cprev, tanh_c, hprev)


def _make_backward(bwd_op):
    def backward(ctx, grad_y, grad_hn, grad_cn, *_saved_grads):
        _checks.first_order_only("lstm")
        x, w_ih, w_hh, gates, cprev, tanh_c, hprev = ctx.saved_tensors
        if cprev.dim() != 3:
            raise RuntimeError("fastvae lstm: backward of a forward that ran with need_grad=False")
        T, B, _ = x.shape
        H = w_hh.shape[1]
        grad_y = x.new_zeros(T, B, H) if grad_y is None else grad_y
        grad_hn = x.new_zeros(B, H) if grad_hn is None else grad_hn
        grad_cn = x.new_zeros(B, H) if grad_cn is None else grad_cn
        dx, dh0, dc0, dw_ih, dw_hh, db = bwd_op(
            grad_y, grad_hn, grad_cn, x, w_ih, w_hh, ctx.lengths, gates, cprev, tanh_c, hprev, ctx.reverse
        )
        has_ih, has_hh = ctx.has_bias
        return dx, dh0, dc0, dw_ih, dw_hh, (db if has_ih else None), (db if has_hh else None), None, None, None

    return backward


def _fake_fwd(x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, need_grad):
    T, B, _ = x.shape
    H = w_hh.shape[1]
    saved = (T, B, H) if need_grad else (0,)
    return (
        x.new_empty(T, B, H),
        x.new_empty(B, H),
        x.new_empty(B, H),
        x.new_empty(T, B, 4 * H),
        x.new_empty(saved),
        x.new_empty(saved),
        x.new_empty(saved),
    )


def _fake_bwd(grad_y, grad_hn, grad_cn, x, w_ih, w_hh, lengths, gates, cprev, tanh_c, hprev, reverse):
    T, B, E = x.shape
    H = w_hh.shape[1]
    return (
        x.new_empty(T, B, E),
        x.new_empty(B, H),
        x.new_empty(B, H),
        x.new_empty(4 * H, E),
        x.new_empty(4 * H, H),
        x.new_empty(4 * H),
    )


def _fake_stack(x, h0, c0, params, lengths, num_layers, bidirectional):
    T, B, _ = x.shape
    D, H = h0.shape[0] // num_layers, h0.shape[2]
    return x.new_empty(T, B, D * H), h0.new_empty(h0.shape), c0.new_empty(c0.shape)


def _fake_stack_fwd(x, h0, c0, params, lengths, num_layers, bidirectional, need_grad):
    T, B, _ = x.shape
    D, H = h0.shape[0] // num_layers, h0.shape[2]
    saved = []
    if need_grad:
        saved += [x.new_empty(7 * T * B * H) for _ in range(num_layers * D)]  # gates, cprev, tanh_c, hprev
        saved += [x.new_empty(T, B, D * H) for _ in range(num_layers - 1)]
    return (*_fake_stack(x, h0, c0, params, lengths, num_layers, bidirectional), saved)


def _fake_stack_bwd(grad_y, grad_hn, grad_cn, x, h0, params, lengths, saved, num_layers, bidirectional):
    return x.new_empty(x.shape), h0.new_empty(h0.shape), h0.new_empty(h0.shape), [p.new_empty(p.shape) for p in params]


def _fake_cell(x, h, c, w_ih, w_hh, b_ih, b_hh):
    return x.new_empty(h.shape), x.new_empty(h.shape)


@dataclass(frozen=True)
class _Kernels:
    fwd: Callable
    bwd: Callable
    cell: Callable
    stack: Optional[Callable] = None  # one op for a whole stack (else layer by layer)


def _register_cpu() -> _Kernels:
    """Fake kernels and autograd of the C++ ops (their schemas and CPU kernels come from fastvae._C)."""
    ops = torch.ops.fastvae
    _dispatch.register_cpu_fake("lstm_fwd", _fake_fwd)
    _dispatch.register_cpu_fake("lstm_bwd", _fake_bwd)
    _dispatch.register_cpu_fake("lstm_cell", _fake_cell)
    _dispatch.register_cpu_fake("lstm_stack", _fake_stack)
    _dispatch.register_cpu_fake("lstm_stack_fwd", _fake_stack_fwd)
    _dispatch.register_cpu_fake("lstm_stack_bwd", _fake_stack_bwd)
    torch.library.register_autograd(
        "fastvae::lstm_fwd", _make_backward(ops.lstm_bwd.default), setup_context=_setup_context
    )
    # lstm_stack's autograd is registered in C++ (csrc/lstm_ops.cpp).
    return _Kernels(ops.lstm_fwd.default, ops.lstm_bwd.default, ops.lstm_cell.default, ops.lstm_stack.default)


def _register_triton() -> _Kernels:
    """Triton ops ``fastvae::lstm_*_triton`` (torch.library.triton_op) with their autograd."""
    from torch.library import triton_op

    from fastvae.kernels import lstm as kernels

    def device_lengths(lengths, x):
        if lengths is None:
            return torch.full((x.shape[1],), x.shape[0], dtype=torch.int64, device=x.device)
        return lengths.to(x.device)

    @triton_op("fastvae::lstm_fwd_triton", mutates_args=())
    def lstm_fwd_triton(
        x: Tensor,
        h0: Tensor,
        c0: Tensor,
        w_ih: Tensor,
        w_hh: Tensor,
        b_ih: Optional[Tensor],
        b_hh: Optional[Tensor],
        lengths: Optional[Tensor],
        reverse: bool,
        need_grad: bool,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        bias = _combined_bias(b_ih, b_hh)
        return kernels.lstm_fwd(x, h0, c0, w_ih, w_hh, bias, device_lengths(lengths, x), reverse, need_grad)

    @triton_op("fastvae::lstm_bwd_triton", mutates_args=())
    def lstm_bwd_triton(
        grad_y: Tensor,
        grad_hn: Tensor,
        grad_cn: Tensor,
        x: Tensor,
        w_ih: Tensor,
        w_hh: Tensor,
        lengths: Optional[Tensor],
        gates: Tensor,
        cprev: Tensor,
        tanh_c: Tensor,
        hprev: Tensor,
        reverse: bool,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        return kernels.lstm_bwd(
            grad_y, grad_hn, grad_cn, x, w_ih, w_hh, device_lengths(lengths, x), gates, cprev, tanh_c, hprev, reverse
        )

    @triton_op("fastvae::lstm_cell_triton", mutates_args=())
    def lstm_cell_triton(
        x: Tensor, h: Tensor, c: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor], b_hh: Optional[Tensor]
    ) -> tuple[Tensor, Tensor]:
        return kernels.lstm_cell(x, h, c, w_ih, w_hh, _combined_bias(b_ih, b_hh))

    lstm_fwd_triton.register_autograd(_make_backward(lstm_bwd_triton), setup_context=_setup_context)
    return _Kernels(lstm_fwd_triton, lstm_bwd_triton, lstm_cell_triton)


KERNELS = _dispatch.Kernels(_register_cpu, _register_triton)


def kernels_for(x: Tensor, op_name: str = "lstm") -> Optional[_Kernels]:
    """The fused kernels for ``x``'s device and dtype, or None for the reference."""
    return KERNELS.for_input(x, op_name)


# -------------------------------------------------------------- public ops


def _check_lstm_args(x, h0, c0, w_ih, w_hh, b_ih, b_hh, names=("x", "h0", "c0"), time_major=True):
    """Shapes, dtypes and devices of an LSTM call; x is [T, B, E] (or [B, E] for a cell)."""
    x_name, h_name, c_name = names
    _checks.tensor(x_name, x, ndim=3 if time_major else 2)
    _checks.tensor("w_hh", w_hh, ndim=2)
    T, B, E = x.shape if time_major else (1, *x.shape)
    H = w_hh.shape[1]
    _checks.shape("w_hh", w_hh, (4 * H, H))
    _checks.shape("w_ih", _checks.tensor("w_ih", w_ih, ndim=2), (4 * H, E))
    _checks.shape(h_name, _checks.tensor(h_name, h0, ndim=2), (B, H))
    _checks.shape(c_name, _checks.tensor(c_name, c0, ndim=2), (B, H))
    for name, b in (("b_ih", b_ih), ("b_hh", b_hh)):
        if b is not None:
            _checks.shape(name, _checks.tensor(name, b, ndim=1), (4 * H,))
    others = {h_name: h0, c_name: c0, "w_ih": w_ih, "w_hh": w_hh, "b_ih": b_ih, "b_hh": b_hh}
    _checks.same_device(x_name, x, **others)
    _checks.same_dtype(x_name, x, **others)
    return T, B, H


def _combined_bias(b_ih, b_hh):
    if b_ih is None:
        return b_hh
    return b_ih if b_hh is None else b_ih + b_hh


def _needs_grad(*tensors):
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def lstm(
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Optional[Tensor] = None,
    b_hh: Optional[Tensor] = None,
    lengths: Optional[Lengths] = None,
    reverse: bool = False,
) -> Tuple[Tensor, Tensor, Tensor]:
    """One LSTM layer over a padded sequence, fused (one autograd node).

    Args:
        x: ``[T, B, E]`` float input, time-major (any strides).
        h0, c0: ``[B, H]`` initial hidden and cell state.
        w_ih: ``[4H, E]``, w_hh: ``[4H, H]`` weights, gate blocks in
            ``nn.LSTM``'s order (input, forget, cell, output).
        b_ih, b_hh: ``[4H]`` biases or None.
        lengths: ``[B]`` integer lengths in ``1..T`` (CPU int64 preferred) or
            None for all ``T``. A sequence's state stops at its length.
        reverse: run each sequence backwards from its own last element.

    Returns:
        ``y [T, B, H]`` (zero past each length), ``h_n, c_n [B, H]`` -- the
        state at each sequence's last real step, exactly ``nn.LSTM`` on a
        ``PackedSequence``.
    """
    T, B, H = _check_lstm_args(x, h0, c0, w_ih, w_hh, b_ih, b_hh)
    if not isinstance(reverse, bool):
        raise TypeError(f"reverse must be a bool, got {type(reverse).__name__}")
    if lengths is not None:
        lengths = _checks.lengths(lengths, B, T)
    kernels = kernels_for(x, "lstm") if T > 0 and B > 0 and H > 0 else None  # empty shapes: the twin
    if kernels is None:
        return lstm_ref(x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, reverse)
    need_grad = _needs_grad(x, h0, c0, w_ih, w_hh, b_ih, b_hh)
    y, h_n, c_n, *_saved = kernels.fwd(x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, need_grad)
    return y, h_n, c_n


def _check_same_kind(x, h0, c0, params):
    """Every tensor a floating tensor on x's device with x's dtype (named errors; the C++ op checks shapes).

    One pass of attribute compares: this runs on every call of a stack whose
    whole fused work can be ~0.6 ms (DailyDialog size).
    """
    named = (("h0", h0), ("c0", c0), *((f"params[{i}]", p) for i, p in enumerate(params)))
    for name, t in named:
        if not isinstance(t, torch.Tensor) or t.device != x.device or t.dtype != x.dtype:
            _checks.tensor(name, t)
            _checks.same_device("x", x, **{name: t})
            _checks.same_dtype("x", x, **{name: t})


def _check_stack_shapes(x, h0, params, L, D, per):
    """Every layer's parameter shapes, named (the first layer reads x's features, the others D * H)."""
    H = h0.shape[2]
    for k in range(L * D):
        w_ih, w_hh, b_ih, b_hh = _stack_parameters(params, per, k)
        _checks.shape(f"params[{k * per + 1}] (w_hh)", w_hh, (4 * H, H))
        _checks.shape(f"params[{k * per}] (w_ih)", w_ih, (4 * H, x.shape[2] if k < D else D * H))
        for j, b in ((2, b_ih), (3, b_hh)):
            if b is not None:
                _checks.shape(f"params[{k * per + j}] (bias)", b, (4 * H,))


def lstm_stack(
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    params: Sequence[Tensor],
    lengths: Optional[Lengths] = None,
    bidirectional: bool = False,
) -> Tuple[Tensor, Tensor, Tensor]:
    """A stack of LSTM layers (``nn.LSTM`` without inter-layer dropout) in one fused call.

    Args:
        x: ``[T, B, E]`` float input, time-major.
        h0, c0: ``[L * D, B, H]`` initial states, layer-major (D = 2 when
            bidirectional), as ``nn.LSTM``'s ``hx``.
        params: per layer and direction ``w_ih [4H, E_l]``, ``w_hh [4H, H]``
            and, when the stack has biases, ``b_ih, b_hh [4H]`` -- the order of
            ``nn.LSTM._flat_weights`` (E_l = E for the first layer, D * H above).
        lengths: ``[B]`` integer lengths in ``1..T`` or None (all ``T``).
        bidirectional: run every layer both ways and concatenate.

    Returns:
        ``y [T, B, D * H]`` (the top layer, zero past each length) and
        ``h_n, c_n [L * D, B, H]`` -- ``nn.LSTM`` on the packed batch. On CPU
        one op with one autograd node for the whole stack.
    """
    if not isinstance(bidirectional, bool):
        raise TypeError(f"bidirectional must be a bool, got {type(bidirectional).__name__}")
    _checks.tensor("x", x, ndim=3)
    _checks.tensor("h0", h0, ndim=3)
    params = list(params)
    L, D, per = _stack_layout(h0, params, bidirectional)
    T, B, _ = x.shape
    _checks.shape("c0", _checks.tensor("c0", c0, ndim=3), tuple(h0.shape))
    _check_same_kind(x, h0, c0, params)
    if lengths is not None:
        lengths = _checks.lengths(lengths, B, T)
    kernels = kernels_for(x, "lstm") if T > 0 and B > 0 and h0.shape[2] > 0 else None
    if kernels is None or kernels.stack is None:  # the C++ op names bad shapes itself
        _check_stack_shapes(x, h0, params, L, D, per)
    if kernels is None:
        return lstm_stack_ref(x, h0, c0, params, lengths, bidirectional)
    if kernels.stack is None:
        return _run_stack(lambda *a: lstm(*a[:-2], lengths=a[-2], reverse=a[-1]), x, h0, c0, params, lengths,
                          bidirectional)
    return kernels.stack(x, h0, c0, params, lengths, L, bidirectional)


def lstm_cell(
    x: Tensor,
    h: Tensor,
    c: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Optional[Tensor] = None,
    b_hh: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """One LSTM step, fused: the decoding step of generation.

    Args:
        x: ``[B, E]`` input; h, c: ``[B, H]`` state; w_ih ``[4H, E]``,
            w_hh ``[4H, H]``, b_ih/b_hh ``[4H]`` or None.

    Returns:
        ``(h', c')``, each ``[B, H]``. Differentiable (through :func:`lstm`
        with ``T = 1`` when gradients are needed).
    """
    _, B, H = _check_lstm_args(x, h, c, w_ih, w_hh, b_ih, b_hh, names=("x", "h", "c"), time_major=False)
    if _needs_grad(x, h, c, w_ih, w_hh, b_ih, b_hh):
        _, h_new, c_new = lstm(x.unsqueeze(0), h, c, w_ih, w_hh, b_ih, b_hh)
        return h_new, c_new
    kernels = kernels_for(x, "lstm_cell") if B > 0 and H > 0 else None
    if kernels is None:
        return lstm_cell_ref(x, h, c, w_ih, w_hh, b_ih, b_hh)
    return kernels.cell(x, h, c, w_ih, w_hh, b_ih, b_hh)
