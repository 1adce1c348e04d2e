"""Helpers shared by the tests of the ops (tests/ops): subprocesses at an ISA level, the latent ops' inputs."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import fastvae
from fastvae.ops.gaussian_kl import _kl_terms_ref

NEEDS_EXT = pytest.mark.skipif(not fastvae.HAS_EXTENSION, reason="fastvae._C is not built")
# The ISA levels the CPU loops are compiled for (csrc/cpu/isa.h); FASTVAE_CPU_ISA picks one, once per
# process, so each level is tested in a subprocess.
ISA_LEVELS = ["generic", "avx2", "avx512"]


def run_python(code, *argv, env=None, timeout=600):
    """``python -c code argv...`` with ``env`` added to this process's environment."""
    return subprocess.run(
        [sys.executable, "-c", code, *argv], env=dict(os.environ, **(env or {})), capture_output=True, text=True,
        timeout=timeout,
    )


# The start of every script run_at_isa runs: the kernels run the level it asked for.
ISA_HEAD = textwrap.dedent(
    """
    import sys
    import torch
    import fastvae  # noqa: F401  (registers the ops)

    isa = sys.argv[1]
    assert torch.ops.fastvae.cpu_capability().split()[0] == "isa=" + isa, torch.ops.fastvae.cpu_capability()
    """
)


def run_at_isa(code, isa, *argv):
    """Run ``ISA_HEAD + code`` with ``FASTVAE_CPU_ISA=isa`` (``isa`` is its first argument); its stdout.

    Skips when this CPU lacks the level; any other failure fails the test with the script's stderr.
    """
    result = run_python(ISA_HEAD + code, isa, *argv, env={"FASTVAE_CPU_ISA": isa})
    if result.returncode != 0 and "is not supported by this CPU" in result.stderr:
        pytest.skip(f"this CPU has no {isa}")
    assert result.returncode == 0, f"subprocess failed (rc={result.returncode}):\n{result.stderr[-4000:]}"
    return result.stdout


def second_order(loss, inputs):
    """Gradients of the squared norm of ``loss``'s gradient (a backward through a backward)."""
    (grad,) = torch.autograd.grad(loss, inputs, create_graph=True)
    return torch.autograd.grad(grad.pow(2).sum(), inputs)


# ------------------------------------------- the latent ops (reparameterize, gaussian_kl, kl_label_loss)

DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
SAMPLED_TOL = 5e-6  # |eps_fast - eps_ref|, eps in float32 on both sides
SHAPES = [(1, 1), (1, 7), (5, 1), (5, 7), (64, 8), (3, 130), (2, 1030)]
SHAPE_IDS = [f"B{b}-Z{z}" for b, z in SHAPES]


def assert_close(actual, expected, tol):
    """allclose with rtol = tol and atol = tol * max(1, |expected|max)."""
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype
    scale = max(1.0, expected.detach().abs().max().item()) if expected.numel() else 1.0
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol * scale)


def leaves(B, Z, dtype, n, seed=0, scale=0.7):
    """n random [B, Z] leaf tensors that require grad."""
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(B, Z, generator=gen, dtype=dtype) * scale).requires_grad_() for _ in range(n)]


def clones(tensors):
    return [t.detach().clone().requires_grad_(t.requires_grad) for t in tensors]


def grads(tensors):
    return [t.grad for t in tensors]


def gen(seed):
    return torch.Generator().manual_seed(seed)


def kl_inputs(B, Z, dtype, prior, seed=0):
    ins = leaves(B, Z, dtype, 4 if prior else 2, seed=seed)
    return ins if prior else ins + [None, None]


def kll_inputs(B, Z, dtype, prior, seed=0):
    ins = kl_inputs(B, Z, dtype, prior, seed)
    z, z_label = leaves(B, Z, dtype, 2, seed=seed + 100)
    return ins + [z, z_label]


def per_dim_kl(mu_q, logvar_q, mu_p, logvar_p):
    with torch.no_grad():
        return _kl_terms_ref(mu_q, logvar_q, mu_p, logvar_p)


def free_bits_between(terms):
    """A free_bits value that clamps some latent dims and keeps others (away from ties)."""
    means = terms.mean(0).sort().values
    if means.numel() < 2:
        return means[0].item() * 0.5
    k = means.numel() // 2
    return 0.5 * (means[k - 1] + means[k]).item()



# The start of the ISA-level scripts of the latent ops (after ISA_HEAD): the checks, the inputs at
# sizes of one element, less than one vector (4/8/16 lanes), partial last vectors, several 256-normal
# blocks of the sampler and several 1024-element tiles, and log-variances past float32's exp range.
LATENT_ISA_PRELUDE = textwrap.dedent(
    """
    import pytest
    from fastvae.ops import (_philox, gaussian_kl, gaussian_kl_ref, kl_label_loss, kl_label_loss_ref,
                             reparameterize, reparameterize_ref)
    from fastvae.ops.gaussian_kl import _kl_terms_ref

    TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
    SAMPLED = 5e-6
    SIZES = [(1, 1), (1, 3), (3, 5), (1, 17), (7, 37), (64, 8), (3, 130), (37, 301)]

    def close(got, want, tol):
        assert got.dtype == want.dtype and got.shape == want.shape
        scale = max(1.0, want.abs().max().item()) if want.numel() else 1.0
        torch.testing.assert_close(got, want.detach(), rtol=tol, atol=tol * scale)

    def leaves(tensors):
        return [None if t is None else t.clone().requires_grad_() for t in tensors]

    def free_bits_between(ins):
        means = _kl_terms_ref(*ins).mean(0).sort().values
        k = means.numel() // 2
        return 0.5 * (means[0] if k == 0 else means[k - 1] + means[k]).item()

    def cases():
        # per size and dtype: mu, logvar, mu_p, logvar_p, z_label, eps, grad_z [B, Z] and three [B] weights
        for B, Z in SIZES:
            for dtype in (torch.float32, torch.float64):
                gen = torch.Generator().manual_seed(1000 * B + Z)
                tensors = [torch.randn(B, Z, generator=gen, dtype=dtype) * 0.7 for _ in range(7)]
                yield B, Z, dtype, (*tensors, [torch.randn(B, generator=gen, dtype=dtype) for _ in range(3)])

    edges = torch.tensor([89.0, 200.0, -200.0, 88.5, -86.0, 40.0, -100.0, -89.0, 0.3])
    lv_edges = edges[torch.arange(3 * 19) % 9].reshape(3, 19)
    zeros, ones = torch.zeros(3, 19), torch.ones(3, 19)
    """
)
