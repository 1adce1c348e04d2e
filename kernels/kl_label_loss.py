"""Triton launchers of kl_label_loss: ``kl_weight * KL(q || p) + label_weight * ||z - z_label||^2`` per example.

The kernels are the KL row kernels shared with gaussian_kl
(``kernels/_kl.py``), with the label term in the same pass. Semantics,
shapes and dtypes: ``csrc/kl_label_loss_ops.cpp``.
"""

from fastvae.kernels._kl import contiguous, kl_grads, kl_rows


def kl_label_loss(mu_q, logvar_q, mu_p, logvar_p, z, z_label, kl_weight, label_weight, free_bits):
    """(total, kl, label [B], active bool [Z] or [0])."""
    mu_q, logvar_q, mu_p, logvar_p, z, z_label = contiguous(mu_q, logvar_q, mu_p, logvar_p, z, z_label)
    return kl_rows(mu_q, logvar_q, mu_p, logvar_p, z, z_label, kl_weight, label_weight, free_bits)


def kl_label_loss_bwd(grad_total, grad_kl, grad_label, mu_q, logvar_q, mu_p, logvar_p, z, z_label,
                      kl_weight, label_weight, active):
    """d mu_q, d logvar_q, d mu_p, d logvar_p, d z ([B, Z]; prior grads [0] without a prior).

    ``grad_total``, ``grad_kl``, ``grad_label`` ([B]) may be None (zero).
    """
    zeros = mu_q.new_zeros(mu_q.shape[0]) if None in (grad_total, grad_kl, grad_label) else None
    grad_total, grad_kl, grad_label = (zeros if g is None else g for g in (grad_total, grad_kl, grad_label))
    tensors = contiguous(grad_total, grad_kl, grad_label, mu_q, logvar_q, mu_p, logvar_p, z, z_label)
    return kl_grads(*tensors, kl_weight, label_weight, active)
