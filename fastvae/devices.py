"""Which devices fastvae runs on: the one check every layer uses (training, evaluation, loading)."""

import torch


def usable_device(device, name="device"):
    """``device`` (a string or ``torch.device``) as a ``torch.device`` this process can run on.

    A ValueError naming ``name`` for a string torch cannot parse, a device
    type other than cpu/cuda, or a CUDA device this torch build or machine
    does not have (rather than torch's assertion deep inside ``.to()``).
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"{name} must name a device such as 'cpu' or 'cuda', got {device!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"{name} must be cpu or cuda (fastvae has kernels for these), got {device!r}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name} is {device!r}, but torch {torch.__version__} sees no CUDA device here; use cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{name} is {device!r}, but only {torch.cuda.device_count()} CUDA device(s) are visible")
    return dev
