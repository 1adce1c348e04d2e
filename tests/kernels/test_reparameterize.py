"""The Triton kernels of reparameterize (``fastvae.kernels.reparameterize``) and its triton_ops.

Without CUDA the kernels run under the Triton interpreter on CPU tensors, so
shapes are tiny. References: the C++ kernel for the sampled eps (same Philox
stream), ``fastvae.ops._philox`` (the stream in torch ops) and autograd of
``mu + eps * exp(0.5 * logvar)``.
"""

import importlib

import pytest
import torch

from fastvae.kernels import reparameterize as kernels
from fastvae.ops import _philox

from .helpers import (
    DEVICE,
    EPS_TOL,
    NEEDS_CUDA,
    NEEDS_EXT,
    OPCHECK_UTILS,
    SHAPE_IDS,
    SHAPES,
    assert_close,
    rand,
    seed_tensor,
)

ops_module = importlib.import_module("fastvae.ops.reparameterize")


@pytest.mark.parametrize("seed", [0, 42, -5, 2**62 + 12345])
def test_sampled_eps_matches_torch_stream(seed):
    n = 1027  # not a multiple of 4 or of the block
    zeros = torch.zeros(1, n, device=DEVICE)
    eps = kernels.reparameterize(zeros, zeros, None, seed_tensor(seed))
    ref = _philox.philox_normal(seed_tensor(seed), (1, n))
    torch.testing.assert_close(eps, ref, rtol=0, atol=EPS_TOL)


@NEEDS_EXT
@pytest.mark.parametrize("seed", [7, -(2**63)])
def test_sampled_eps_matches_cpu_kernel(seed):
    """CPU (C++) and GPU (Triton) kernels draw the same eps for a seed."""
    shape = (6, 37)
    zeros = torch.zeros(shape, device=DEVICE)
    eps = kernels.reparameterize(zeros, zeros, None, seed_tensor(seed)).cpu()
    cpu = torch.ops.fastvae.reparameterize(torch.zeros(shape), torch.zeros(shape), None, torch.tensor(seed))
    torch.testing.assert_close(eps, cpu, rtol=0, atol=EPS_TOL)
    assert (eps == cpu).float().mean() > 0.5  # most draws agree bit for bit


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_reparameterize_forward_backward(shape):
    mu, logvar, eps, grad_z = (rand(*shape, seed=s) for s in range(4))
    seed = seed_tensor(99)
    sampled = kernels.reparameterize(torch.zeros_like(mu), torch.zeros_like(mu), None, seed)
    for e, eps_arg, seed_arg in ((eps, eps, None), (sampled, None, seed)):
        z = kernels.reparameterize(mu, logvar, eps_arg, seed_arg)
        assert_close(z, mu + e * torch.exp(0.5 * logvar))
        grad_logvar = kernels.reparameterize_bwd(grad_z, logvar, eps_arg, seed_arg)
        assert_close(grad_logvar, 0.5 * grad_z * e * torch.exp(0.5 * logvar))


def test_reparameterize_triton_op_autograd():
    kernels = ops_module.KERNELS.triton()
    mu, logvar = rand(5, 7, seed=1).requires_grad_(), rand(5, 7, seed=2).requires_grad_()
    seed = seed_tensor(3)
    z = kernels.fwd(mu, logvar, None, seed)
    eps = _philox.philox_normal(seed, (5, 7))
    mu_r, logvar_r = mu.detach().clone().requires_grad_(), logvar.detach().clone().requires_grad_()
    z_ref = mu_r + eps * torch.exp(0.5 * logvar_r)
    assert_close(z, z_ref.detach(), EPS_TOL * 10)
    g = rand(5, 7, seed=4)
    (z * g).sum().backward()
    (z_ref * g).sum().backward()
    assert_close(mu.grad, mu_r.grad)
    assert_close(logvar.grad, logvar_r.grad, EPS_TOL * 10)


def test_multiple_blocks(monkeypatch):
    """Force small blocks so the elements span several programs (and groups of four normals)."""
    monkeypatch.setattr(kernels, "_ELEM_BLOCK", 16)
    zeros = torch.zeros(3, 13, device=DEVICE)
    eps = kernels.reparameterize(zeros, zeros, None, seed_tensor(8))
    torch.testing.assert_close(eps, _philox.philox_normal(seed_tensor(8), (3, 13)), rtol=0, atol=EPS_TOL)


@pytest.mark.parametrize("dtype", [torch.float16, pytest.param(torch.bfloat16, marks=NEEDS_CUDA)], ids=["fp16", "bf16"])
def test_low_precision_close_to_fp32(dtype):
    """16-bit inputs, fp32 math: results close to fp32 on the same (rounded) inputs."""
    tol = {torch.float16: 2e-3, torch.bfloat16: 1e-2}[dtype]
    mu, logvar = rand(5, 7, seed=11, dtype=dtype), rand(5, 7, seed=12, dtype=dtype)
    z = kernels.reparameterize(mu, logvar, None, seed_tensor(4))
    z32 = kernels.reparameterize(mu.float(), logvar.float(), None, seed_tensor(4))
    assert z.dtype == dtype
    assert_close(z.float(), z32, tol)


def _triton_opcheck_cases():
    def t(grad=False, seed=0):
        return rand(3, 5, seed=seed).requires_grad_(grad)

    seed = seed_tensor(5)
    return [
        ("reparameterize_triton", (t(True, 1), t(True, 2), None, seed)),
        ("reparameterize_triton", (t(True, 1), t(True, 2), t(False, 3), None)),
        ("reparameterize_bwd_triton", (t(False, 1), t(False, 2), None, seed)),
    ]


@pytest.mark.parametrize("case", range(len(_triton_opcheck_cases())))
def test_opcheck_triton_ops(case):
    ops_module.KERNELS.triton()  # registers the triton_ops
    name, args = _triton_opcheck_cases()[case]
    torch.library.opcheck(getattr(torch.ops.fastvae, name).default, args, test_utils=OPCHECK_UTILS)
