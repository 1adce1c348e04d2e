"""The fake kernel of ``torch.ops.fastvae._gemm``: the GEMM of the CPU kernels, exposed for tests and tuning.

Not a public op (the underscore): ``_gemm(a, b, trans_a, trans_b)`` is
``op(a) @ op(b)`` for float32/float64 CPU tensors, ``a`` ``[M, K]`` (``[K, M]``
when ``trans_a``), ``b`` ``[K, N]`` (``[N, K]`` when ``trans_b``) -> ``[M, N]``
(schema: ``csrc/gemm_ops.cpp``; kernel: ``csrc/cpu/gemm_cpu.cpp``). Its
reference is ``torch.mm``.
"""

import torch

from fastvae import _ext
from fastvae.ops import _dispatch


def _fake(a, b, trans_a, trans_b):
    M = a.shape[1] if trans_a else a.shape[0]
    N = b.shape[0] if trans_b else b.shape[1]
    return a.new_empty(M, N)


if _ext.HAS_EXTENSION:
    _dispatch.register_cpu_fake("_gemm", _fake)
