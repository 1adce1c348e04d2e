"""Named argument checks at the op boundary.

Every public op validates its arguments here before any kernel runs, so bad
input gets a ``TypeError`` (wrong type/dtype) or ``ValueError`` (shape,
device, range) that names the argument.
"""

import torch


def tensor(name, t, ndim=None, floating=True):
    """``t`` is a tensor of rank ``ndim`` (an int or a tuple of allowed ranks)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if t.dim() not in allowed:
            want = " or ".join(f"{n}-D" for n in allowed)
            raise ValueError(f"{name} must be {want}, got shape {tuple(t.shape)}")
    if floating and not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    return t


def shape(name, t, expected):
    """``t`` has exactly ``expected`` (a tuple; ``None`` entries match any size)."""
    got = tuple(t.shape)
    if len(got) != len(expected) or any(e is not None and g != e for g, e in zip(got, expected)):
        want = tuple("*" if e is None else e for e in expected)
        raise ValueError(f"{name} must have shape {want}, got {got}")


def same_device(ref_name, ref, **others):
    """Every tensor in ``others`` sits on ``ref``'s device."""
    for name, t in others.items():
        if t is not None and t.device != ref.device:
            raise ValueError(f"{name} is on {t.device} but {ref_name} is on {ref.device}; move them to one device")


def same_dtype(ref_name, ref, **others):
    for name, t in others.items():
        if t is not None and t.dtype != ref.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but {ref_name} has {ref.dtype}; use one dtype")


def lengths(value, batch, steps):
    """Sequence lengths as an int64 CPU tensor ``[batch]`` with values in 1..steps.

    ``None`` means every sequence is ``steps`` long. Lists and integer tensors
    on any device are accepted.
    """
    if value is None:
        return torch.full((batch,), steps, dtype=torch.int64)
    if not isinstance(value, torch.Tensor):
        try:
            value = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(f"lengths must be a 1-D integer tensor or a list of ints: {exc}") from None
    if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
        raise TypeError(f"lengths must be an integer tensor, got dtype {value.dtype}")
    if value.dim() != 1 or value.numel() != batch:
        raise ValueError(f"lengths must have one entry per sequence, shape ({batch},), got {tuple(value.shape)}")
    value = value.to(device="cpu", dtype=torch.int64)
    if not torch.compiler.is_compiling() and batch > 0:
        lo, hi = int(value.min()), int(value.max())
        if lo < 1 or hi > steps:
            bad = lo if lo < 1 else hi
            raise ValueError(f"lengths must lie in 1..{steps} (the padded length), got a length of {bad}")
    return value


def finite(**tensors):
    """Every given tensor is free of NaN/inf (skipped while ``torch.compile`` traces).

    This costs a reduction (and a device sync on GPUs) per tensor; the CPU
    kernels of the latent ops detect non-finite input inside their own loops
    instead, so their fast path does not call this.
    """
    if torch.compiler.is_compiling():
        return
    for name, t in tensors.items():
        if t is not None and t.numel() > 0 and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or infinite values")


def nonneg_number(name, value):
    """``value`` is a real number >= 0 (a Python int/float); returns it as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not value >= 0.0 or value == float("inf"):
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


def number(name, value):
    """``value`` is a finite real number (a Python int/float); returns it as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def first_order_only(op):
    """Called first in a fused op's backward: refuse a backward that is itself to be differentiated.

    Autograd runs a backward with grad mode on only for ``create_graph=True``
    (higher-order gradients). The fused backward kernels have no derivative
    of their own, so autograd would otherwise return wrong numbers or zeros.
    """
    if torch.is_grad_enabled() and not torch.compiler.is_compiling():
        raise RuntimeError(
            f"fastvae.ops.{op} is differentiable once: its backward cannot build a graph for higher-order "
            f"gradients (create_graph=True). Use fastvae.ops.{op}_ref (or backend='reference' on a model) for those"
        )
