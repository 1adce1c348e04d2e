"""Setup of the Triton kernel tests.

Without CUDA the kernels run under the Triton interpreter on CPU tensors
(tests/conftest.py sets TRITON_INTERPRET before triton is imported), so the
shapes are tiny; with a GPU (benchmarks/gpu/check.py runs this folder) they
run on it.
"""

import pytest
import torch


@pytest.fixture(autouse=True)
def _exact_fp32_matmul():
    """Keep cuBLAS/cuDNN references in full fp32 (no TF32)."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
