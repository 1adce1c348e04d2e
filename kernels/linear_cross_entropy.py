"""Triton kernels for the fused linear + cross-entropy (Liger-style chunking).

    loss_n = logsumexp(l_n) - l_n[target_n],   l = hidden @ weight^T + bias

hidden [N, H], weight [V, H], bias [V] or None, target [N] int64 (each in
[0, V) or ``ignore_index``). The [N, V] logits are never formed: rows of
``hidden`` go in chunks; the launcher computes a chunk's logits [C, V] with
one GEMM (torch.mm, in the input dtype), a Triton kernel (one program per
row) makes an online log-sum-exp pass over the row, writes the loss and the
log-sum-exp, and -- when gradients are wanted -- overwrites the logits in
place with ``d_logits = (softmax - onehot(target)) * scale``; two more GEMMs
turn them into the chunk's rows of d_hidden and its contribution to d_weight.

* :func:`linear_ce_fwd` -- the loss; for "mean"/"sum" also the gradients of
  the loss (upstream gradient 1), computed during the forward.
* :func:`linear_ce_bwd` -- gradients from a per-row upstream gradient by
  recomputing each chunk's logits from the saved log-sum-exp (reduction
  "none", or whenever the forward did not compute them).

The softmax math is fp32 whatever the input dtype; loss and log-sum-exp are
kept in fp32, d_weight/d_bias are accumulated over chunks in fp32. The
launchers only allocate with torch and launch through ``wrap_triton`` (see
``_launch.py``), so they can back ``torch.library.triton_op`` ops.
"""

import torch
import triton
import triton.language as tl

from fastvae.kernels._launch import launch as _launch

_MAX_VOCAB_BLOCK = 4096
_REDUCTIONS = ("none", "mean", "sum")


def _vocab_block(V: int) -> int:
    """Columns of a row's logits loaded per step of the row loop (a power of two)."""
    return min(triton.next_power_of_2(V), _MAX_VOCAB_BLOCK)


def _chunk_rows(N: int, H: int, V: int) -> int:
    """Rows per chunk: the chunk's logits [C, V] about as large as hidden [N, H] (Liger's rule)."""
    growth = triton.cdiv(V, max(H, 1))
    return max(1, min(N, triton.next_power_of_2(triton.cdiv(N, growth))))


@triton.jit
def _softmax_grad_row(row_ptr, target, lse, g, V, BLOCK_V: tl.constexpr):
    """A row of logits [V] overwritten in place with d_logits = (exp(l - lse) - onehot(target)) * g."""
    for v0 in range(0, V, BLOCK_V):
        cols = v0 + tl.arange(0, BLOCK_V)
        mask = cols < V
        x = tl.load(row_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        d = tl.exp(x - lse) * g
        d = tl.where(cols == target, d - g, d)
        tl.store(row_ptr + cols, d.to(row_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _ce_fwd_kernel(
    logits_ptr, stride_row,  # [C, V] chunk logits; overwritten with d_logits if COMPUTE_GRAD
    target_ptr,  # [C] int64
    loss_ptr,  # [C] fp32, 0 at ignored rows
    lse_ptr,  # [C] fp32, log-sum-exp of each row
    scale_ptr,  # [] fp32: gradient scale of a non-ignored row (1/n_valid or 1)
    V, ignore_index,
    COMPUTE_GRAD: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    """One row: online max / sum-exp over V, loss, log-sum-exp, then d_logits in place."""
    row = tl.program_id(0).to(tl.int64)
    row_ptr = logits_ptr + row * stride_row
    target = tl.load(target_ptr + row)
    valid = target != ignore_index

    m = -float("inf")
    s = 0.0
    for v0 in range(0, V, BLOCK_V):
        cols = v0 + tl.arange(0, BLOCK_V)
        x = tl.load(row_ptr + cols, mask=cols < V, other=-float("inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(x, 0))
        s = s * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new), 0)
        m = m_new
    lse = m + tl.log(s)
    x_target = tl.load(row_ptr + target, mask=valid, other=0.0).to(tl.float32)
    tl.store(loss_ptr + row, tl.where(valid, lse - x_target, 0.0))
    tl.store(lse_ptr + row, lse)

    if COMPUTE_GRAD:
        _softmax_grad_row(row_ptr, target, lse, tl.where(valid, tl.load(scale_ptr), 0.0), V, BLOCK_V)


@triton.jit
def _ce_bwd_kernel(
    logits_ptr, stride_row,  # [C, V] chunk logits, overwritten with d_logits
    target_ptr,  # [C] int64
    lse_ptr,  # [C] fp32, saved log-sum-exp
    grad_ptr,  # [C] fp32, upstream gradient of each row's loss
    V, ignore_index,
    BLOCK_V: tl.constexpr,
):
    """One row: d_logits = (exp(l - lse) - onehot(target)) * grad (0 at an ignored row)."""
    row = tl.program_id(0).to(tl.int64)
    row_ptr = logits_ptr + row * stride_row
    target = tl.load(target_ptr + row)
    lse = tl.load(lse_ptr + row)
    g = tl.where(target != ignore_index, tl.load(grad_ptr + row), 0.0)
    _softmax_grad_row(row_ptr, target, lse, g, V, BLOCK_V)


# --------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------


def _chunk_logits(h_chunk, weight, bias):
    """[C, V] logits of a chunk in the input dtype (contiguous)."""
    if bias is None:
        return torch.mm(h_chunk, weight.t())
    return torch.addmm(bias, h_chunk, weight.t())


def _chunks(hidden, weight, bias):
    """``(rows, hidden[rows], the chunk's logits [C, V])`` for each chunk of rows, in order."""
    N, H = hidden.shape
    C = _chunk_rows(N, H, weight.shape[0])
    for r0 in range(0, N, C):
        rows = slice(r0, min(r0 + C, N))
        h_chunk = hidden[rows]
        yield rows, h_chunk, _chunk_logits(h_chunk, weight, bias)


def _grad_buffers(N, H, V, hidden, has_bias, grad_mask):
    """(d_hidden [N,H] input dtype, d_weight [V,H] fp32, d_bias [V] fp32), None where not wanted."""
    want_dh, want_dw, want_db = grad_mask
    dev = hidden.device
    dh = torch.empty(N, H, dtype=hidden.dtype, device=dev) if want_dh else None
    dw = torch.zeros(V, H, dtype=torch.float32, device=dev) if want_dw else None
    db = torch.zeros(V, dtype=torch.float32, device=dev) if want_db and has_bias else None
    return dh, dw, db


def _accumulate_grads(d_logits, h_chunk, weight, rows, dh, dw, db):
    """Chunk gradients: dh[rows] = d_logits @ weight, dw += d_logits^T @ h_chunk, db += column sums."""
    if dh is not None:
        dh[rows] = torch.mm(d_logits, weight)
    if dw is not None:
        dw.add_(torch.mm(d_logits.t(), h_chunk))
    if db is not None:
        db.add_(d_logits.sum(0, dtype=torch.float32))


def _finish_grads(dh, dw, db, hidden):
    """The three gradients in the input dtype, empty [0] tensors where not computed."""
    return tuple(hidden.new_empty(0) if g is None else g.to(hidden.dtype) for g in (dh, dw, db))


def _valid_count(target, ignore_index):
    """Number of non-ignored targets, at least 1, as an fp32 tensor on target's device (no sync)."""
    return (target != ignore_index).sum().clamp(min=1).to(torch.float32)


def linear_ce_fwd(hidden, weight, bias, target, ignore_index: int, reduction: str, grad_mask):
    """Loss of the fused linear + cross-entropy, and for "mean"/"sum" its gradients.

    Args:
        hidden: [N, H]; weight: [V, H]; bias: [V] or None; target: [N] int64
            (validated by the caller: each in [0, V) or ``ignore_index``).
        reduction: "none", "mean" or "sum".
        grad_mask: (d_hidden, d_weight, d_bias) to compute; all false for "none".

    Returns:
        (loss, lse [N] fp32, d_hidden [N, H], d_weight [V, H], d_bias [V]):
        loss is [N] for "none" (0 at ignored rows) and a scalar otherwise, in
        hidden's dtype ("mean" of no valid target is 0); each gradient is the
        gradient of the loss (upstream 1) in hidden's dtype, or empty [0] if
        not requested.
    """
    N, H = hidden.shape
    V = weight.shape[0]
    grad_mask = tuple(bool(g) for g in grad_mask)
    compute_grad = any(grad_mask)
    if reduction == "none" and compute_grad:
        raise ValueError("linear_ce_fwd: reduction 'none' computes its gradients in linear_ce_bwd")
    dev = hidden.device
    loss_rows = torch.empty(N, dtype=torch.float32, device=dev)
    lse = torch.empty(N, dtype=torch.float32, device=dev)
    n_valid = _valid_count(target, ignore_index)
    scale = (1.0 / n_valid) if reduction == "mean" else torch.ones((), dtype=torch.float32, device=dev)
    dh, dw, db = _grad_buffers(N, H, V, hidden, bias is not None, grad_mask)
    for rows, h_chunk, logits in _chunks(hidden, weight, bias):
        _launch(
            _ce_fwd_kernel, (logits.shape[0],),
            logits, logits.stride(0), target[rows], loss_rows[rows], lse[rows], scale,
            V, ignore_index,
            COMPUTE_GRAD=compute_grad, BLOCK_V=_vocab_block(V),
        )
        if compute_grad:
            _accumulate_grads(logits, h_chunk, weight, rows, dh, dw, db)
    if reduction == "none":
        loss = loss_rows.to(hidden.dtype)
    else:
        total = loss_rows.sum()
        loss = (total / n_valid if reduction == "mean" else total).to(hidden.dtype)
    return (loss, lse, *_finish_grads(dh, dw, db, hidden))


def linear_ce_bwd(grad_loss, hidden, weight, bias, target, lse, ignore_index: int, reduction: str, grad_mask):
    """Gradients by recomputation from the saved log-sum-exp.

    Args:
        grad_loss: upstream gradient, [N] for "none", [] for "mean"/"sum".
        lse: [N] fp32 from :func:`linear_ce_fwd`; other arguments as there.

    Returns:
        (d_hidden [N, H], d_weight [V, H], d_bias [V]) in hidden's dtype, each
        empty [0] unless requested by ``grad_mask`` (d_bias also needs a bias).
    """
    N, H = hidden.shape
    V = weight.shape[0]
    grad_mask = tuple(bool(g) for g in grad_mask)
    dh, dw, db = _grad_buffers(N, H, V, hidden, bias is not None, grad_mask)
    if dh is None and dw is None and db is None:
        return _finish_grads(dh, dw, db, hidden)
    g = grad_loss.to(torch.float32).expand(N).contiguous()
    if reduction == "mean":
        g = g / _valid_count(target, ignore_index)
    lse = lse.to(torch.float32).contiguous()
    for rows, h_chunk, logits in _chunks(hidden, weight, bias):
        _launch(
            _ce_bwd_kernel, (logits.shape[0],),
            logits, logits.stride(0), target[rows], lse[rows], g[rows],
            V, ignore_index,
            BLOCK_V=_vocab_block(V),
        )
        _accumulate_grads(logits, h_chunk, weight, rows, dh, dw, db)
    return _finish_grads(dh, dw, db, hidden)
