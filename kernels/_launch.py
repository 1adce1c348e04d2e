"""Launching Triton kernels so that eager mode, torch.compile and opcheck all work."""

import contextlib
from typing import NamedTuple

import torch
from torch._subclasses.fake_tensor import is_fake
from torch.library import wrap_triton


class Launch(NamedTuple):
    """One kernel launch as a launcher asked for it (see :func:`recording`)."""

    kernel: object  # the triton.JITFunction
    grid: tuple
    args: tuple
    kwargs: dict


_recorders = []  # lists that every launch is appended to, innermost last


@contextlib.contextmanager
def recording():
    """Collect every :func:`launch` made inside the block, in order.

    The launches still go on as usual (on meta tensors they are skipped, so a
    launcher called on meta tensors only tells what it would launch); the
    list yielded holds a :class:`Launch` per call. ``fastvae.kernels.aot``
    compiles such launches ahead of time for a GPU that is not there.
    """
    launches = []
    _recorders.append(launches)
    try:
        yield launches
    finally:
        _recorders.remove(launches)


def _has_meta(values) -> bool:
    return any(isinstance(v, torch.Tensor) and v.device.type == "meta" for v in values)


def _has_fake(values) -> bool:
    return any(isinstance(v, torch.Tensor) and is_fake(v) for v in values)


def launch(kernel, grid, *args, **kwargs) -> None:
    """Launch ``kernel`` through ``wrap_triton``; skip it where it cannot run.

    Meta tensors carry no data, so the launch is always skipped for them.
    Fake tensors are skipped only when ``wrap_triton`` hands back the raw
    kernel (e.g. under ``TRITON_INTERPRET=1``), which cannot run on them;
    otherwise the traceable wrapper must see them so that ``torch.compile``
    records the launch in its graph.
    """
    for launches in _recorders:
        launches.append(Launch(kernel, tuple(grid), args, dict(kwargs)))
    values = (*args, *kwargs.values())
    launcher = wrap_triton(kernel)
    if _has_meta(values) or (launcher is kernel and _has_fake(values)):
        return
    launcher[grid](*args, **kwargs)
