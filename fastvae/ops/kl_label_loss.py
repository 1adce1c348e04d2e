"""The latent part of the SLCVAE loss, fused: ``kl_weight * KL(q || p) + label_weight * ||z - z_label||^2``.

Public op ``kl_label_loss(mu_q, logvar_q, mu_p, logvar_p, z, z_label, kl_weight,
label_weight, free_bits=0.0) -> (total [B], kl [B], label [B])`` and its
plain-PyTorch twin ``kl_label_loss_ref`` with the same signature (all
``[B, Z]`` tensors, 2-D, one floating dtype). The KL and its free bits are
:func:`fastvae.ops.gaussian_kl`'s; the kernels compute the label term in the
same pass over the rows.

Kernels: CPU float32/float64 run the C++ op ``torch.ops.fastvae.kl_label_loss``,
CUDA fp32/fp16/bf16 the Triton op ``fastvae::kl_label_loss_triton`` (fp32
math); anything else runs the reference.
"""

from functools import partial
from typing import Optional, Tuple

import torch

from fastvae.ops import _checks, _dispatch, _kl
from fastvae.ops.gaussian_kl import gaussian_kl_ref

Tensor = torch.Tensor

# ----------------------------------------------------------------- reference


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
# The C++ op's autograd is registered in C++ (csrc/kl_label_loss_ops.cpp, same
# math); these Python functions are the autograd of the Triton op.


def _setup_context(ctx, inputs, output):
    mu_q, logvar_q, mu_p, logvar_p, z, z_label, kl_weight, label_weight, _free_bits = inputs
    active = output[3]
    ctx.save_for_backward(mu_q, logvar_q, mu_p, logvar_p, z, z_label, active)
    ctx.weights = (kl_weight, label_weight)
    ctx.mark_non_differentiable(active)


def _make_backward(bwd_op):
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


def _fake_fwd(mu_q, logvar_q, mu_p, logvar_p, z, z_label, kl_weight, label_weight, free_bits):
    rows = mu_q.shape[:1]
    return mu_q.new_empty(rows), mu_q.new_empty(rows), mu_q.new_empty(rows), _kl.fake_active(mu_q, free_bits)


def _fake_bwd(
    grad_total, grad_kl, grad_label, mu_q, logvar_q, mu_p, logvar_p, z, z_label, kl_weight, label_weight, active
):
    full = mu_q.shape
    return (mu_q.new_empty(full), mu_q.new_empty(full), *_kl.fake_prior_grads(mu_q, mu_p), mu_q.new_empty(full))


def _register_triton() -> _dispatch.FusedOps:
    """Triton ops ``fastvae::kl_label_loss_triton`` and ``..._bwd_triton``, registered on first use."""
    from torch.library import triton_op

    from fastvae.kernels import kl_label_loss as kernels

    @triton_op("fastvae::kl_label_loss_triton", mutates_args=())
    def kl_label_loss_triton(
        mu_q: Tensor, logvar_q: Tensor, mu_p: Optional[Tensor], logvar_p: Optional[Tensor], z: Tensor,
        z_label: Tensor, kl_weight: float, label_weight: float, free_bits: float,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return kernels.kl_label_loss(mu_q, logvar_q, mu_p, logvar_p, z, z_label, kl_weight, label_weight, free_bits)

    @triton_op("fastvae::kl_label_loss_bwd_triton", mutates_args=())
    def kl_label_loss_bwd_triton(
        grad_total: Optional[Tensor], grad_kl: Optional[Tensor], grad_label: Optional[Tensor],
        mu_q: Tensor, logvar_q: Tensor, mu_p: Optional[Tensor], logvar_p: Optional[Tensor],
        z: Tensor, z_label: Tensor, kl_weight: float, label_weight: float, active: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        return kernels.kl_label_loss_bwd(
            grad_total, grad_kl, grad_label, mu_q, logvar_q, mu_p, logvar_p, z, z_label, kl_weight, label_weight,
            active,
        )

    kl_label_loss_triton.register_autograd(_make_backward(kl_label_loss_bwd_triton), setup_context=_setup_context)
    return _dispatch.FusedOps(kl_label_loss_triton, kl_label_loss_bwd_triton)


# -------------------------------------------------------------- public op


# C++: schemas, CPU kernels and autograd from fastvae._C (csrc/kl_label_loss_ops.cpp); here: their fake kernels.
KERNELS = _dispatch.Kernels(
    partial(_dispatch.native_cpu_ops, "kl_label_loss", _fake_fwd, _fake_bwd), _register_triton
)


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
    kl_weight = _kl.as_float("kl_weight", kl_weight)
    label_weight = _kl.as_float("label_weight", label_weight)
    free_bits = _kl.as_float("free_bits", free_bits, nonneg=True)
    _kl.required(mu_q=mu_q, logvar_q=logvar_q, z=z, z_label=z_label)
    kind, kernels = _kl.kernels(KERNELS, mu_q, "kl_label_loss", logvar_q, mu_p, logvar_p, z, z_label)
    if kind != "cpu":
        _checks.number("kl_weight", kl_weight)
        _checks.number("label_weight", label_weight)
        _checks.nonneg_number("free_bits", free_bits)
        _kl.check_kl_args(mu_q, logvar_q, mu_p, logvar_p, z=z, z_label=z_label)
    if kernels is None:
        return kl_label_loss_ref(mu_q, logvar_q, mu_p, logvar_p, z, z_label, kl_weight, label_weight, free_bits)
    total, kl, label, _active = kernels.fwd(
        mu_q, logvar_q, mu_p, logvar_p, z, z_label, kl_weight, label_weight, free_bits
    )
    return total, kl, label
