"""Triton kernels for a fused single-layer, single-direction LSTM.

Gate order is (i, f, g, o), exactly like ``torch.nn.LSTM``::

    i = sigmoid(pre_i)   f = sigmoid(pre_f)   g = tanh(pre_g)   o = sigmoid(pre_o)
    c = f * c_prev + i * g
    h = o * tanh(c)

Variable-length batches follow ``PackedSequence`` semantics. Row ``b`` is
active at step ``s`` iff ``s < lengths[b]``; it then processes time position
``p = s`` (forward) or ``p = lengths[b] - 1 - s`` (reverse). An inactive row
holds its state unchanged. Every per-position buffer (``y``, the saved
activations, ``dG``) is written exactly once: active rows write position
``p``, and at step ``s`` an inactive row writes zeros to position ``s``,
which is always a padded position (``s >= lengths[b]``). So these buffers
never need a memset.

The recurrence runs in one launch per layer and direction when H <= 256
(``SEQUENCE_MAX_HIDDEN``): ``_lstm_fwd_seq_kernel`` / ``_lstm_bwd_seq_kernel``
run the time loop inside the kernel, one program per block of batch rows that
owns all 4H gate columns of its rows, so no program ever waits on another
(which the interpreter, running programs one after another, also requires).
Within a step a program walks the hidden units in tiles and streams w_hh
tiles from global memory / L2 (at H = 256 the 4H x H weights do not fit in
registers); the step's h (forward) or dG (backward) goes through global
memory and a block barrier (``tl.debug_barrier``) makes it visible to all of
the program's threads before the next step reads it. Above that size the
per-step kernels run one launch per time step over (batch, hidden) tiles.
Both kinds use the same tile functions (``_fwd_tile``, ``_bwd_tile``).

The public functions are plain launchers: they allocate every output with
torch and then fill it with Triton kernels launched through
``torch.library.wrap_triton``, so they can be wrapped in
``torch.library.triton_op`` and traced by ``torch.compile``.

Kernels use ``tl.dot`` with fp32 accumulation. fp32 operands use
``input_precision="ieee"`` so results match fp32 references; for 16-bit
operands the setting has no effect. Recurrent state (h, c) and the tensors
saved for backward are kept in fp32, except ``hprev``, which is only consumed
by a GEMM and is stored in the input dtype.
"""

import torch
import triton
import triton.language as tl

from fastvae.kernels._launch import launch as _launch

_DOT_PRECISION = "ieee"
_MIN_DOT_BLOCK = 16
#: Largest hidden size run by the one-launch sequence kernels; above it, one launch per time step.
SEQUENCE_MAX_HIDDEN = 256


# --------------------------------------------------------------------------
# Block sizes (checked for register spills on sm_80/sm_90 by tests/test_triton_compile.py)
# --------------------------------------------------------------------------


def _dot_block(n: int, cap: int) -> int:
    """Power of two covering ``n``, at least 16 (``tl.dot`` minimum), at most ``cap``."""
    return max(_MIN_DOT_BLOCK, min(triton.next_power_of_2(n), cap))


def _fwd_blocks(hidden: int) -> tuple:
    """(BLOCK_B, BLOCK_H, BLOCK_K) of the forward kernels (sequence and per-step).

    Four gate products (four accumulators, four weight tiles) are live at
    once: with fp32 operands (FMA, not tensor cores) [32 x 32] row blocks or
    64-wide reduction chunks reach 255 registers and spill on sm_80. Small
    row blocks also give the sequence kernel the most programs (SMs): its
    programs share no work.
    """
    return _MIN_DOT_BLOCK, _dot_block(hidden, 32), _dot_block(hidden, 32)


def _bwd_blocks(batch: int, hidden: int, sequence: bool) -> tuple:
    """(BLOCK_B, BLOCK_H, BLOCK_K) of the backward kernels: one product, dG [B, 4H] @ w_hh [4H, H]."""
    block_b = _MIN_DOT_BLOCK if sequence else _dot_block(batch, 32)
    return block_b, _dot_block(hidden, 32), _dot_block(4 * hidden, 64)


def _cell_blocks(hidden: int, e: int) -> tuple:
    """(BLOCK_B, BLOCK_H, BLOCK_KE, BLOCK_KH) of the cell kernel (four gate products, as the forward)."""
    return _MIN_DOT_BLOCK, _dot_block(hidden, 32), _dot_block(e, 32), _dot_block(hidden, 32)


# --------------------------------------------------------------------------
# Device helpers
# --------------------------------------------------------------------------


@triton.jit
def _tanh(x):
    """tanh via sigmoid (``tl.tanh`` is unavailable in the interpreter)."""
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


@triton.jit
def _load_tile(ptr, rows, cols, stride_r, stride_c, row_mask, col_mask):
    """Load ``ptr[rows, cols]`` as a [len(rows), len(cols)] tile, zero outside the masks."""
    offsets = rows[:, None] * stride_r + cols[None, :] * stride_c
    return tl.load(ptr + offsets, mask=row_mask[:, None] & col_mask[None, :], other=0.0)


@triton.jit
def _gate_matmul(
    acc_i, acc_f, acc_g, acc_o,  # [BLOCK_M, BLOCK_N] fp32 accumulators
    a_ptr, stride_am, stride_ak,  # a: [M, K]
    rows, row_mask,  # [BLOCK_M]
    w_ptr, stride_wn, stride_wk,  # w: [4H, K], rows grouped by gate (i, f, g, o)
    cols, col_mask,  # [BLOCK_N] hidden units
    K, H,
    BLOCK_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """acc_q += a[rows, :] @ w[q * H + cols, :]^T for each gate q; returns the four accumulators."""
    gate_stride = H * stride_wn
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_mask = ks < K
        a = _load_tile(a_ptr, rows, ks, stride_am, stride_ak, row_mask, k_mask)
        a = a.to(w_ptr.dtype.element_ty)
        w = _load_tile(w_ptr, ks, cols, stride_wk, stride_wn, k_mask, col_mask)
        acc_i = tl.dot(a, w, acc_i, input_precision=DOT_PRECISION)
        w = _load_tile(w_ptr + gate_stride, ks, cols, stride_wk, stride_wn, k_mask, col_mask)
        acc_f = tl.dot(a, w, acc_f, input_precision=DOT_PRECISION)
        w = _load_tile(w_ptr + 2 * gate_stride, ks, cols, stride_wk, stride_wn, k_mask, col_mask)
        acc_g = tl.dot(a, w, acc_g, input_precision=DOT_PRECISION)
        w = _load_tile(w_ptr + 3 * gate_stride, ks, cols, stride_wk, stride_wn, k_mask, col_mask)
        acc_o = tl.dot(a, w, acc_o, input_precision=DOT_PRECISION)
    return acc_i, acc_f, acc_g, acc_o


@triton.jit
def _matmul_rows(
    acc,  # [BLOCK_M, BLOCK_N] fp32 accumulator
    a_ptr, row_offsets, row_mask,  # a: rows at a_ptr + row_offsets [BLOCK_M], unit column stride
    b_ptr, stride_bk, stride_bn,  # b: [K, N]
    cols, col_mask,  # [BLOCK_N]
    K,
    BLOCK_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """acc += a[rows, :] @ b[:, cols]; ``a`` is cast to the dtype of ``b``."""
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_mask = ks < K
        a = tl.load(a_ptr + row_offsets[:, None] + ks[None, :], mask=row_mask[:, None] & k_mask[None, :], other=0.0)
        b = _load_tile(b_ptr, ks, cols, stride_bk, stride_bn, k_mask, col_mask)
        acc = tl.dot(a.to(b_ptr.dtype.element_ty), b, acc, input_precision=DOT_PRECISION)
    return acc


@triton.jit
def _cell_update(pre_i, pre_f, pre_g, pre_o, c_prev):
    """LSTM pointwise cell on fp32 [BLOCK_B, BLOCK_H] tiles; returns (i, f, g, o, c, tanh_c, h)."""
    i = tl.sigmoid(pre_i)
    f = tl.sigmoid(pre_f)
    g = _tanh(pre_g)
    o = tl.sigmoid(pre_o)
    c = f * c_prev + i * g
    tanh_c = _tanh(c)
    return i, f, g, o, c, tanh_c, o * tanh_c


@triton.jit
def _step_positions(step, lengths, REVERSE: tl.constexpr):
    """Time position each row processes at ``step`` (only meaningful for active rows)."""
    if REVERSE:
        positions = lengths - 1 - step
    else:
        positions = step + tl.zeros_like(lengths)
    return positions


@triton.jit
def _row_offsets(positions, rows, B, width):
    """int64 offsets of rows ``(positions, rows)`` in a contiguous [T, B, width] tensor."""
    return (positions.to(tl.int64) * B + rows) * width


@triton.jit
def _store_rows(ptr, row_offsets, cols, values, active, mask):
    """Store ``values`` at ``ptr[row_offsets + cols]``, zeros for inactive rows."""
    out = tl.where(active[:, None], values, 0.0)
    tl.store(ptr + row_offsets[:, None] + cols[None, :], out.to(ptr.dtype.element_ty), mask=mask)


# --------------------------------------------------------------------------
# Tiles of one time step (shared by the per-step and the sequence kernels)
# --------------------------------------------------------------------------


@triton.jit
def _fwd_tile(
    xg_ptr, w_hh_ptr, stride_wn, stride_wk,
    lengths,  # [BLOCK_B] int64, the rows' lengths (0 past B)
    h_in_ptr, h_out_ptr, c_ptr,  # [B, H] fp32 state: read, written, updated in place
    y_ptr, gates_ptr, cprev_ptr, tanh_c_ptr, hprev_ptr,
    step, rows, row_mask, cols, B, H,
    REVERSE: tl.constexpr,
    SAVE: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """Step ``step`` for the [BLOCK_B, BLOCK_H] tile (rows, cols): h_in @ w_hh^T fused with the cell."""
    col_mask = cols < H
    mask = row_mask[:, None] & col_mask[None, :]
    active = row_mask & (step < lengths)
    active_mask = active[:, None] & col_mask[None, :]

    zero = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    acc_i, acc_f, acc_g, acc_o = _gate_matmul(
        zero, zero, zero, zero, h_in_ptr, H, 1, rows, active,
        w_hh_ptr, stride_wn, stride_wk, cols, col_mask, H, H, BLOCK_K, DOT_PRECISION,
    )

    positions = _step_positions(step, lengths, REVERSE)
    xg_rows = xg_ptr + _row_offsets(positions, rows, B, 4 * H)[:, None] + cols[None, :]
    pre_i = acc_i + tl.load(xg_rows, mask=active_mask, other=0.0).to(tl.float32)
    pre_f = acc_f + tl.load(xg_rows + H, mask=active_mask, other=0.0).to(tl.float32)
    pre_g = acc_g + tl.load(xg_rows + 2 * H, mask=active_mask, other=0.0).to(tl.float32)
    pre_o = acc_o + tl.load(xg_rows + 3 * H, mask=active_mask, other=0.0).to(tl.float32)

    state = rows[:, None] * H + cols[None, :]
    h_prev = tl.load(h_in_ptr + state, mask=mask, other=0.0)
    c_prev = tl.load(c_ptr + state, mask=mask, other=0.0)
    i, f, g, o, c, tanh_c, h = _cell_update(pre_i, pre_f, pre_g, pre_o, c_prev)
    tl.store(h_out_ptr + state, tl.where(active[:, None], h, h_prev), mask=mask)
    tl.store(c_ptr + state, c, mask=active_mask)

    out_positions = tl.where(active, positions, step)
    out_h = _row_offsets(out_positions, rows, B, H)
    _store_rows(y_ptr, out_h, cols, h, active, mask)
    if SAVE:
        out_4h = _row_offsets(out_positions, rows, B, 4 * H)
        _store_rows(gates_ptr, out_4h, cols, i, active, mask)
        _store_rows(gates_ptr, out_4h, cols + H, f, active, mask)
        _store_rows(gates_ptr, out_4h, cols + 2 * H, g, active, mask)
        _store_rows(gates_ptr, out_4h, cols + 3 * H, o, active, mask)
        _store_rows(cprev_ptr, out_h, cols, c_prev, active, mask)
        _store_rows(tanh_c_ptr, out_h, cols, tanh_c, active, mask)
        _store_rows(hprev_ptr, out_h, cols, h_prev, active, mask)


@triton.jit
def _bwd_tile(
    grad_y_ptr, w_hh_ptr, stride_wn, stride_wk,
    lengths,  # [BLOCK_B] int64, the rows' lengths (0 past B)
    gates_ptr, cprev_ptr, tanh_c_ptr,
    grad_hn_ptr,  # [B, H] gradient of h_n (read only)
    dc_ptr,  # [B, H] fp32 gradient w.r.t. c, updated in place
    dg_ptr,  # [T, B, 4H] fp32 dG by time position: step + 1 read, step written
    step, rows, row_mask, cols, B, H,
    REVERSE: tl.constexpr,
    HAS_PREV: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """Reverse-time step ``step`` for the [BLOCK_B, BLOCK_H] tile (rows, cols).

    The gradient reaching h is dG(step + 1) @ w_hh for rows active at
    step + 1 (all 4H columns of those rows, read back from ``dg``) and the
    gradient of h_n for the others (a row's h is held after its last step);
    then the pre-activation gate gradients of this step go to ``dg`` and the
    gradient carried into c to ``dc``.
    """
    col_mask = cols < H
    mask = row_mask[:, None] & col_mask[None, :]
    active = row_mask & (step < lengths)
    active_mask = active[:, None] & col_mask[None, :]

    state = rows[:, None] * H + cols[None, :]
    dh = tl.load(grad_hn_ptr + state, mask=mask, other=0.0).to(tl.float32)
    if HAS_PREV:
        was_active = row_mask & (step + 1 < lengths)
        prev_rows = _row_offsets(_step_positions(step + 1, lengths, REVERSE), rows, B, 4 * H)
        dh_rec = _matmul_rows(
            tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32), dg_ptr, prev_rows, was_active,
            w_hh_ptr, stride_wn, stride_wk, cols, col_mask, 4 * H, BLOCK_K, DOT_PRECISION,
        )
        dh = tl.where(was_active[:, None], dh_rec, dh)
    dc = tl.load(dc_ptr + state, mask=mask, other=0.0)

    positions = _step_positions(step, lengths, REVERSE)
    at_h = _row_offsets(positions, rows, B, H)[:, None] + cols[None, :]
    at_4h = _row_offsets(positions, rows, B, 4 * H)[:, None] + cols[None, :]
    dh += tl.load(grad_y_ptr + at_h, mask=active_mask, other=0.0).to(tl.float32)
    i = tl.load(gates_ptr + at_4h, mask=active_mask, other=0.0)
    f = tl.load(gates_ptr + at_4h + H, mask=active_mask, other=0.0)
    g = tl.load(gates_ptr + at_4h + 2 * H, mask=active_mask, other=0.0)
    o = tl.load(gates_ptr + at_4h + 3 * H, mask=active_mask, other=0.0)
    c_prev = tl.load(cprev_ptr + at_h, mask=active_mask, other=0.0)
    tanh_c = tl.load(tanh_c_ptr + at_h, mask=active_mask, other=0.0)

    dc += dh * o * (1.0 - tanh_c * tanh_c)
    d_i = dc * g * i * (1.0 - i)
    d_f = dc * c_prev * f * (1.0 - f)
    d_g = dc * i * (1.0 - g * g)
    d_o = dh * tanh_c * o * (1.0 - o)
    tl.store(dc_ptr + state, dc * f, mask=active_mask)

    out_4h = _row_offsets(tl.where(active, positions, step), rows, B, 4 * H)
    _store_rows(dg_ptr, out_4h, cols, d_i, active, mask)
    _store_rows(dg_ptr, out_4h, cols + H, d_f, active, mask)
    _store_rows(dg_ptr, out_4h, cols + 2 * H, d_g, active, mask)
    _store_rows(dg_ptr, out_4h, cols + 3 * H, d_o, active, mask)


# --------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------


@triton.jit(do_not_specialize=["T"])
def _lstm_fwd_seq_kernel(
    xg_ptr,  # [T, B, 4H] input projection x @ w_ih^T (+ bias)
    w_hh_ptr, stride_wn, stride_wk,  # w_hh: [4H, H]
    lengths_ptr,  # [B] int64
    h_ptr,  # [2, B, H] fp32: h0 in [0]; h after step s in [(s + 1) % 2]
    c_ptr,  # [B, H] fp32, c0 in, c_n out
    y_ptr,  # [T, B, H] output, input dtype
    gates_ptr,  # [T, B, 4H] fp32, post-activation (i, f, g, o), written if SAVE
    cprev_ptr,  # [T, B, H] fp32, c before each step, written if SAVE
    tanh_c_ptr,  # [T, B, H] fp32, tanh(c) after each step, written if SAVE
    hprev_ptr,  # [T, B, H] input dtype, h before each step, written if SAVE
    T, B, H,
    REVERSE: tl.constexpr,
    SAVE: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """The whole sequence for one block of BLOCK_B rows: the time loop runs inside the kernel.

    The program owns its rows' state and all 4H gate columns, so no program
    ever waits on another; within a step it walks the hidden units in tiles
    of BLOCK_H (w_hh streamed from L2), and a block barrier makes a step's
    h visible to all the program's threads before the next step reads it.
    """
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    row_mask = rows < B
    lengths = tl.load(lengths_ptr + rows, mask=row_mask, other=0)
    for step in range(0, T):
        h_in_ptr = h_ptr + (step % 2) * B * H
        h_out_ptr = h_ptr + ((step + 1) % 2) * B * H
        for n0 in range(0, H, BLOCK_H):
            _fwd_tile(
                xg_ptr, w_hh_ptr, stride_wn, stride_wk, lengths, h_in_ptr, h_out_ptr, c_ptr,
                y_ptr, gates_ptr, cprev_ptr, tanh_c_ptr, hprev_ptr,
                step, rows, row_mask, n0 + tl.arange(0, BLOCK_H), B, H,
                REVERSE, SAVE, BLOCK_B, BLOCK_H, BLOCK_K, DOT_PRECISION,
            )
        tl.debug_barrier()


@triton.jit(do_not_specialize=["T"])
def _lstm_bwd_seq_kernel(
    grad_y_ptr,  # [T, B, H] gradient of y
    w_hh_ptr, stride_wn, stride_wk,  # w_hh: [4H, H]
    lengths_ptr,  # [B] int64
    gates_ptr,  # [T, B, 4H] fp32, saved post-activation (i, f, g, o)
    cprev_ptr,  # [T, B, H] fp32, saved c before each step
    tanh_c_ptr,  # [T, B, H] fp32, saved tanh(c) after each step
    grad_hn_ptr,  # [B, H] gradient of h_n
    dc_ptr,  # [B, H] fp32: gradient of c_n in, of c0 out
    dg_ptr,  # [T, B, 4H] fp32 out: pre-activation gate gradients by time position
    dh0_ptr,  # [B, H] fp32 out: gradient of h0
    T, B, H,
    REVERSE: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """The whole reverse-time loop for one block of BLOCK_B rows (see ``_lstm_fwd_seq_kernel``).

    Every step reads back the dG rows it wrote one step later in time (after
    a block barrier); at step T - 1 no row was active at T, so the carried
    product is masked out. Finally dh0 = dG(step 0) @ w_hh (every row is
    active at step 0).
    """
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    row_mask = rows < B
    lengths = tl.load(lengths_ptr + rows, mask=row_mask, other=0)
    for k in range(0, T):
        step = T - 1 - k
        for n0 in range(0, H, BLOCK_H):
            _bwd_tile(
                grad_y_ptr, w_hh_ptr, stride_wn, stride_wk, lengths, gates_ptr, cprev_ptr, tanh_c_ptr,
                grad_hn_ptr, dc_ptr, dg_ptr,
                step, rows, row_mask, n0 + tl.arange(0, BLOCK_H), B, H,
                REVERSE, True, BLOCK_B, BLOCK_H, BLOCK_K, DOT_PRECISION,
            )
        tl.debug_barrier()
    first_rows = _row_offsets(_step_positions(0, lengths, REVERSE), rows, B, 4 * H)
    for n0 in range(0, H, BLOCK_H):
        cols = n0 + tl.arange(0, BLOCK_H)
        col_mask = cols < H
        dh0 = _matmul_rows(
            tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32), dg_ptr, first_rows, row_mask,
            w_hh_ptr, stride_wn, stride_wk, cols, col_mask, 4 * H, BLOCK_K, DOT_PRECISION,
        )
        tl.store(dh0_ptr + rows[:, None] * H + cols[None, :], dh0, mask=row_mask[:, None] & col_mask[None, :])


@triton.jit(do_not_specialize=["step"])
def _lstm_fwd_step_kernel(
    xg_ptr,  # [T, B, 4H] input projection x @ w_ih^T (+ bias)
    w_hh_ptr, stride_wn, stride_wk,  # w_hh: [4H, H]
    lengths_ptr,  # [B] int64
    h_in_ptr,  # [B, H] fp32, state before this step (read only)
    h_out_ptr,  # [B, H] fp32, state after this step
    c_ptr,  # [B, H] fp32, cell state, updated in place
    y_ptr,  # [T, B, H] output, input dtype
    gates_ptr,  # [T, B, 4H] fp32, post-activation (i, f, g, o), written if SAVE
    cprev_ptr,  # [T, B, H] fp32, c before the step, written if SAVE
    tanh_c_ptr,  # [T, B, H] fp32, tanh(c) after the step, written if SAVE
    hprev_ptr,  # [T, B, H] input dtype, h before the step, written if SAVE
    step, B, H,
    REVERSE: tl.constexpr,
    SAVE: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """One LSTM time step for a [BLOCK_B, BLOCK_H] tile (H too large for the sequence kernel)."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    row_mask = rows < B
    lengths = tl.load(lengths_ptr + rows, mask=row_mask, other=0)
    _fwd_tile(
        xg_ptr, w_hh_ptr, stride_wn, stride_wk, lengths, h_in_ptr, h_out_ptr, c_ptr,
        y_ptr, gates_ptr, cprev_ptr, tanh_c_ptr, hprev_ptr,
        step, rows, row_mask, tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H), B, H,
        REVERSE, SAVE, BLOCK_B, BLOCK_H, BLOCK_K, DOT_PRECISION,
    )


@triton.jit(do_not_specialize=["step"])
def _lstm_bwd_step_kernel(
    grad_y_ptr,  # [T, B, H] gradient of y
    w_hh_ptr, stride_wn, stride_wk,  # w_hh: [4H, H]
    lengths_ptr,  # [B] int64
    gates_ptr,  # [T, B, 4H] fp32, saved post-activation (i, f, g, o)
    cprev_ptr,  # [T, B, H] fp32, saved c before each step
    tanh_c_ptr,  # [T, B, H] fp32, saved tanh(c) after each step
    grad_hn_ptr,  # [B, H] gradient of h_n
    dc_ptr,  # [B, H] fp32, gradient w.r.t. c, updated in place
    dg_ptr,  # [T, B, 4H] fp32, dG by time position (step + 1 written by the previous launch)
    step, B, H,
    REVERSE: tl.constexpr,
    HAS_PREV: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """One reverse-time LSTM step for a [BLOCK_B, BLOCK_H] tile (H too large for the sequence kernel)."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    row_mask = rows < B
    lengths = tl.load(lengths_ptr + rows, mask=row_mask, other=0)
    _bwd_tile(
        grad_y_ptr, w_hh_ptr, stride_wn, stride_wk, lengths, gates_ptr, cprev_ptr, tanh_c_ptr,
        grad_hn_ptr, dc_ptr, dg_ptr,
        step, rows, row_mask, tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H), B, H,
        REVERSE, HAS_PREV, BLOCK_B, BLOCK_H, BLOCK_K, DOT_PRECISION,
    )


@triton.jit
def _lstm_cell_kernel(
    x_ptr, stride_xb, stride_xe,  # x: [B, E]
    h_ptr, stride_hb, stride_hh,  # h: [B, H]
    c_ptr, stride_cb, stride_ch,  # c: [B, H]
    w_ih_ptr, stride_wib, stride_wie,  # w_ih: [4H, E]
    w_hh_ptr, stride_whb, stride_whh,  # w_hh: [4H, H]
    bias_ptr,  # [4H], read if HAS_BIAS
    h_out_ptr,  # [B, H] contiguous
    c_out_ptr,  # [B, H] contiguous
    B, E, H,
    HAS_BIAS: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_KE: tl.constexpr,
    BLOCK_KH: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """One fused LSTM cell step: [x, h] @ [w_ih; w_hh]^T + bias, then the pointwise cell."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    row_mask = rows < B
    col_mask = cols < H
    mask = row_mask[:, None] & col_mask[None, :]

    zero = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    acc_i, acc_f, acc_g, acc_o = _gate_matmul(
        zero, zero, zero, zero, x_ptr, stride_xb, stride_xe, rows, row_mask,
        w_ih_ptr, stride_wib, stride_wie, cols, col_mask, E, H, BLOCK_KE, DOT_PRECISION,
    )
    acc_i, acc_f, acc_g, acc_o = _gate_matmul(
        acc_i, acc_f, acc_g, acc_o, h_ptr, stride_hb, stride_hh, rows, row_mask,
        w_hh_ptr, stride_whb, stride_whh, cols, col_mask, H, H, BLOCK_KH, DOT_PRECISION,
    )
    if HAS_BIAS:
        acc_i += tl.load(bias_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)[None, :]
        acc_f += tl.load(bias_ptr + H + cols, mask=col_mask, other=0.0).to(tl.float32)[None, :]
        acc_g += tl.load(bias_ptr + 2 * H + cols, mask=col_mask, other=0.0).to(tl.float32)[None, :]
        acc_o += tl.load(bias_ptr + 3 * H + cols, mask=col_mask, other=0.0).to(tl.float32)[None, :]

    c_prev = _load_tile(c_ptr, rows, cols, stride_cb, stride_ch, row_mask, col_mask).to(tl.float32)
    _, _, _, _, c, _, h = _cell_update(acc_i, acc_f, acc_g, acc_o, c_prev)
    state = rows[:, None] * H + cols[None, :]
    tl.store(h_out_ptr + state, h.to(h_out_ptr.dtype.element_ty), mask=mask)
    tl.store(c_out_ptr + state, c.to(c_out_ptr.dtype.element_ty), mask=mask)


# --------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------


def _input_projection(x, w_ih, bias):
    """x: [T, B, E], w_ih: [4H, E], bias: [4H] or None -> [T, B, 4H] in x.dtype (one GEMM)."""
    T, B, E = x.shape
    x2d = x.reshape(T * B, E)
    xg = torch.mm(x2d, w_ih.t()) if bias is None else torch.addmm(bias, x2d, w_ih.t())
    return xg.view(T, B, -1)


def _saved_buffers(T, B, H, dtype, device, need_grad):
    """Buffers saved for backward, or four empty tensors when ``need_grad`` is False.

    Returns (gates [T,B,4H] fp32, cprev [T,B,H] fp32, tanh_c [T,B,H] fp32, hprev [T,B,H] dtype).
    """
    shapes = ((T, B, 4 * H), (T, B, H), (T, B, H), (T, B, H)) if need_grad else ((0,),) * 4
    dtypes = (torch.float32, torch.float32, torch.float32, dtype)
    return tuple(torch.empty(shape, dtype=dt, device=device) for shape, dt in zip(shapes, dtypes))


def _fp32_copy(t):
    """Fresh contiguous fp32 copy of ``t`` (used for mutable recurrent state)."""
    out = torch.empty(t.shape, dtype=torch.float32, device=t.device)
    out.copy_(t)
    return out


def uses_sequence_kernels(hidden: int) -> bool:
    """Whether an LSTM of this hidden size runs in one launch per sequence (forward and backward)."""
    return hidden <= SEQUENCE_MAX_HIDDEN


def lstm_fwd(x, h0, c0, w_ih, w_hh, bias, lengths, reverse: bool, need_grad: bool):
    """Forward pass of one LSTM layer in one direction.

    One GEMM for the input projection, then the recurrence: one launch of
    ``_lstm_fwd_seq_kernel`` for the whole sequence when H <= 256
    (:func:`uses_sequence_kernels`), else one ``_lstm_fwd_step_kernel``
    launch per time step.

    Args:
        x: [T, B, E] time-major input.
        h0, c0: [B, H] initial state.
        w_ih: [4H, E]; w_hh: [4H, H]; bias: [4H] (b_ih + b_hh) or None.
        lengths: [B] int64 on x.device, each in 1..T.
        reverse: process each sequence from its last valid position backwards.
        need_grad: also return the activations needed by :func:`lstm_bwd`.

    Returns:
        (y [T,B,H], h_n [B,H], c_n [B,H], gates [T,B,4H] fp32, cprev [T,B,H] fp32,
        tanh_c [T,B,H] fp32, hprev [T,B,H]); y is zero at padded positions and the
        last four are empty when ``need_grad`` is False.
    """
    T, B, _ = x.shape
    H = w_hh.shape[1]
    dtype, device = x.dtype, x.device
    xg = _input_projection(x.contiguous(), w_ih, bias)
    y = torch.empty(T, B, H, dtype=dtype, device=device)
    gates, cprev, tanh_c, hprev = _saved_buffers(T, B, H, dtype, device, need_grad)
    h = torch.empty(2, B, H, dtype=torch.float32, device=device)  # h after step s in h[(s + 1) % 2]
    h[0].copy_(h0)
    c = _fp32_copy(c0)
    common = (xg, w_hh, w_hh.stride(0), w_hh.stride(1), lengths)
    saved = (y, gates, cprev, tanh_c, hprev)
    if uses_sequence_kernels(H):
        block_b, block_h, block_k = _fwd_blocks(H)
        _launch(
            _lstm_fwd_seq_kernel, (triton.cdiv(B, block_b),),
            *common, h, c, *saved, T, B, H,
            REVERSE=reverse, SAVE=need_grad, BLOCK_B=block_b, BLOCK_H=block_h, BLOCK_K=block_k,
            DOT_PRECISION=_DOT_PRECISION,
        )
    else:
        block_b, block_h, block_k = _fwd_blocks(H)
        for step in range(T):
            _launch(
                _lstm_fwd_step_kernel, (triton.cdiv(B, block_b), triton.cdiv(H, block_h)),
                *common, h[step % 2], h[(step + 1) % 2], c, *saved, step, B, H,
                REVERSE=reverse, SAVE=need_grad, BLOCK_B=block_b, BLOCK_H=block_h, BLOCK_K=block_k,
                DOT_PRECISION=_DOT_PRECISION,
            )
    h_n = h[T % 2].to(dtype)
    c_n = c.to(dtype)
    return y, h_n, c_n, gates, cprev, tanh_c, hprev


def _initial_state_grad(dg, w_hh, lengths, reverse):
    """dh0 [B, H] fp32 = dG(step 0) @ w_hh: every row is active at step 0 (position 0, or its last when reversed)."""
    B = dg.shape[1]
    first = lengths - 1 if reverse else torch.zeros_like(lengths)
    return torch.mm(dg[first, torch.arange(B, device=dg.device)], w_hh.float())


def _recurrent_gate_grads(grad_y, grad_hn, grad_cn, w_hh, lengths, gates, cprev, tanh_c, reverse):
    """Reverse-time loop. Returns (dG [T,B,4H] fp32, dh0 [B,H] fp32, dc0 [B,H] fp32)."""
    T, B, H = grad_y.shape
    device = grad_y.device
    dg = torch.empty(T, B, 4 * H, dtype=torch.float32, device=device)
    dc = _fp32_copy(grad_cn)
    common = (grad_y, w_hh, w_hh.stride(0), w_hh.stride(1), lengths, gates, cprev, tanh_c, grad_hn.contiguous(), dc, dg)
    if uses_sequence_kernels(H):
        dh0 = torch.empty(B, H, dtype=torch.float32, device=device)
        block_b, block_h, block_k = _bwd_blocks(B, H, sequence=True)
        _launch(
            _lstm_bwd_seq_kernel, (triton.cdiv(B, block_b),),
            *common, dh0, T, B, H,
            REVERSE=reverse, BLOCK_B=block_b, BLOCK_H=block_h, BLOCK_K=block_k, DOT_PRECISION=_DOT_PRECISION,
        )
        return dg, dh0, dc
    block_b, block_h, block_k = _bwd_blocks(B, H, sequence=False)
    for k, step in enumerate(range(T - 1, -1, -1)):
        _launch(
            _lstm_bwd_step_kernel, (triton.cdiv(B, block_b), triton.cdiv(H, block_h)),
            *common, step, B, H,
            REVERSE=reverse, HAS_PREV=k > 0, BLOCK_B=block_b, BLOCK_H=block_h, BLOCK_K=block_k,
            DOT_PRECISION=_DOT_PRECISION,
        )
    return dg, _initial_state_grad(dg, w_hh, lengths, reverse), dc


def lstm_bwd(
    grad_y, grad_hn, grad_cn, x, w_ih, w_hh, lengths, gates, cprev, tanh_c, hprev, reverse: bool
):
    """Backward pass matching :func:`lstm_fwd` (called with ``need_grad=True``).

    Args:
        grad_y: [T, B, H]; grad_hn, grad_cn: [B, H] (zeros when undefined).
        x: [T, B, E]; w_ih: [4H, E]; w_hh: [4H, H]; lengths: [B] int64.
        gates, cprev, tanh_c, hprev: the buffers saved by :func:`lstm_fwd`.
        reverse: direction used in the forward pass.

    Returns:
        (dx [T,B,E], dh0 [B,H], dc0 [B,H], dw_ih [4H,E], dw_hh [4H,H], db [4H]),
        all in x.dtype.
    """
    T, B, E = x.shape
    H = w_hh.shape[1]
    dtype = x.dtype
    dg, dh0, dc0 = _recurrent_gate_grads(
        grad_y.contiguous(), grad_hn, grad_cn, w_hh, lengths, gates, cprev, tanh_c, reverse
    )
    dg2d = dg.view(T * B, 4 * H)
    dg_lp = dg2d.to(dtype)
    dx = torch.mm(dg_lp, w_ih).view(T, B, E)
    dw_ih = torch.mm(dg_lp.t(), x.reshape(T * B, E))
    dw_hh = torch.mm(dg_lp.t(), hprev.reshape(T * B, H))
    db = dg2d.sum(0).to(dtype)
    return dx, dh0.to(dtype), dc0.to(dtype), dw_ih, dw_hh, db


def lstm_cell(x, h, c, w_ih, w_hh, bias):
    """Single fused LSTM cell step (no autograd).

    Args:
        x: [B, E]; h, c: [B, H]; w_ih: [4H, E]; w_hh: [4H, H]; bias: [4H] or None.

    Returns:
        (h_new [B, H], c_new [B, H]) in x.dtype.
    """
    B, E = x.shape
    H = w_hh.shape[1]
    block_b, block_h, block_ke, block_kh = _cell_blocks(H, E)
    h_new = torch.empty(B, H, dtype=x.dtype, device=x.device)
    c_new = torch.empty(B, H, dtype=x.dtype, device=x.device)
    _launch(
        _lstm_cell_kernel, (triton.cdiv(B, block_b), triton.cdiv(H, block_h)),
        x, x.stride(0), x.stride(1),
        h, h.stride(0), h.stride(1),
        c, c.stride(0), c.stride(1),
        w_ih, w_ih.stride(0), w_ih.stride(1),
        w_hh, w_hh.stride(0), w_hh.stride(1),
        w_ih if bias is None else bias,
        h_new, c_new,
        B, E, H,
        HAS_BIAS=bias is not None,
        BLOCK_B=block_b, BLOCK_H=block_h, BLOCK_KE=block_ke, BLOCK_KH=block_kh,
        DOT_PRECISION=_DOT_PRECISION,
    )
    return h_new, c_new
