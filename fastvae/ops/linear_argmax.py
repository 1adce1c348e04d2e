"""Greedy decoding head: ``argmax(hidden @ weight.T + bias)`` without the ``[R, V]`` scores.

``linear_argmax(hidden, weight, bias=None) -> (index [R] int64, value [R])``
and its twin ``linear_argmax_ref``. Inference only (no gradient). CPU float32
and float64 use the fused C++ kernel (the register-tiled head_argmax of this
CPU's ISA: each score lives only in a register tile); other inputs (CUDA)
compute the scores with ``F.linear`` -- on a GPU the product dominates and
cuBLAS is the right tool.
"""

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from fastvae.ops import _checks, _dispatch


def linear_argmax_ref(
    hidden: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Plain-PyTorch twin: ``F.linear(hidden, weight, bias).max(-1)`` as ``(index, value)``."""
    value, index = F.linear(hidden, weight, bias).max(dim=-1)
    return index, value


def _fake(hidden, weight, bias):
    R = hidden.shape[0]
    return hidden.new_empty(R, dtype=torch.int64), hidden.new_empty(R)


def _register_cpu():
    _dispatch.register_cpu_fake("linear_argmax", _fake)
    return torch.ops.fastvae.linear_argmax.default


KERNELS = _dispatch.Kernels(_register_cpu, lambda: None)


def linear_argmax(
    hidden: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Best word per row.

    Args:
        hidden: ``[R, H]`` float decoder states; weight: ``[V, H]``; bias: ``[V]`` or None.
    Returns:
        ``index [R]`` (int64; ties go to the lowest index) and ``value [R]``
        (the winning score).

    A NaN or infinite value in ``hidden`` is a ValueError (a broken decoder
    state would otherwise decode as an arbitrary word); the scan costs under
    1% of a call. ``weight`` and ``bias`` are not scanned: at 640 rows x
    10,000 words on one thread a scan of ``weight`` measured 8% (H=32) to
    14% (H=256) of the call, on every decoding step.
    """
    _checks.tensor("hidden", hidden, ndim=2)
    _checks.tensor("weight", weight, ndim=2)
    _checks.shape("weight", weight, (None, hidden.shape[1]))
    if weight.shape[0] == 0:
        raise ValueError(f"weight must hold at least one word (row) to pick from, got shape {tuple(weight.shape)}")
    if bias is not None:
        _checks.shape("bias", _checks.tensor("bias", bias, ndim=1), (weight.shape[0],))
    _checks.same_device("hidden", hidden, weight=weight, bias=bias)
    _checks.same_dtype("hidden", hidden, weight=weight, bias=bias)
    _checks.finite(hidden=hidden)
    kind = _dispatch.fused_kernels(hidden, "linear_argmax", triton_dtypes=())
    if kind != "cpu" or hidden.shape[1] == 0 or (torch.is_grad_enabled() and hidden.requires_grad):
        # H = 0 (scores = bias) is left to F.linear: the fused kernel assumes at least one feature
        return linear_argmax_ref(hidden, weight, bias)
    return KERNELS.cpu(hidden, weight, bias)
