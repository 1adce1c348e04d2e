"""The Trainer's optimizer: Adam with torch's fused kernel where torch has one."""

from typing import Iterable

import torch


def adam(params: Iterable[torch.nn.Parameter], lr: float) -> torch.optim.Adam:
    """``torch.optim.Adam`` with torch's fused kernel (``fused=True``) where torch has one for every
    parameter's device and dtype (floating point on the CPU, CUDA, ...): one kernel per step instead
    of a loop of small ops per parameter, the same update up to rounding. Elsewhere the default Adam.
    A checkpoint's optimizer state loads into either, and with it the saved ``fused`` setting: a
    resumed run keeps the Adam it started with.
    """
    params = list(params)
    fused = bool(params) and all(p.is_floating_point() and p.device.type in _fused_adam_devices() for p in params)
    return torch.optim.Adam(params, lr=lr, fused=fused or None)


def _fused_adam_devices():
    """The device types torch's fused optimizers run on (none if this torch does not say)."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
    except ImportError:
        return ()
    return tuple(_get_fused_kernels_supported_devices())
