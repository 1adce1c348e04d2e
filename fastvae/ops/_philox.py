"""The counter-based normal sampler of the fused ops, in plain torch ops.

``reparameterize`` draws one int64 ``seed`` from the torch generator
(:func:`draw_seed`); its kernels then draw ``eps[i]`` (``i`` = flat index)
as normal ``i % 4`` of Philox4x32-10 counter ``i // 4`` keyed by the seed,
with Box-Muller on the word pairs: Triton's ``tl.randn4x(seed, i // 4)[i % 4]``
(csrc/cpu/philox.h is the C++ twin; one Philox call yields four normals). This module
materialises the same ``eps`` with vectorized torch integer ops, for the
``*_ref`` twin. The integers match the kernels bit for bit; log/cos are
torch's, so eps agrees with the kernels to ~1e-6.

Arithmetic is on int64 tensors holding uint32 values; 32x32-bit products are
split into 16-bit halves so that no intermediate leaves int64's range.
"""

import torch

_M32 = 0xFFFFFFFF
_KEY_A, _KEY_B = 0x9E3779B9, 0xBB67AE85
_ROUND_A, _ROUND_B = 0xD2511F53, 0xCD9E8D57
_SEED_LOW, _SEED_HIGH = -(2**63), 2**63 - 1


def draw_seed(generator=None, device=None):
    """One int64 seed (a 0-dim tensor on ``device``) from ``generator`` or torch's default one.

    A given generator is used on its own device; without one the default
    generator of ``device`` (so ``torch.manual_seed`` makes runs reproducible).
    Neither given: the default CPU generator, a CPU tensor.
    """
    if generator is None and device is None:
        return torch.randint(_SEED_LOW, _SEED_HIGH, (), dtype=torch.int64)
    gen_device = generator.device if generator is not None else device
    seed = torch.randint(_SEED_LOW, _SEED_HIGH, (), dtype=torch.int64, generator=generator, device=gen_device)
    if device is not None and seed.device != torch.device(device):
        seed = seed.to(device)
    return seed


def _mulhilo(const, x):
    """(high, low) 32-bit words of ``const * x`` for a uint32 constant and uint32 values."""
    p_lo = x * (const & 0xFFFF)  # < 2**48
    p_hi = x * (const >> 16)  # < 2**48; const * x = p_hi * 2**16 + p_lo
    hi = (p_hi + (p_lo >> 16)) >> 16
    lo = (((p_hi & 0xFFFF) << 16) + p_lo) & _M32
    return hi, lo


def _uniform(x):
    """Triton's uint_to_uniform_float: the word as int32, negatives folded (~x), times 2**-31.

    The fold is an XOR with all ones where the top bit is set (no torch.where on int64: torch 2.13's
    inductor AVX2 code picks the wrong branch of that one, so a compiled reference got NaN noise).
    """
    folded = x ^ ((x >> 31) * _M32)
    return folded.to(torch.float32) * 4.6566127342e-10


def philox_normal(seed, shape, device=None):
    """float32 standard normals of ``shape``; element ``i`` (row-major) is ``tl.randn4x(seed, i // 4)[i % 4]``.

    Args:
        seed: int64 scalar tensor (from :func:`draw_seed`).
        shape: output shape.
    """
    device = seed.device if device is None else device
    seed = seed.to(device=device, dtype=torch.int64).reshape(())
    k0, k1 = seed & _M32, (seed >> 32) & _M32
    numel = 1
    for s in shape:
        numel *= s
    counter = torch.arange((numel + 3) // 4, dtype=torch.int64, device=device)
    c0, c1 = counter & _M32, counter >> 32
    c2 = c3 = torch.zeros_like(counter)
    for _ in range(10):
        hi_b, lo_b = _mulhilo(_ROUND_B, c2)
        hi_a, lo_a = _mulhilo(_ROUND_A, c0)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0 = (k0 + _KEY_A) & _M32
        k1 = (k1 + _KEY_B) & _M32
    r01 = torch.sqrt(-2.0 * torch.log(_uniform(c0).clamp_min_(1.0e-7)))
    r23 = torch.sqrt(-2.0 * torch.log(_uniform(c2).clamp_min_(1.0e-7)))
    t01 = _uniform(c1) * 6.283185307179586
    t23 = _uniform(c3) * 6.283185307179586
    normals = torch.stack([r01 * torch.cos(t01), r01 * torch.sin(t01), r23 * torch.cos(t23), r23 * torch.sin(t23)], 1)
    return normals.reshape(-1)[:numel].reshape(shape)
