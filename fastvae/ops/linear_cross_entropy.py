"""Fused vocabulary projection + cross-entropy that never forms the [N, V] logits.

Public op::

    linear_cross_entropy(hidden, weight, bias, target, ignore_index=-100, reduction="mean") -> loss

computes ``F.cross_entropy(F.linear(hidden, weight, bias), target, ...)`` (the
decoder's output layer and loss of the text VAEs, and the CVAE bag-of-words
loss) in chunks of rows: a chunk's logits live only in a reusable buffer, and
for "mean"/"sum" the gradients are computed during the forward (the backward
then only scales them by the upstream gradient). "none" keeps each row's
log-sum-exp and recomputes the chunks' logits in the backward, since its
upstream gradient differs per row. Its plain-PyTorch twin
``linear_cross_entropy_ref`` has the same signature and semantics.

Kernels: on CPU the C++ kernels of ``fastvae._C`` (float32/float64;
``fastvae::linear_ce_fwd`` / ``linear_ce_bwd``), on CUDA the Triton kernels of
``fastvae.kernels.linear_cross_entropy`` (``fastvae::linear_ce_{fwd,bwd}_triton``,
float32/float16/bfloat16); other dtypes/devices, or a missing build, run the
reference. Not twice differentiable.
"""

from typing import Optional

import torch
import torch.nn.functional as F

from fastvae.ops import _checks, _dispatch

Tensor = torch.Tensor
REDUCTIONS = ("none", "mean", "sum")

# ----------------------------------------------------------------- reference


def _reference(hidden, weight, bias, target, ignore_index, reduction):
    logits = F.linear(hidden, weight, bias)
    if reduction == "mean":
        # F.cross_entropy's "mean" is NaN when every target is ignored; ours is 0.
        total = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="sum")
        return total / (target != ignore_index).sum().clamp(min=1)
    return F.cross_entropy(logits, target, ignore_index=ignore_index, reduction=reduction)


def linear_cross_entropy_ref(
    hidden: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    target: Tensor,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    """Plain-PyTorch twin of :func:`linear_cross_entropy` (materialises the logits)."""
    target = _check_args(hidden, weight, bias, target, ignore_index, reduction)
    return _reference(hidden, weight, bias, target, ignore_index, reduction)


# ----------------------------------------------------- autograd and fake impls


def _setup_context(ctx, inputs, output):
    hidden, weight, bias, target, ignore_index, reduction, grad_mask = inputs
    _loss, lse, d_hidden, d_weight, d_bias = output
    ctx.save_for_backward(hidden, weight, bias, target, lse)
    ctx.ignore_index = ignore_index
    ctx.reduction = reduction
    ctx.fwd_mask = tuple(bool(m) for m in grad_mask)
    # The gradients the forward computed are handed to the backward once and
    # scaled there in place -- no copy of d_weight [V, H]. They are kept out of
    # save_for_backward so that nothing else refers to them; a second backward
    # (retain_graph=True) finds them gone and recomputes from lse.
    ctx.fwd_grads = (d_hidden, d_weight, d_bias) if any(ctx.fwd_mask) else None
    ctx.mark_non_differentiable(lse, d_hidden, d_weight, d_bias)


def _make_backward(bwd_op):
    def backward(ctx, grad_loss, *_unused):
        _checks.first_order_only("linear_cross_entropy")
        hidden, weight, bias, target, lse = ctx.saved_tensors
        want = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], bias is not None and ctx.needs_input_grad[2])
        fwd_grads, ctx.fwd_grads = ctx.fwd_grads, None
        if fwd_grads is not None and all(have or not w for have, w in zip(ctx.fwd_mask, want)):
            grads = [(_scale_owned(g, grad_loss) if w else None) for g, w in zip(fwd_grads, want)]
        else:
            computed = bwd_op(grad_loss, hidden, weight, bias, target, lse, ctx.ignore_index, ctx.reduction, list(want))
            grads = [g if w else None for g, w in zip(computed, want)]
        return (*grads, None, None, None, None)

    return backward


def _scale_owned(grad, grad_loss):
    """``grad * grad_loss``, in place on the eager tensor the forward handed over (no second
    d_weight); out of place when traced (fake / functional tensors under torch.compile or
    opcheck), where an in-place update of a forward output breaks the graph partitioner."""
    if type(grad) is torch.Tensor and type(grad_loss) is torch.Tensor:
        return grad.mul_(grad_loss)
    return grad * grad_loss


def _fake_fwd(hidden, weight, bias, target, ignore_index, reduction, grad_mask):
    N, H = hidden.shape
    V = weight.shape[0]
    loss = hidden.new_empty(N) if reduction == "none" else hidden.new_empty(())
    return (loss, hidden.new_empty(N), *_fake_grads(N, H, V, hidden, bias, grad_mask))


def _fake_bwd(grad_loss, hidden, weight, bias, target, lse, ignore_index, reduction, grad_mask):
    return _fake_grads(hidden.shape[0], hidden.shape[1], weight.shape[0], hidden, bias, grad_mask)


def _fake_grads(N, H, V, hidden, bias, grad_mask):
    shapes = ((N, H), (V, H), (V,))
    has = (True, True, bias is not None)
    return tuple(hidden.new_empty(s if m and h else (0,)) for s, m, h in zip(shapes, grad_mask, has))



def _register_cpu() -> _dispatch.FusedOps:
    """Fake kernels and autograd of the C++ ops (schemas and CPU kernels come from fastvae._C)."""
    ops = torch.ops.fastvae
    _dispatch.register_cpu_fake("linear_ce_fwd", _fake_fwd)
    _dispatch.register_cpu_fake("linear_ce_bwd", _fake_bwd)
    torch.library.register_autograd(
        "fastvae::linear_ce_fwd", _make_backward(ops.linear_ce_bwd.default), setup_context=_setup_context
    )
    return _dispatch.FusedOps(ops.linear_ce_fwd.default, ops.linear_ce_bwd.default)


def _register_triton() -> _dispatch.FusedOps:
    """Triton ops ``fastvae::linear_ce_{fwd,bwd}_triton`` (torch.library.triton_op) with their autograd."""
    from torch.library import triton_op

    from fastvae.kernels import linear_cross_entropy as kernels

    @triton_op("fastvae::linear_ce_fwd_triton", mutates_args=())
    def linear_ce_fwd_triton(
        hidden: Tensor,
        weight: Tensor,
        bias: Optional[Tensor],
        target: Tensor,
        ignore_index: int,
        reduction: str,
        grad_mask: list[bool],
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        loss, lse, d_hidden, d_weight, d_bias = kernels.linear_ce_fwd(
            hidden, weight, bias, target, ignore_index, reduction, grad_mask
        )
        # the schema's lse is 0 at ignored rows (the CPU kernels never compute their logits)
        return loss, lse.masked_fill(target == ignore_index, 0), d_hidden, d_weight, d_bias

    @triton_op("fastvae::linear_ce_bwd_triton", mutates_args=())
    def linear_ce_bwd_triton(
        grad_loss: Tensor,
        hidden: Tensor,
        weight: Tensor,
        bias: Optional[Tensor],
        target: Tensor,
        lse: Tensor,
        ignore_index: int,
        reduction: str,
        grad_mask: list[bool],
    ) -> tuple[Tensor, Tensor, Tensor]:
        return kernels.linear_ce_bwd(grad_loss, hidden, weight, bias, target, lse, ignore_index, reduction, grad_mask)

    linear_ce_fwd_triton.register_autograd(_make_backward(linear_ce_bwd_triton), setup_context=_setup_context)
    return _dispatch.FusedOps(linear_ce_fwd_triton, linear_ce_bwd_triton)


KERNELS = _dispatch.Kernels(_register_cpu, _register_triton)


def kernels_for(hidden: Tensor) -> Optional[_dispatch.FusedOps]:
    """The fused kernels for ``hidden``'s device and dtype, or None for the reference."""
    return KERNELS.for_input(hidden, "linear_cross_entropy")


# -------------------------------------------------------------- public op


def _check_args(hidden, weight, bias, target, ignore_index, reduction):
    """Named checks; returns ``target`` as int64."""
    _checks.tensor("hidden", hidden, ndim=2)
    _checks.tensor("weight", weight, ndim=2)
    N, H = hidden.shape
    V = weight.shape[0]
    _checks.shape("weight", weight, (None, H))
    if V == 0:
        raise ValueError("weight must have at least one row (class), got shape (0, H)")
    if bias is not None:
        _checks.shape("bias", _checks.tensor("bias", bias, ndim=1), (V,))
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor of class indices, got {type(target).__name__}")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(f"target must be an integer tensor of class indices, got dtype {target.dtype}")
    _checks.shape("target", target, (N,))
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise TypeError(f"ignore_index must be an int, got {type(ignore_index).__name__}")
    if not -(2**63) <= ignore_index < 2**63:
        raise ValueError(f"ignore_index must fit in int64 (the dtype of target), got {ignore_index}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    _checks.same_device("hidden", hidden, weight=weight, bias=bias, target=target)
    _checks.same_dtype("hidden", hidden, weight=weight, bias=bias)
    target = target.long()
    if N > 0 and not torch.compiler.is_compiling():
        bad = (target != ignore_index) & ((target < 0) | (target >= V))
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise ValueError(
                f"target must hold class indices in [0, {V}) or ignore_index ({ignore_index}), "
                f"got target[{i}] = {int(target[i])}"
            )
    return target


def linear_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    target: Tensor,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    """Cross-entropy of the logits ``hidden @ weight.T + bias`` without forming them.

    Args:
        hidden: ``[N, H]`` float (any strides), e.g. decoder outputs ``[B*T, H]``.
        weight: ``[V, H]`` output projection; bias: ``[V]`` or None.
        target: ``[N]`` integer class indices, each in ``[0, V)`` or equal to
            ``ignore_index``.
        ignore_index: target value whose row contributes no loss and no
            gradient (e.g. the padding index).
        reduction: ``"mean"`` (sum over non-ignored rows / their number; 0
            when all are ignored -- ``F.cross_entropy`` gives NaN there),
            ``"sum"``, or ``"none"`` (per-row loss ``[N]``, 0 at ignored rows:
            per-token NLL for perplexity and per-sentence NLL).

    Returns:
        The loss in hidden's dtype: a scalar, or ``[N]`` for ``"none"``.

    Non-finite values in hidden/weight/bias are not checked: they propagate
    (a NaN in a row of hidden makes that row's loss and gradients NaN).
    """
    target = _check_args(hidden, weight, bias, target, ignore_index, reduction)
    kernels = kernels_for(hidden)
    if kernels is None:
        return _reference(hidden, weight, bias, target, ignore_index, reduction)
    grad = torch.is_grad_enabled() and reduction != "none"
    grad_mask = [grad and t is not None and t.requires_grad for t in (hidden, weight, bias)]
    loss, *_ = kernels.fwd(hidden, weight, bias, target, ignore_index, reduction, grad_mask)
    return loss
