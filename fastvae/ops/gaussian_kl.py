"""Gaussian KL divergence, fused: ``KL(N(mu_q, e^logvar_q) || N(mu_p, e^logvar_p))`` per example.

Public op ``gaussian_kl(mu_q, logvar_q, mu_p=None, logvar_p=None, free_bits=0.0) -> kl [B]``
and its plain-PyTorch twin ``gaussian_kl_ref`` with the same signature (all
``[B, Z]`` tensors, 2-D, one floating dtype). Per dimension

    KL_bj = 0.5 * (logvar_p - logvar_q + (e^logvar_q + (mu_q - mu_p)^2) / e^logvar_p - 1)

(``mu_p = logvar_p = 0`` for the standard-normal prior, ``mu_p=logvar_p=None``),
summed over ``j``. Free bits (Kingma et al. 2016), batch-averaged: a latent
dimension ``j`` whose batch mean ``mean_b KL_bj`` is below ``free_bits``
contributes the constant ``free_bits`` to every example (zero gradient), so
``kl.mean() == sum_j max(mean_b KL_bj, free_bits)``; ``free_bits=0`` disables it.
``kl_label_loss`` (``fastvae/ops/kl_label_loss.py``) shares this KL.

Kernels: CPU float32/float64 run the C++ op ``torch.ops.fastvae.gaussian_kl``,
CUDA fp32/fp16/bf16 the Triton op ``fastvae::gaussian_kl_triton`` (fp32 math);
anything else runs the reference.
"""

from functools import partial
from typing import Optional

import torch

from fastvae.ops import _checks, _dispatch, _kl

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


# ----------------------------------------------------- autograd and fake impls
# The C++ op's autograd is registered in C++ (csrc/gaussian_kl_ops.cpp, same
# math); these Python functions are the autograd of the Triton op.


def _setup_context(ctx, inputs, output):
    mu_q, logvar_q, mu_p, logvar_p, _free_bits = inputs
    _kl_out, active = output
    ctx.save_for_backward(mu_q, logvar_q, mu_p, logvar_p, active)
    ctx.mark_non_differentiable(active)


def _make_backward(bwd_op):
    def backward(ctx, grad_kl, _grad_active):
        _checks.first_order_only("gaussian_kl")
        mu_q, logvar_q, mu_p, logvar_p, active = ctx.saved_tensors
        d_mq, d_lq, d_mp, d_lp = bwd_op(grad_kl, mu_q, logvar_q, mu_p, logvar_p, active)
        if mu_p is None:
            d_mp = d_lp = None
        return d_mq, d_lq, d_mp, d_lp, None

    return backward


def _fake_fwd(mu_q, logvar_q, mu_p, logvar_p, free_bits):
    return mu_q.new_empty(mu_q.shape[:1]), _kl.fake_active(mu_q, free_bits)


def _fake_bwd(grad_kl, mu_q, logvar_q, mu_p, logvar_p, active):
    return (mu_q.new_empty(mu_q.shape), mu_q.new_empty(mu_q.shape), *_kl.fake_prior_grads(mu_q, mu_p))


def _register_triton() -> _dispatch.FusedOps:
    """Triton ops ``fastvae::gaussian_kl_triton`` and ``..._bwd_triton``, registered on first use."""
    from torch.library import triton_op

    from fastvae.kernels import gaussian_kl as kernels

    @triton_op("fastvae::gaussian_kl_triton", mutates_args=())
    def gaussian_kl_triton(
        mu_q: Tensor, logvar_q: Tensor, mu_p: Optional[Tensor], logvar_p: Optional[Tensor], free_bits: float
    ) -> tuple[Tensor, Tensor]:
        return kernels.gaussian_kl(mu_q, logvar_q, mu_p, logvar_p, free_bits)

    @triton_op("fastvae::gaussian_kl_bwd_triton", mutates_args=())
    def gaussian_kl_bwd_triton(
        grad_kl: Tensor, mu_q: Tensor, logvar_q: Tensor, mu_p: Optional[Tensor], logvar_p: Optional[Tensor],
        active: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return kernels.gaussian_kl_bwd(grad_kl, mu_q, logvar_q, mu_p, logvar_p, active)

    gaussian_kl_triton.register_autograd(_make_backward(gaussian_kl_bwd_triton), setup_context=_setup_context)
    return _dispatch.FusedOps(gaussian_kl_triton, gaussian_kl_bwd_triton)


# -------------------------------------------------------------- public op


# C++: schemas, CPU kernels and autograd from fastvae._C (csrc/gaussian_kl_ops.cpp); here: their fake kernels.
KERNELS = _dispatch.Kernels(
    partial(_dispatch.native_cpu_ops, "gaussian_kl", _fake_fwd, _fake_bwd), _register_triton
)


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
    free_bits = _kl.as_float("free_bits", free_bits, nonneg=True)
    _kl.required(mu_q=mu_q, logvar_q=logvar_q)
    kind, kernels = _kl.kernels(KERNELS, mu_q, "gaussian_kl", logvar_q, mu_p, logvar_p)
    if kind != "cpu":
        _checks.nonneg_number("free_bits", free_bits)
        _kl.check_kl_args(mu_q, logvar_q, mu_p, logvar_p)
    if kernels is None:
        return gaussian_kl_ref(mu_q, logvar_q, mu_p, logvar_p, free_bits)
    kl, _active = kernels.fwd(mu_q, logvar_q, mu_p, logvar_p, free_bits)
    return kl
