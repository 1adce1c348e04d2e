"""Helpers shared by the Triton kernel tests (tests/kernels): the device, marks, the latent ops' inputs."""

import pytest
import torch

import fastvae
from fastvae.ops.gaussian_kl import _kl_terms_ref

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
NEEDS_EXT = pytest.mark.skipif(not fastvae.HAS_EXTENSION, reason="fastvae._C is not built")
NEEDS_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16 is not supported by the Triton interpreter")
# Under the interpreter wrap_triton hands back the raw kernel, which cannot run on the FakeTensors of
# opcheck's aot_dispatch test, so that test is left out.
OPCHECK_UTILS = ("test_schema", "test_autograd_registration", "test_faketensor")

# ------------------------------------------- the latent ops (reparameterize, gaussian_kl, kl_label_loss)

TOL = 1e-5  # fp32: rtol, and atol relative to the reference's scale
EPS_TOL = 2e-6  # sampled eps vs the C++ / torch streams (log/sin/cos differ by ~1 ulp)
SHAPES = [(1, 1), (5, 7), (3, 130)]
SHAPE_IDS = [f"B{b}-Z{z}" for b, z in SHAPES]


def assert_close(actual, expected, tol=TOL):
    assert actual.shape == expected.shape
    scale = max(1.0, expected.detach().abs().max().item()) if expected.numel() else 1.0
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol * scale)


def rand(*shape, seed=0, scale=0.7, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=gen) * scale).to(DEVICE, dtype)


def seed_tensor(value):
    return torch.tensor(value, dtype=torch.int64, device=DEVICE)


def free_bits_between(mu_q, logvar_q, mu_p, logvar_p):
    """A free_bits value that clamps some dims and keeps others (midway between two dim means)."""
    means = _kl_terms_ref(mu_q, logvar_q, mu_p, logvar_p).mean(0).sort().values
    if means.numel() < 2:
        return 0.5 * means[0].item()
    k = means.numel() // 2
    return 0.5 * (means[k - 1] + means[k]).item()


def kl_inputs(B, Z, prior, label, seed=0, dtype=torch.float32):
    n = 4 if prior else 2
    ins = [rand(B, Z, seed=seed + k, dtype=dtype) for k in range(n)]
    if not prior:
        ins += [None, None]
    if label:
        ins += [rand(B, Z, seed=seed + 10, dtype=dtype), rand(B, Z, seed=seed + 11, dtype=dtype)]
    return ins
