"""What the two KL ops share (``gaussian_kl`` and ``kl_label_loss``): argument checks, dispatch, fake-kernel parts.

Both take the posterior ``mu_q, logvar_q`` and the prior ``mu_p, logvar_p``
(``[B, Z]`` tensors, 2-D, one floating dtype; both prior tensors None for the
standard normal prior) and the same float arguments; on the C++ path the
kernels check them (named errors), elsewhere these functions do.
"""

import torch

from fastvae.ops import _checks, _dispatch

Tensor = torch.Tensor


def check_kl_args(mu_q, logvar_q, mu_p, logvar_p, **more):
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


def kernels(kernel_sets, mu_q, op_name, *others):
    """("cpu", kernels), ("triton", kernels) or (None, None) for these arguments of the op with ``kernel_sets``.

    On the C++ path nothing else is checked in Python: the kernels check shapes,
    dtypes, finiteness and the floats themselves (named errors), so only mixed
    devices (which the dispatcher would report as a missing kernel) keep a
    call off it. Everything else gets the full Python checks.
    """
    if not isinstance(mu_q, Tensor):
        return None, None
    kind = _dispatch.fused_kernels(mu_q, op_name)
    if kind == "cpu":
        device = mu_q.device
        for t in others:
            if t is not None and (not isinstance(t, Tensor) or t.device != device):
                return None, None
        return kind, kernel_sets.cpu
    if kind == "triton":
        return kind, kernel_sets.triton()
    return None, None


def required(**tensors):
    """The arguments that cannot be None are tensors (named TypeError before any kernel sees them)."""
    for name, t in tensors.items():
        if not isinstance(t, Tensor):
            _checks.tensor(name, t)


def as_float(name, value, nonneg=False):
    """A Python float as is (the C++ kernels check its range); anything else checked here."""
    if type(value) is float:
        return value
    return _checks.nonneg_number(name, value) if nonneg else _checks.number(name, value)


def fake_active(mu_q, free_bits):
    """The ``active`` output of a forward: bool [Z] with free bits, [0] without."""
    return mu_q.new_empty((mu_q.shape[1] if free_bits > 0 else 0,), dtype=torch.bool)


def fake_prior_grads(mu_q, mu_p):
    """d mu_p, d logvar_p of a backward: [B, Z] each, or [0] for the standard normal prior."""
    if mu_p is None:
        return mu_q.new_empty(0), mu_q.new_empty(0)
    return mu_q.new_empty(mu_q.shape), mu_q.new_empty(mu_q.shape)
