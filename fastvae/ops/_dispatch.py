"""Which implementation an op runs for a given input: C++ (CPU), Triton (CUDA) or the reference."""

import torch

from fastvae import _ext

CPU_DTYPES = (torch.float32, torch.float64)
TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def fused_backend(x, op_name, cpu_dtypes=CPU_DTYPES, triton_dtypes=TRITON_DTYPES):
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
