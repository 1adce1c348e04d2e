"""Triton kernels of the two KL ops, gaussian_kl and kl_label_loss (shared; launchers in
``kernels/gaussian_kl.py`` and ``kernels/kl_label_loss.py``).

All tensors are ``[B, Z]`` (contiguous), fp32/fp16/bf16; the math runs in
fp32 and results are stored in the input dtype. Per-row sums over Z: the row
kernel computes ``kl[b]`` and, for kl_label_loss, ``label[b]`` and
``total[b]`` in the same pass. With free bits a first kernel (one program per
block of latent dims) takes the batch mean of each dimension's KL and marks
the dimensions kept (``active``); the row kernel then replaces clamped
dimensions by ``free_bits``. The backward kernel computes the element-wise
gradients of a tile from the per-row output gradients.

Launches go through ``kernels._launch.launch`` so they work inside
``torch.library.triton_op`` (eager, ``torch.compile`` and the interpreter).
"""

import torch
import triton
import triton.language as tl

from fastvae.kernels._launch import launch as _launch

_MAX_ROWS = 16  # rows per program of the row kernels (32 made ptxas spill kl_label_loss on sm_90)
_MAX_COLS = 128  # latent dims per loop step of the row kernels


def _row_blocks(B: int, Z: int):
    block_z = min(triton.next_power_of_2(max(Z, 1)), _MAX_COLS)
    block_b = min(triton.next_power_of_2(max(B, 1)), _MAX_ROWS)
    return block_b, block_z


@triton.jit
def _kl_term(mq, lq, mp, lp, HAS_PRIOR: tl.constexpr):
    """One dimension's KL(q || p) in fp32; exactly 0 when q == p."""
    if HAS_PRIOR:
        d = mq - mp
        dd = d * d
        # d == 0 adds 0 even where exp(-lp) overflows (0 * inf would be NaN)
        md = tl.where(dd == 0.0, 0.0, dd * tl.exp(-lp))
        t = 0.5 * ((lp - lq) + tl.exp(lq - lp) + md - 1.0)
    else:
        t = 0.5 * ((-lq) + tl.exp(lq) + mq * mq - 1.0)
    return t


@triton.jit
def _load_f32(ptr, offs, mask):
    return tl.load(ptr + offs, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _kl_tile(mq_ptr, lq_ptr, mp_ptr, lp_ptr, offs, mask, HAS_PRIOR: tl.constexpr):
    """The KL terms of a tile of elements (fp32), read from the posterior and, with HAS_PRIOR, the prior."""
    mq = _load_f32(mq_ptr, offs, mask)
    lq = _load_f32(lq_ptr, offs, mask)
    if HAS_PRIOR:
        mp = _load_f32(mp_ptr, offs, mask)
        lp = _load_f32(lp_ptr, offs, mask)
    else:
        mp = mq
        lp = lq
    return _kl_term(mq, lq, mp, lp, HAS_PRIOR)


@triton.jit
def _kl_active_kernel(
    mq_ptr, lq_ptr, mp_ptr, lp_ptr, active_ptr, B, Z, free_bits,
    HAS_PRIOR: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_Z: tl.constexpr,
):
    """active[j] = (mean over the batch of KL[:, j]) >= free_bits, one program per block of dims."""
    cols = tl.program_id(0) * BLOCK_Z + tl.arange(0, BLOCK_Z)
    cmask = cols < Z
    colsum = tl.zeros([BLOCK_Z], dtype=tl.float32)
    for b0 in range(0, B, BLOCK_B):
        rows = b0 + tl.arange(0, BLOCK_B)
        m2 = (rows < B)[:, None] & cmask[None, :]
        offs = rows.to(tl.int64)[:, None] * Z + cols[None, :]
        t = _kl_tile(mq_ptr, lq_ptr, mp_ptr, lp_ptr, offs, m2, HAS_PRIOR)
        colsum += tl.sum(tl.where(m2, t, 0.0), axis=0)
    keep = colsum / B >= free_bits
    tl.store(active_ptr + cols, keep, mask=cmask)


@triton.jit
def _kl_rows_kernel(
    mq_ptr, lq_ptr, mp_ptr, lp_ptr, z_ptr, zl_ptr, active_ptr,
    kl_ptr, label_ptr, total_ptr,
    B, Z, kl_weight, label_weight, free_bits,
    HAS_PRIOR: tl.constexpr, HAS_LABEL: tl.constexpr, CLAMP: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_Z: tl.constexpr,
):
    """kl[b] (and label[b], total[b]) summed over Z for a block of rows."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    rmask = rows < B
    acc_kl = tl.zeros([BLOCK_B], dtype=tl.float32)
    acc_label = tl.zeros([BLOCK_B], dtype=tl.float32)
    for z0 in range(0, Z, BLOCK_Z):
        cols = z0 + tl.arange(0, BLOCK_Z)
        cmask = cols < Z
        m2 = rmask[:, None] & cmask[None, :]
        offs = rows.to(tl.int64)[:, None] * Z + cols[None, :]
        t = _kl_tile(mq_ptr, lq_ptr, mp_ptr, lp_ptr, offs, m2, HAS_PRIOR)
        if CLAMP:
            keep = tl.load(active_ptr + cols, mask=cmask, other=0).to(tl.int1)
            t = tl.where(keep[None, :], t, free_bits)
        acc_kl += tl.sum(tl.where(m2, t, 0.0), axis=1)
        if HAS_LABEL:
            d = _load_f32(z_ptr, offs, m2) - _load_f32(zl_ptr, offs, m2)
            acc_label += tl.sum(d * d, axis=1)
    tl.store(kl_ptr + rows, acc_kl.to(kl_ptr.dtype.element_ty), mask=rmask)
    if HAS_LABEL:
        tl.store(label_ptr + rows, acc_label.to(label_ptr.dtype.element_ty), mask=rmask)
        total = kl_weight * acc_kl + label_weight * acc_label
        tl.store(total_ptr + rows, total.to(total_ptr.dtype.element_ty), mask=rmask)


@triton.jit
def _kl_bwd_kernel(
    gt_ptr, gk_ptr, gl_ptr, mq_ptr, lq_ptr, mp_ptr, lp_ptr, z_ptr, zl_ptr, active_ptr,
    dmq_ptr, dlq_ptr, dmp_ptr, dlp_ptr, dz_ptr,
    B, Z, kl_weight, label_weight,
    HAS_PRIOR: tl.constexpr, HAS_LABEL: tl.constexpr, CLAMP: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_Z: tl.constexpr,
):
    """Element-wise gradients for a [BLOCK_B, BLOCK_Z] tile from the per-row output gradients."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.program_id(1) * BLOCK_Z + tl.arange(0, BLOCK_Z)
    rmask = rows < B
    cmask = cols < Z
    m2 = rmask[:, None] & cmask[None, :]
    offs = rows.to(tl.int64)[:, None] * Z + cols[None, :]
    g_kl = _load_f32(gk_ptr, rows, rmask)
    if HAS_LABEL:
        g_total = _load_f32(gt_ptr, rows, rmask)
        g_kl = kl_weight * g_total + g_kl
        g_label = label_weight * g_total + _load_f32(gl_ptr, rows, rmask)
        d = _load_f32(z_ptr, offs, m2) - _load_f32(zl_ptr, offs, m2)
        dz = 2.0 * g_label[:, None] * d
        tl.store(dz_ptr + offs, dz.to(dz_ptr.dtype.element_ty), mask=m2)
    g = g_kl[:, None] + tl.zeros([BLOCK_B, BLOCK_Z], dtype=tl.float32)
    if CLAMP:
        keep = tl.load(active_ptr + cols, mask=cmask, other=0).to(tl.int1)
        g = tl.where(keep[None, :], g, 0.0)
    mq = _load_f32(mq_ptr, offs, m2)
    lq = _load_f32(lq_ptr, offs, m2)
    if HAS_PRIOR:
        mp = _load_f32(mp_ptr, offs, m2)
        lp = _load_f32(lp_ptr, offs, m2)
        d = mq - mp
        inv_var_p = tl.exp(-lp)
        ratio = tl.exp(lq - lp)
        gm = g * d * inv_var_p
        tl.store(dmq_ptr + offs, gm.to(dmq_ptr.dtype.element_ty), mask=m2)
        tl.store(dmp_ptr + offs, (-gm).to(dmp_ptr.dtype.element_ty), mask=m2)
        tl.store(dlq_ptr + offs, (0.5 * g * (ratio - 1.0)).to(dlq_ptr.dtype.element_ty), mask=m2)
        dlp = 0.5 * g * (1.0 - ratio - d * d * inv_var_p)
        tl.store(dlp_ptr + offs, dlp.to(dlp_ptr.dtype.element_ty), mask=m2)
    else:
        tl.store(dmq_ptr + offs, (g * mq).to(dmq_ptr.dtype.element_ty), mask=m2)
        tl.store(dlq_ptr + offs, (0.5 * g * (tl.exp(lq) - 1.0)).to(dlq_ptr.dtype.element_ty), mask=m2)


def contiguous(*tensors):
    """Each tensor made contiguous (None stays None)."""
    return [t.contiguous() if t is not None else None for t in tensors]


def _active(mu_q, logvar_q, mu_p, logvar_p, free_bits):
    """bool [Z]: dims whose batch-mean KL reaches free_bits ([0] when free_bits == 0)."""
    B, Z = mu_q.shape
    if free_bits <= 0:
        return torch.empty(0, dtype=torch.bool, device=mu_q.device)
    active = torch.empty(Z, dtype=torch.bool, device=mu_q.device)
    if Z > 0:
        block_b, block_z = _row_blocks(B, Z)
        has_prior = mu_p is not None
        _launch(
            _kl_active_kernel, (triton.cdiv(Z, block_z),),
            mu_q, logvar_q, mu_p if has_prior else mu_q, logvar_p if has_prior else mu_q, active,
            B, Z, float(free_bits), HAS_PRIOR=has_prior, BLOCK_B=block_b, BLOCK_Z=block_z,
        )
    return active


def kl_rows(mu_q, logvar_q, mu_p, logvar_p, z, z_label, kl_weight, label_weight, free_bits):
    """(total, kl, label [B], active bool [Z] or [0]); total and label None without z (gaussian_kl)."""
    B, Z = mu_q.shape
    active = _active(mu_q, logvar_q, mu_p, logvar_p, free_bits)
    kl = torch.empty(B, dtype=mu_q.dtype, device=mu_q.device)
    has_label = z is not None
    label = torch.empty_like(kl) if has_label else None
    total = torch.empty_like(kl) if has_label else None
    if B > 0:
        block_b, block_z = _row_blocks(B, Z)
        has_prior = mu_p is not None
        _launch(
            _kl_rows_kernel, (triton.cdiv(B, block_b),),
            mu_q, logvar_q, mu_p if has_prior else mu_q, logvar_p if has_prior else mu_q,
            z if has_label else mu_q, z_label if has_label else mu_q, active if free_bits > 0 else kl,
            kl, label if has_label else kl, total if has_label else kl,
            B, Z, float(kl_weight), float(label_weight), float(free_bits),
            HAS_PRIOR=has_prior, HAS_LABEL=has_label, CLAMP=free_bits > 0, BLOCK_B=block_b, BLOCK_Z=block_z,
        )
    return total, kl, label, active


def kl_grads(grad_total, grad_kl, grad_label, mu_q, logvar_q, mu_p, logvar_p, z, z_label, kl_weight, label_weight,
             active):
    """d mu_q, d logvar_q, d mu_p, d logvar_p, d z ([B, Z]; prior grads [0] without a prior, d z None without z)."""
    B, Z = mu_q.shape
    has_prior, has_label = mu_p is not None, z is not None
    d_mq, d_lq = torch.empty_like(mu_q), torch.empty_like(mu_q)
    d_mp = torch.empty_like(mu_q) if has_prior else mu_q.new_empty(0)
    d_lp = torch.empty_like(mu_q) if has_prior else mu_q.new_empty(0)
    d_z = torch.empty_like(mu_q) if has_label else None
    if B > 0 and Z > 0:
        block_b, block_z = _row_blocks(B, Z)
        _launch(
            _kl_bwd_kernel, (triton.cdiv(B, block_b), triton.cdiv(Z, block_z)),
            grad_total if has_label else grad_kl, grad_kl, grad_label if has_label else grad_kl,
            mu_q, logvar_q, mu_p if has_prior else mu_q, logvar_p if has_prior else mu_q,
            z if has_label else mu_q, z_label if has_label else mu_q,
            active if active.numel() > 0 else mu_q,
            d_mq, d_lq, d_mp if has_prior else d_mq, d_lp if has_prior else d_mq, d_z if has_label else d_mq,
            B, Z, float(kl_weight), float(label_weight),
            HAS_PRIOR=has_prior, HAS_LABEL=has_label, CLAMP=active.numel() > 0, BLOCK_B=block_b, BLOCK_Z=block_z,
        )
    return d_mq, d_lq, d_mp, d_lp, d_z
