"""Triton kernels of reparameterize: ``z = mu + eps * exp(0.5 * logvar)``.

All tensors are ``[B, Z]`` (made contiguous here), fp32/fp16/bf16; the math
runs in fp32 and results are stored in the input dtype. Without ``eps`` the
kernel draws ``eps[i] = tl.randn4x(seed, i // 4)[i % 4]`` (Philox4x32-10,
``i`` the flat element index), the backward regenerates the same draw. The
C++ CPU kernel follows the same recipe (csrc/cpu/philox.h).

The public functions are launchers: they allocate the outputs with torch and
fill them through ``kernels._launch.launch`` so they work inside
``torch.library.triton_op`` (eager, ``torch.compile`` and the interpreter).
"""

import torch
import triton
import triton.language as tl

from fastvae.kernels._launch import launch as _launch

_ELEM_BLOCK = 1024  # elements per program


@triton.jit
def _sample_eps(seed_ptr, start, BLOCK: tl.constexpr):
    """eps[start + j] = tl.randn4x(seed, (start + j) // 4)[(start + j) % 4] for j < BLOCK (fp32).

    ``start`` and ``BLOCK`` are multiples of 4: each group of four draws its
    randn4x once, and the four normals are interleaved back into element
    order (join, then reshape).
    """
    groups = start // 4 + tl.arange(0, BLOCK // 4)
    n0, n1, n2, n3 = tl.randn4x(tl.load(seed_ptr), groups)
    return tl.reshape(tl.join(tl.join(n0, n2), tl.join(n1, n3)), (BLOCK,))


@triton.jit
def _eps(eps_ptr, seed_ptr, start, offs, mask, HAS_EPS: tl.constexpr, BLOCK: tl.constexpr):
    """eps of the program's elements (fp32): loaded when given, else drawn from the seed."""
    if HAS_EPS:
        eps = tl.load(eps_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    else:
        eps = _sample_eps(seed_ptr, start, BLOCK)
    return eps


@triton.jit
def _reparam_fwd_kernel(mu_ptr, logvar_ptr, eps_ptr, seed_ptr, z_ptr, n, HAS_EPS: tl.constexpr, BLOCK: tl.constexpr):
    start = tl.program_id(0).to(tl.int64) * BLOCK
    offs = start + tl.arange(0, BLOCK)
    mask = offs < n
    mu = tl.load(mu_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    logvar = tl.load(logvar_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    eps = _eps(eps_ptr, seed_ptr, start, offs, mask, HAS_EPS, BLOCK)
    z = mu + eps * tl.exp(0.5 * logvar)
    tl.store(z_ptr + offs, z.to(z_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _reparam_bwd_kernel(gz_ptr, logvar_ptr, eps_ptr, seed_ptr, out_ptr, n, HAS_EPS: tl.constexpr, BLOCK: tl.constexpr):
    start = tl.program_id(0).to(tl.int64) * BLOCK
    offs = start + tl.arange(0, BLOCK)
    mask = offs < n
    gz = tl.load(gz_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    logvar = tl.load(logvar_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    eps = _eps(eps_ptr, seed_ptr, start, offs, mask, HAS_EPS, BLOCK)
    out = 0.5 * gz * eps * tl.exp(0.5 * logvar)
    tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=mask)


def _elementwise(kernel, first, logvar, eps, seed):
    """Run ``kernel`` over the flat elements of (first, logvar, eps or None, seed or None) into a new [B, Z]."""
    first, logvar = first.contiguous(), logvar.contiguous()
    eps = eps.contiguous() if eps is not None else None
    out = torch.empty_like(logvar)
    n = logvar.numel()
    if n > 0:
        _launch(
            kernel, (triton.cdiv(n, _ELEM_BLOCK),),
            first, logvar, eps if eps is not None else logvar, seed if seed is not None else logvar, out, n,
            HAS_EPS=eps is not None, BLOCK=_ELEM_BLOCK,
        )
    return out


def reparameterize(mu, logvar, eps, seed):
    """z [B, Z] = mu + eps * exp(0.5 logvar); eps drawn from ``seed`` (int64 scalar tensor) when None."""
    return _elementwise(_reparam_fwd_kernel, mu, logvar, eps, seed)


def reparameterize_bwd(grad_z, logvar, eps, seed):
    """d logvar [B, Z] = 0.5 grad_z eps exp(0.5 logvar), eps regenerated from ``seed`` when None."""
    return _elementwise(_reparam_bwd_kernel, grad_z, logvar, eps, seed)
