"""Which implementation an op runs for a given input: C++ (CPU), Triton (CUDA) or the reference."""

import functools
import inspect
from dataclasses import dataclass
from typing import Callable

import torch

from fastvae import _ext

CPU_DTYPES = (torch.float32, torch.float64)
TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def fused_kernels(x, op_name, cpu_dtypes=CPU_DTYPES, triton_dtypes=TRITON_DTYPES):
    """``"cpu"``, ``"triton"`` or None (run the ``*_ref`` twin) for input ``x``.

    A CPU input with a supported dtype but no compiled extension runs the
    reference and warns once per process (naming the rebuild command).
    """
    if x.device.type == "cpu":
        if x.dtype not in cpu_dtypes:
            return None
        if not _ext.HAS_EXTENSION:
            _ext.warn_fallback(f"fastvae.ops.{op_name}")
            return None
        return "cpu"
    if x.device.type == "cuda" and x.dtype in triton_dtypes and _ext.HAS_TRITON:
        return "triton"
    return None


@dataclass(frozen=True)
class FusedOps:
    """The forward and backward ops of one fused op in one set of kernels (C++ or Triton)."""

    fwd: Callable
    bwd: Callable


def register_cpu_fake(op_name: str, fake: Callable) -> None:
    """``fake`` as the fake kernel of the C++ op ``fastvae::<op_name>``, behind a device check.

    The C++ ops have CPU kernels only. Their fake kernel also serves the Meta
    dispatch key, which wins over CPU: a call that mixes CPU tensors with a meta
    tensor would run it and get uninitialised CPU outputs (``x.new_empty``)
    instead of an error. So every tensor argument (fake ones under
    ``torch.compile`` included) must be on the CPU; the error names the argument.
    """
    signature = inspect.signature(fake)

    @functools.wraps(fake)
    def checked(*args, **kwargs):
        for name, value in signature.bind(*args, **kwargs).arguments.items():
            for t in value if isinstance(value, (list, tuple)) else (value,):
                if isinstance(t, torch.Tensor) and t.device.type != "cpu":
                    raise ValueError(
                        f"fastvae::{op_name}: argument '{name}' is on {t.device}; this op runs on CPU tensors only"
                    )
        return fake(*args, **kwargs)

    torch.library.register_fake(f"fastvae::{op_name}")(checked)


def native_cpu_ops(name, fake_fwd, fake_bwd) -> FusedOps:
    """The C++ ops ``fastvae::<name>`` and ``<name>_bwd`` with their fake kernels registered.

    For the ops whose schemas, CPU kernels and autograd all come from
    fastvae._C (``csrc/<name>_ops.cpp``): there a Python autograd node would
    cost more than the kernels.
    """
    register_cpu_fake(name, fake_fwd)
    register_cpu_fake(f"{name}_bwd", fake_bwd)
    return FusedOps(getattr(torch.ops.fastvae, name).default, getattr(torch.ops.fastvae, f"{name}_bwd").default)


class Kernels:
    """The fused implementations of one op family.

    The C++ ops get their fake kernels and autograd registered at import
    (``register_cpu``), never lazily inside a call that torch.compile traces:
    Dynamo cannot trace torch.library registrations. The Triton ops
    (``register_triton``) cost a triton import, so they are registered at
    import only where CUDA is available, and otherwise on first use (tests
    under the Triton interpreter).
    """

    def __init__(self, register_cpu, register_triton):
        self.cpu = register_cpu() if _ext.HAS_EXTENSION else None
        self._register_triton = register_triton
        self._triton = None
        if _ext.HAS_TRITON and torch.cuda.is_available():
            self.triton()

    def triton(self):
        if self._triton is None and _ext.HAS_TRITON:
            self._triton = self._register_triton()
        return self._triton

    def for_input(self, x, op_name):
        """The kernels for ``x``, or None for the reference."""
        kind = fused_kernels(x, op_name)
        if kind == "cpu":
            return self.cpu
        if kind == "triton":
            return self.triton()
        return None
