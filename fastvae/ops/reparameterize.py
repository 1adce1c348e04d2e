"""The reparameterization trick, fused: ``z = mu + eps * exp(0.5 * logvar)``.

Public op ``reparameterize(mu, logvar, eps=None, generator=None) -> z`` and
its plain-PyTorch twin ``reparameterize_ref`` with the same signature.

Sampling: without ``eps`` one int64 seed is drawn from ``generator`` (or the
default generator of ``mu``'s device, so ``torch.manual_seed`` reproduces a
run) and the kernel draws ``eps`` from a counter-based Philox4x32-10 stream
keyed by that seed: flat element ``i = b*Z + j`` is Triton's
``tl.randn4x(seed, i // 4)[i % 4]`` (see ``fastvae/ops/_philox.py``). The
backward regenerates ``eps`` from the seed, so nothing but the seed is saved.
CPU (C++) and GPU (Triton) kernels draw the same ``eps`` for a seed, to ~1e-6
(the integer part is bit-exact; log/sin/cos differ by an ulp or two), and so
does ``reparameterize_ref``, which materialises ``eps`` in torch ops. ``eps``
is drawn in float32 for every dtype.

Kernels: CPU float32/float64 run ``torch.ops.fastvae.reparameterize`` (C++),
CUDA fp32/fp16/bf16 run ``fastvae::reparameterize_triton``; anything else runs
the reference.
"""

from functools import partial
from typing import Optional

import torch

from fastvae.ops import _checks, _dispatch, _philox

Tensor = torch.Tensor

# ----------------------------------------------------------------- reference


def reparameterize_ref(
    mu: Tensor, logvar: Tensor, eps: Optional[Tensor] = None, generator: Optional[torch.Generator] = None
) -> Tensor:
    """Plain-PyTorch :func:`reparameterize`; draws the same ``eps`` for the same generator state."""
    if eps is None:
        seed = _philox.draw_seed(generator, mu.device)
        eps = _philox.philox_normal(seed, mu.shape, mu.device).to(mu.dtype)
    return mu + eps * torch.exp(0.5 * logvar)


# ----------------------------------------------------- autograd and fake impls
# The C++ op's autograd is registered in C++ (csrc/reparameterize_ops.cpp, same
# math); these Python functions are the autograd of the Triton op.


def _setup_context(ctx, inputs, output):
    _mu, logvar, eps, seed = inputs
    ctx.save_for_backward(logvar, eps, seed)


def _make_backward(bwd_op):
    def backward(ctx, grad_z):
        _checks.first_order_only("reparameterize")
        logvar, eps, seed = ctx.saved_tensors
        _, need_logvar, need_eps, _ = ctx.needs_input_grad
        grad_logvar = bwd_op(grad_z, logvar, eps, seed) if need_logvar else None
        grad_eps = grad_z * torch.exp(0.5 * logvar) if need_eps else None
        # d z / d mu is the identity: mu's gradient is grad_z itself.
        return grad_z, grad_logvar, grad_eps, None

    return backward


def _fake_fwd(mu, logvar, eps, seed):
    return mu.new_empty(mu.shape)


def _fake_bwd(grad_z, logvar, eps, seed):
    return logvar.new_empty(logvar.shape)


def _register_triton() -> _dispatch.FusedOps:
    """Triton ops (``fastvae::reparameterize_triton``, ``..._bwd_triton``), registered on first use."""
    from torch.library import triton_op

    from fastvae.kernels import reparameterize as kernels

    @triton_op("fastvae::reparameterize_triton", mutates_args=())
    def reparameterize_triton(mu: Tensor, logvar: Tensor, eps: Optional[Tensor], seed: Optional[Tensor]) -> Tensor:
        return kernels.reparameterize(mu, logvar, eps, seed)

    @triton_op("fastvae::reparameterize_bwd_triton", mutates_args=())
    def reparameterize_bwd_triton(
        grad_z: Tensor, logvar: Tensor, eps: Optional[Tensor], seed: Optional[Tensor]
    ) -> Tensor:
        return kernels.reparameterize_bwd(grad_z, logvar, eps, seed)

    reparameterize_triton.register_autograd(_make_backward(reparameterize_bwd_triton), setup_context=_setup_context)
    return _dispatch.FusedOps(reparameterize_triton, reparameterize_bwd_triton)


# -------------------------------------------------------------- public op


# C++: schemas, CPU kernels and autograd from fastvae._C (csrc/reparameterize_ops.cpp); here: their fake kernels.
KERNELS = _dispatch.Kernels(
    partial(_dispatch.native_cpu_ops, "reparameterize", _fake_fwd, _fake_bwd), _register_triton
)


def _check_args(mu, logvar, eps, generator):
    _checks.tensor("mu", mu, ndim=2)
    _checks.tensor("logvar", logvar, ndim=2)
    _checks.shape("logvar", logvar, tuple(mu.shape))
    if eps is not None:
        _checks.shape("eps", _checks.tensor("eps", eps, ndim=2), tuple(mu.shape))
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    _checks.same_device("mu", mu, logvar=logvar, eps=eps)
    _checks.same_dtype("mu", mu, logvar=logvar, eps=eps)


def reparameterize(
    mu: Tensor, logvar: Tensor, eps: Optional[Tensor] = None, generator: Optional[torch.Generator] = None
) -> Tensor:
    """Sample ``z = mu + eps * exp(0.5 * logvar)`` with one fused kernel (one autograd node).

    Args:
        mu: ``[B, Z]`` float posterior mean.
        logvar: ``[B, Z]`` log-variance, same dtype and device as ``mu``.
        eps: ``[B, Z]`` noise, or None to draw ``eps ~ N(0, I)`` inside the
            kernel (counter-based Philox, see the module docstring).
        generator: ``torch.Generator`` the seed is drawn from (None: the
            default generator of ``mu``'s device).

    Returns:
        ``z [B, Z]``. Gradients flow to ``mu`` and ``logvar`` (and to ``eps``
        when it is given and requires grad); the backward regenerates the
        sampled ``eps`` instead of storing it.

    Raises:
        TypeError: naming the argument, for non-tensors and integer dtypes.
        ValueError: naming the argument, for mismatched shapes/dtypes/devices
            and NaN/inf in the inputs.
    """
    if (
        not isinstance(mu, Tensor)
        or not isinstance(logvar, Tensor)
        or (eps is not None and not isinstance(eps, Tensor))
        or (generator is not None and not isinstance(generator, torch.Generator))
    ):
        _check_args(mu, logvar, eps, generator)
    kind = _dispatch.fused_kernels(mu, "reparameterize")
    if kind == "cpu":
        # The C++ kernel checks shapes, dtypes and finiteness itself.
        if logvar.device != mu.device or (eps is not None and eps.device != mu.device):
            _checks.same_device("mu", mu, logvar=logvar, eps=eps)
        if eps is not None:
            seed = None
        elif generator is None:
            seed = _philox.draw_seed()  # the default CPU generator
        else:
            seed = _philox.draw_seed(generator, mu.device)
        return KERNELS.cpu.fwd(mu, logvar, eps, seed)
    _check_args(mu, logvar, eps, generator)
    _checks.finite(mu=mu, logvar=logvar, eps=eps)
    kernels = KERNELS.triton() if kind == "triton" else None
    if kernels is None:
        return reparameterize_ref(mu, logvar, eps, generator)
    seed = None if eps is not None else _philox.draw_seed(generator, mu.device)
    return kernels.fwd(mu, logvar, eps, seed)
