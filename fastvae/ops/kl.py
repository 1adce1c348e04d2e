"""Gaussian KL divergence and the SLCVAE latent loss, fused.

Public ops (all ``[B, Z]`` tensors, 2-D, one floating dtype):

* ``gaussian_kl(mu_q, logvar_q, mu_p=None, logvar_p=None, free_bits=0.0) -> kl [B]``
* ``kl_label_loss(mu_q, logvar_q, mu_p, logvar_p, z, z_label, kl_weight, label_weight,
  free_bits=0.0) -> (total [B], kl [B], label [B])``

and their plain-PyTorch twins ``gaussian_kl_ref`` / ``kl_label_loss_ref`` with
the same signatures. The two share the KL math: per dimension

    KL_bj = 0.5 * (logvar_p - logvar_q + (e^logvar_q + (mu_q - mu_p)^2) / e^logvar_p - 1)

(``mu_p = logvar_p = 0`` for the standard-normal prior, ``mu_p=logvar_p=None``),
summed over ``j``. Free bits (Kingma et al. 2016), batch-averaged: a latent
dimension ``j`` whose batch mean ``mean_b KL_bj`` is below ``free_bits``
contributes the constant ``free_bits`` to every example (zero gradient), so
``kl.mean() == sum_j max(mean_b KL_bj, free_bits)``; ``free_bits=0`` disables it.

Backends: CPU float32/float64 run the C++ ops ``torch.ops.fastvae.gaussian_kl``
/ ``kl_label_loss``, CUDA fp32/fp16/bf16 the Triton ops ``fastvae::*_triton``
(fp32 math); anything else runs the reference.
"""

from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch

from fastvae.ops import _checks, _dispatch

Tensor = torch.Tensor

# ----------------------------------------------------------------- reference


def _kl_terms_ref(mu_q, logvar_q, mu_p, logvar_p):
    """KL_bj [B, Z] of each example and latent dimension."""
    if mu_p is None:
        return 0.5 * (torch.exp(logvar_q) + mu_q * mu_q - 1.0 - logvar_q)
    return 0.5 * (logvar_p - logvar_q + (torch.exp(logvar_q) + (mu_q - mu_p) ** 2) / torch.exp(logvar_p) - 1.0)


def gaussian_kl_ref(
    mu_q: Tensor,
    logvar_q: Tensor,
    mu_p: Optional[Tensor] = None,
    logvar_p: Optional[Tensor] = None,
    free_bits: float = 0.0,
) -> Tensor:
    """Plain-PyTorch :func:`gaussian_kl` (free_bits is checked as there; the tensors are not)."""
    free_bits = _checks.nonneg_number("free_bits", free_bits)
    terms = _kl_terms_ref(mu_q, logvar_q, mu_p, logvar_p)
    if free_bits > 0:
        keep = ~(terms.detach().mean(0) < free_bits)  # [Z]
        terms = torch.where(keep, terms, torch.full_like(terms, free_bits))
    return terms.sum(-1)


def kl_label_loss_ref(
    mu_q: Tensor,
    logvar_q: Tensor,
    mu_p: Optional[Tensor],
    logvar_p: Optional[Tensor],
    z: Tensor,
    z_label: Tensor,
    kl_weight: float,
    label_weight: float,
    free_bits: float = 0.0,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Plain-PyTorch :func:`kl_label_loss`; ``z_label`` is detached (a fixed target).

    kl_weight, label_weight and free_bits are checked as in :func:`kl_label_loss`.
    """
    kl_weight = _checks.number("kl_weight", kl_weight)
    label_weight = _checks.number("label_weight", label_weight)
    kl = gaussian_kl_ref(mu_q, logvar_q, mu_p, logvar_p, free_bits)
    label = ((z - z_label.detach()) ** 2).sum(-1)
    return kl_weight * kl + label_weight * label, kl, label


# ----------------------------------------------------- autograd and fake impls
# The C++ ops' autograd is registered in C++ (csrc/latent_autograd.cpp, same
# math); these Python functions are the autograd of the Triton ops.


def _kl_setup_context(ctx, inputs, output):
    mu_q, logvar_q, mu_p, logvar_p, _free_bits = inputs
    _kl, active = output
    ctx.save_for_backward(mu_q, logvar_q, mu_p, logvar_p, active)
    ctx.mark_non_differentiable(active)


def _make_kl_backward(bwd_op):
    def backward(ctx, grad_kl, _grad_active):
        _checks.first_order_only("gaussian_kl")
        mu_q, logvar_q, mu_p, logvar_p, active = ctx.saved_tensors
        d_mq, d_lq, d_mp, d_lp = bwd_op(grad_kl, mu_q, logvar_q, mu_p, logvar_p, active)
        if mu_p is None:
            d_mp = d_lp = None
        return d_mq, d_lq, d_mp, d_lp, None

    return backward


def _kll_setup_context(ctx, inputs, output):
    mu_q, logvar_q, mu_p, logvar_p, z, z_label, kl_weight, label_weight, _free_bits = inputs
    active = output[3]
    ctx.save_for_backward(mu_q, logvar_q, mu_p, logvar_p, z, z_label, active)
    ctx.weights = (kl_weight, label_weight)
    ctx.mark_non_differentiable(active)


def _make_kll_backward(bwd_op):
    def backward(ctx, grad_total, grad_kl, grad_label, _grad_active):
        _checks.first_order_only("kl_label_loss")
        mu_q, logvar_q, mu_p, logvar_p, z, z_label, active = ctx.saved_tensors
        d_mq, d_lq, d_mp, d_lp, d_z = bwd_op(
            grad_total, grad_kl, grad_label, mu_q, logvar_q, mu_p, logvar_p, z, z_label, *ctx.weights, active
        )
        if mu_p is None:
            d_mp = d_lp = None
        # z_label is the labeling network's fixed target: no gradient.
        return d_mq, d_lq, d_mp, d_lp, d_z, None, None, None, None

    return backward


def _fake_active(mu_q, free_bits):
    return mu_q.new_empty((mu_q.shape[1] if free_bits > 0 else 0,), dtype=torch.bool)


def _fake_kl(mu_q, logvar_q, mu_p, logvar_p, free_bits):
    return mu_q.new_empty(mu_q.shape[:1]), _fake_active(mu_q, free_bits)


def _fake_prior_grads(mu_q, mu_p):
    if mu_p is None:
        return mu_q.new_empty(0), mu_q.new_empty(0)
    return mu_q.new_empty(mu_q.shape), mu_q.new_empty(mu_q.shape)


def _fake_kl_bwd(grad_kl, mu_q, logvar_q, mu_p, logvar_p, active):
    return (mu_q.new_empty(mu_q.shape), mu_q.new_empty(mu_q.shape), *_fake_prior_grads(mu_q, mu_p))


def _fake_kll(mu_q, logvar_q, mu_p, logvar_p, z, z_label, kl_weight, label_weight, free_bits):
    rows = mu_q.shape[:1]
    return mu_q.new_empty(rows), mu_q.new_empty(rows), mu_q.new_empty(rows), _fake_active(mu_q, free_bits)


def _fake_kll_bwd(
    grad_total, grad_kl, grad_label, mu_q, logvar_q, mu_p, logvar_p, z, z_label, kl_weight, label_weight, active
):
    full = mu_q.shape
    return (mu_q.new_empty(full), mu_q.new_empty(full), *_fake_prior_grads(mu_q, mu_p), mu_q.new_empty(full))


@dataclass(frozen=True)
class _Backend:
    kl: Callable
    kl_bwd: Callable
    kll: Callable
    kll_bwd: Callable


def _register_cpu() -> _Backend:
    """Fake kernels of the C++ ops (schemas, CPU kernels and autograd come from fastvae._C)."""
    ops = torch.ops.fastvae
    for name, fake in (
        ("gaussian_kl", _fake_kl),
        ("gaussian_kl_bwd", _fake_kl_bwd),
        ("kl_label_loss", _fake_kll),
        ("kl_label_loss_bwd", _fake_kll_bwd),
    ):
        torch.library.register_fake(f"fastvae::{name}")(fake)
    # Autograd is registered in C++ (csrc/latent_autograd.cpp): a Python
    # autograd node costs more than these kernels.
    return _Backend(
        ops.gaussian_kl.default, ops.gaussian_kl_bwd.default, ops.kl_label_loss.default, ops.kl_label_loss_bwd.default
    )


def _register_triton() -> _Backend:
    """Triton ops (``fastvae::gaussian_kl_triton``, ``fastvae::kl_label_loss_triton`` + backwards)."""
    from torch.library import triton_op

    from fastvae.kernels import latent as klatent

    @triton_op("fastvae::gaussian_kl_triton", mutates_args=())
    def gaussian_kl_triton(
        mu_q: Tensor, logvar_q: Tensor, mu_p: Optional[Tensor], logvar_p: Optional[Tensor], free_bits: float
    ) -> tuple[Tensor, Tensor]:
        return klatent.gaussian_kl(mu_q, logvar_q, mu_p, logvar_p, free_bits)

    @triton_op("fastvae::gaussian_kl_bwd_triton", mutates_args=())
    def gaussian_kl_bwd_triton(
        grad_kl: Tensor, mu_q: Tensor, logvar_q: Tensor, mu_p: Optional[Tensor], logvar_p: Optional[Tensor],
        active: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return klatent.gaussian_kl_bwd(grad_kl, mu_q, logvar_q, mu_p, logvar_p, active)

    @triton_op("fastvae::kl_label_loss_triton", mutates_args=())
    def kl_label_loss_triton(
        mu_q: Tensor, logvar_q: Tensor, mu_p: Optional[Tensor], logvar_p: Optional[Tensor], z: Tensor,
        z_label: Tensor, kl_weight: float, label_weight: float, free_bits: float,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return klatent.kl_label_loss(mu_q, logvar_q, mu_p, logvar_p, z, z_label, kl_weight, label_weight, free_bits)

    @triton_op("fastvae::kl_label_loss_bwd_triton", mutates_args=())
    def kl_label_loss_bwd_triton(
        grad_total: Optional[Tensor], grad_kl: Optional[Tensor], grad_label: Optional[Tensor],
        mu_q: Tensor, logvar_q: Tensor, mu_p: Optional[Tensor], logvar_p: Optional[Tensor],
        z: Tensor, z_label: Tensor, kl_weight: float, label_weight: float, active: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        return klatent.kl_label_loss_bwd(
            grad_total, grad_kl, grad_label, mu_q, logvar_q, mu_p, logvar_p, z, z_label, kl_weight, label_weight,
            active,
        )

    gaussian_kl_triton.register_autograd(_make_kl_backward(gaussian_kl_bwd_triton), setup_context=_kl_setup_context)
    kl_label_loss_triton.register_autograd(
        _make_kll_backward(kl_label_loss_bwd_triton), setup_context=_kll_setup_context
    )
    return _Backend(gaussian_kl_triton, gaussian_kl_bwd_triton, kl_label_loss_triton, kl_label_loss_bwd_triton)


# -------------------------------------------------------------- public ops


BACKENDS = _dispatch.Backends(_register_cpu, _register_triton)


def _check_kl_args(mu_q, logvar_q, mu_p, logvar_p, **more):
    """Shapes/dtypes/devices of the [B, Z] arguments (``more``: further [B, Z] tensors, e.g. z)."""
    _checks.tensor("mu_q", mu_q, ndim=2)
    shape = tuple(mu_q.shape)
    others = {"logvar_q": logvar_q, "mu_p": mu_p, "logvar_p": logvar_p, **more}
    for name, t in others.items():
        if t is not None:
            _checks.shape(name, _checks.tensor(name, t, ndim=2), shape)
    if (mu_p is None) != (logvar_p is None):
        raise ValueError("give both mu_p and logvar_p, or neither (standard normal prior)")
    _checks.same_device("mu_q", mu_q, **others)
    _checks.same_dtype("mu_q", mu_q, **others)
    _checks.finite(mu_q=mu_q, **others)


def _backend(mu_q, op_name, *others):
    """("cpu", backend), ("triton", backend) or (None, None) for these arguments.

    On the C++ path nothing else is checked in Python: the kernels check shapes,
    dtypes, finiteness and the floats themselves (named errors), so only mixed
    devices (which the dispatcher would report as a missing kernel) keep a
    call off it. Everything else gets the full Python checks.
    """
    if not isinstance(mu_q, Tensor):
        return None, None
    kind = _dispatch.fused_backend(mu_q, op_name)
    if kind == "cpu":
        device = mu_q.device
        for t in others:
            if t is not None and (not isinstance(t, Tensor) or t.device != device):
                return None, None
        return kind, BACKENDS.cpu
    if kind == "triton":
        return kind, BACKENDS.triton()
    return None, None


def _required(**tensors):
    """The arguments that cannot be None are tensors (named TypeError before any kernel sees them)."""
    for name, t in tensors.items():
        if not isinstance(t, Tensor):
            _checks.tensor(name, t)


def _float(name, value, nonneg=False):
    """A Python float as is (the C++ kernels check its range); anything else checked here."""
    if type(value) is float:
        return value
    return _checks.nonneg_number(name, value) if nonneg else _checks.number(name, value)


def gaussian_kl(
    mu_q: Tensor,
    logvar_q: Tensor,
    mu_p: Optional[Tensor] = None,
    logvar_p: Optional[Tensor] = None,
    free_bits: float = 0.0,
) -> Tensor:
    """Per-example ``KL(N(mu_q, e^logvar_q) || N(mu_p, e^logvar_p))`` summed over Z, fused.

    Args:
        mu_q, logvar_q: ``[B, Z]`` posterior mean and log-variance (float).
        mu_p, logvar_p: ``[B, Z]`` prior mean and log-variance, or both None
            for the standard normal prior ``N(0, I)``.
        free_bits: float >= 0; batch-averaged free bits per latent dimension
            (see the module docstring). 0 disables it.

    Returns:
        ``kl [B]`` in the inputs' dtype.

    Raises:
        TypeError: naming the argument, for non-tensors and integer dtypes.
        ValueError: naming the argument, for mismatched shapes/dtypes/devices,
            NaN/inf and negative free_bits.
    """
    free_bits = _float("free_bits", free_bits, nonneg=True)
    _required(mu_q=mu_q, logvar_q=logvar_q)
    kind, backend = _backend(mu_q, "gaussian_kl", logvar_q, mu_p, logvar_p)
    if kind != "cpu":
        _checks.nonneg_number("free_bits", free_bits)
        _check_kl_args(mu_q, logvar_q, mu_p, logvar_p)
    if backend is None:
        return gaussian_kl_ref(mu_q, logvar_q, mu_p, logvar_p, free_bits)
    kl, _active = backend.kl(mu_q, logvar_q, mu_p, logvar_p, free_bits)
    return kl


def kl_label_loss(
    mu_q: Tensor,
    logvar_q: Tensor,
    mu_p: Optional[Tensor],
    logvar_p: Optional[Tensor],
    z: Tensor,
    z_label: Tensor,
    kl_weight: float,
    label_weight: float,
    free_bits: float = 0.0,
) -> Tuple[Tensor, Tensor, Tensor]:
    """The latent part of the SLCVAE objective in one kernel.

    ``total = kl_weight * KL(q || p) + label_weight * ||z - z_label||^2`` per
    example, with the two unweighted components for logging.

    Args:
        mu_q, logvar_q: ``[B, Z]`` posterior mean and log-variance.
        mu_p, logvar_p: ``[B, Z]`` prior mean and log-variance (both None:
            standard normal prior).
        z: ``[B, Z]`` the sampled latent (e.g. from :func:`reparameterize`).
        z_label: ``[B, Z]`` the labeling network's latent, a fixed target: it
            never receives a gradient, even if it requires grad.
        kl_weight, label_weight: Python floats.
        free_bits: float >= 0, as in :func:`gaussian_kl`.

    Returns:
        ``(total [B], kl [B], label [B])``; gradients flow to mu_q, logvar_q,
        mu_p, logvar_p and z.
    """
    kl_weight = _float("kl_weight", kl_weight)
    label_weight = _float("label_weight", label_weight)
    free_bits = _float("free_bits", free_bits, nonneg=True)
    _required(mu_q=mu_q, logvar_q=logvar_q, z=z, z_label=z_label)
    kind, backend = _backend(mu_q, "kl_label_loss", logvar_q, mu_p, logvar_p, z, z_label)
    if kind != "cpu":
        _checks.number("kl_weight", kl_weight)
        _checks.number("label_weight", label_weight)
        _checks.nonneg_number("free_bits", free_bits)
        _check_kl_args(mu_q, logvar_q, mu_p, logvar_p, z=z, z_label=z_label)
    if backend is None:
        return kl_label_loss_ref(mu_q, logvar_q, mu_p, logvar_p, z, z_label, kl_weight, label_weight, free_bits)
    total, kl, label, _active = backend.kll(
        mu_q, logvar_q, mu_p, logvar_p, z, z_label, kl_weight, label_weight, free_bits
    )
    return total, kl, label
