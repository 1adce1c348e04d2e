"""A report dict written as JSON (:func:`write_report`): plain numbers, NaN and infinities as null, atomically."""

import math
import numbers
import os
import warnings

import torch

from fastvae._files import atomic_write_json


def _plain(value, where="", non_finite=None):
    """Numbers (Python, NumPy, 0-d tensors) -> plain float/int/bool; containers recursively.

    NaN and infinities become ``None`` (JSON has no such numbers); their key
    paths are appended to ``non_finite`` when it is a list.
    """
    if isinstance(value, dict):
        return {str(k): _plain(v, f"{where}.{k}" if where else str(k), non_finite) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]", non_finite) for i, v in enumerate(value)]
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            return [_plain(v, f"{where}[{i}]", non_finite) for i, v in enumerate(value.tolist())]
        value = value.item()
    elif getattr(value, "shape", None) == () and hasattr(value, "item"):  # NumPy scalars (np.float32, np.bool_)
        value = value.item()
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        if math.isfinite(value):
            return value
        if non_finite is not None:
            non_finite.append(where)
        return None
    raise TypeError(f"report holds a {type(value).__name__}, which JSON cannot store: {value!r}")


def write_report(path, report):
    """Write ``report`` (a dict) to ``path`` as JSON: sorted keys, indent 2, numbers as plain floats/ints.

    Atomic: written to a temporary file in the same directory, then renamed
    over ``path`` (its directory is created if needed), with the umask's
    permissions (:func:`fastvae._files.atomic_write_json`). Returns ``path``.
    NaN and infinite values (a diverged model's NLL) are written as ``null``,
    with a warning naming them, so any JSON reader can load the file.
    """
    if not isinstance(report, dict):
        raise TypeError(f"report must be a dict, got {type(report).__name__}")
    non_finite = []
    data = _plain(report, non_finite=non_finite)
    if non_finite:
        shown = ", ".join(non_finite[:8]) + (f" and {len(non_finite) - 8} more" if len(non_finite) > 8 else "")
        warnings.warn(f"report values that are NaN or infinite are written as null (JSON has no such numbers): {shown}",
                      stacklevel=2)
    return atomic_write_json(os.fspath(path), data, allow_nan=False)
