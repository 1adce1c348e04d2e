"""Triton launchers of gaussian_kl: per-example ``KL(q || p)`` summed over Z.

The kernels are the KL row kernels shared with kl_label_loss
(``kernels/_kl.py``), run without the label term. Semantics, shapes and
dtypes: ``csrc/gaussian_kl_ops.cpp``.
"""

from fastvae.kernels._kl import contiguous, kl_grads, kl_rows


def gaussian_kl(mu_q, logvar_q, mu_p, logvar_p, free_bits):
    """(kl [B], active bool [Z] or [0])."""
    mu_q, logvar_q, mu_p, logvar_p = contiguous(mu_q, logvar_q, mu_p, logvar_p)
    _, kl, _, active = kl_rows(mu_q, logvar_q, mu_p, logvar_p, None, None, 1.0, 0.0, free_bits)
    return kl, active


def gaussian_kl_bwd(grad_kl, mu_q, logvar_q, mu_p, logvar_p, active):
    """d mu_q, d logvar_q, d mu_p, d logvar_p ([B, Z]; prior grads [0] without a prior)."""
    grad_kl, mu_q, logvar_q, mu_p, logvar_p = contiguous(grad_kl, mu_q, logvar_q, mu_p, logvar_p)
    d_mq, d_lq, d_mp, d_lp, _ = kl_grads(None, grad_kl, None, mu_q, logvar_q, mu_p, logvar_p, None, None, 1.0, 0.0,
                                         active)
    return d_mq, d_lq, d_mp, d_lp
