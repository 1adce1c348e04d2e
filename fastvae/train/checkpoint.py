"""Atomic, exactly-resumable training checkpoints.

File layout: the 16-byte marker ``MAGIC`` followed by one ``torch.save``
payload (a dict)::

    {"format": "fastvae-checkpoint", "format_version": 1,
     "model_class": "SLCVAE", "model_config": {...}, "model_state": {...},
     "optimizers": {name: optimizer.state_dict()}, "step": int, "epoch": int,
     "extra": dict, "rng": {"torch": ByteTensor, "python": random.getstate(),
                            "numpy": ... or None, "cuda": [...] or None}}

The payload is unpickled (``weights_only=False``, since ``extra`` and the RNG
states are plain Python objects) only after the marker has been checked, so
only files this module wrote are ever unpickled in full.
"""

import io
import os
import random
import sys
import zipfile
from typing import Any, Callable, Dict, Mapping, Optional, Union

import torch

from fastvae._files import atomic_write, remove_stale_temps
from fastvae.models.registry import model_classes

__all__ = ["save_checkpoint", "load_checkpoint", "MAGIC", "FORMAT", "FORMAT_VERSION"]

MAGIC = b"FASTVAE-CKPT\x00v1\n"
FORMAT = "fastvae-checkpoint"
FORMAT_VERSION = 1


def _rng_state():
    numpy = sys.modules.get("numpy")  # only if something already imported it
    cuda = None
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda = torch.cuda.get_rng_state_all()
    return {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": None if numpy is None else numpy.random.get_state(),
        "cuda": cuda,
    }


def _set_rng_state(rng):
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    if rng.get("numpy") is not None:
        import numpy

        numpy.random.set_state(rng["numpy"])
    cuda = rng.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def _check_optimizers(optimizers):
    if optimizers is None:
        return {}
    if not isinstance(optimizers, dict):
        raise TypeError(f"optimizers must be a dict name -> torch.optim.Optimizer, got {type(optimizers).__name__}")
    for name, opt in optimizers.items():
        if not isinstance(name, str):
            raise TypeError(f"optimizer names must be strings, got {name!r}")
        if not hasattr(opt, "state_dict") or not hasattr(opt, "load_state_dict"):
            raise TypeError(f"optimizers[{name!r}] is not an optimizer: {type(opt).__name__}")
    return optimizers


def save_checkpoint(
    path: Union[str, "os.PathLike[str]"],
    *,
    model: torch.nn.Module,
    optimizers: Mapping[str, torch.optim.Optimizer],
    step: int,
    epoch: int,
    extra: Optional[Mapping[str, Any]] = None,
) -> str:
    """Write a checkpoint to ``path`` atomically.

    The payload goes to a temporary file in the same directory, which is
    fsync'ed and then ``os.replace``'d over ``path``
    (:func:`fastvae._files.atomic_write`): an exception or a
    KeyboardInterrupt at any point leaves the previous file at ``path``
    untouched, and the temporary file is removed; one that a killed process
    left behind is removed by the next save or load in that folder. The
    file's mode follows the umask, as ``open()``'s would.

    ``model``: a fastvae model (has ``.config``); ``optimizers``: dict name ->
    optimizer; ``step``, ``epoch``: ints; ``extra``: a dict of anything
    picklable (e.g. a schedule's ``to_dict()``). Also stores the torch CPU,
    python ``random`` (and numpy / CUDA, when in use) RNG states.
    """
    config = getattr(model, "config", None)
    if not isinstance(config, dict):
        raise TypeError(f"model must be a fastvae model with a .config dict, got {type(model).__name__}")
    optimizers = _check_optimizers(optimizers)
    for name, value in (("step", step), ("epoch", epoch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    if extra is not None and not isinstance(extra, dict):
        raise TypeError(f"extra must be a dict or None, got {type(extra).__name__}")

    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_class": type(model).__name__,
        "model_config": dict(config),
        "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()},
        "step": int(step),
        "epoch": int(epoch),
        "extra": dict(extra or {}),
        "rng": _rng_state(),
    }
    def write(f):
        f.write(MAGIC)
        torch.save(payload, f)

    return atomic_write(os.fspath(path), write)


def _read(path):
    path = os.fspath(path)
    remove_stale_temps(os.path.dirname(os.path.abspath(path)))  # what a save killed mid-write left
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {path!r}")
    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(MAGIC):
        raise ValueError(f"{path!r} is not a fastvae checkpoint (wrong format marker)")
    body = io.BytesIO(data[len(MAGIC) :])
    try:
        # torch.load does not check the zip records' CRC-32s: a flipped byte in
        # a tensor would load silently. testzip reads every record (~40 ms for 28 MB).
        bad = zipfile.ZipFile(body).testzip()
        if bad is None:
            body.seek(0)
            payload = torch.load(body, map_location="cpu", weights_only=False)
    except Exception as exc:  # BadZipFile, what damaged headers raise (NotImplementedError, zlib.error), a bad pickle
        raise ValueError(f"{path!r} is a corrupt or truncated fastvae checkpoint: {exc}") from None
    if bad is not None:
        raise ValueError(f"{path!r} is a corrupt fastvae checkpoint: its record {bad!r} fails its CRC-32 check")
    keys = ("model_class", "model_config", "model_state", "optimizers", "step", "epoch", "extra", "rng")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or any(k not in payload for k in keys):
        raise ValueError(f"{path!r} is not a fastvae checkpoint (bad payload)")
    if payload.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path!r} has checkpoint format version {payload.get('format_version')!r}; "
                         f"this fastvae reads version {FORMAT_VERSION}")
    return path, payload


def load_checkpoint(
    path: Union[str, "os.PathLike[str]"],
    model: Optional[torch.nn.Module] = None,
    optimizers: Optional[Mapping[str, torch.optim.Optimizer]] = None,
    restore_rng: bool = True,
    backend: Optional[str] = None,
    check_extra: Optional[Callable[[Dict[str, Any]], Any]] = None,
) -> Dict[str, Any]:
    """Restore a checkpoint written by :func:`save_checkpoint`.

    ``model``: restored in place (its class must match the saved one); when
    ``None`` the model is rebuilt from the saved class name and config
    (``backend`` overrides the saved backend). ``optimizers``: dict name ->
    optimizer, restored in place; its names must equal the saved ones (pass
    ``None`` to skip the optimizers). ``restore_rng``: also restore the RNG
    states, for an exact resume. ``check_extra``: called with the saved
    ``extra`` before anything is restored; raise in it to refuse the
    checkpoint with ``model``, ``optimizers`` and the RNG untouched.

    Returns ``{"model", "step", "epoch", "extra"}``. Raises
    ``FileNotFoundError`` for a missing file and ``ValueError`` (naming
    ``path``) for a corrupt, truncated or foreign file or a mismatch.
    """
    path, payload = _read(path)
    if check_extra is not None:
        check_extra(payload["extra"])
    name = payload["model_class"]
    if model is None:
        classes = model_classes()
        if name not in classes:
            raise ValueError(f"{path!r} holds an unknown model class {name!r}; known: {sorted(classes)}")
        kwargs = dict(payload["model_config"])
        if backend is not None:
            kwargs["backend"] = backend
        model = classes[name](**kwargs)
    elif type(model).__name__ != name:
        raise ValueError(f"{path!r} holds a {name}, not a {type(model).__name__}")
    # compare first: load_state_dict copies every tensor that fits before it reports the ones that do not
    current, saved_state = model.state_dict(), payload["model_state"]
    misfits = sorted(set(current) ^ set(saved_state))
    misfits += [k for k in current if k in saved_state and tuple(current[k].shape) != tuple(saved_state[k].shape)]
    if misfits:
        raise ValueError(f"{path!r}: the saved {name} weights do not fit the model ({', '.join(misfits[:5])}"
                         f"{', ...' if len(misfits) > 5 else ''}); nothing was restored")
    try:
        model.load_state_dict(payload["model_state"], strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path!r}: the saved {name} weights do not fit the model: {exc}") from None

    if optimizers is not None:
        optimizers = _check_optimizers(optimizers)
        saved = payload["optimizers"]
        if set(saved) != set(optimizers):
            raise ValueError(
                f"{path!r} holds optimizers {sorted(saved)}, but optimizers {sorted(optimizers)} were given"
            )
        for opt_name, opt in optimizers.items():
            try:
                opt.load_state_dict(saved[opt_name])
            except (ValueError, KeyError, RuntimeError) as exc:
                raise ValueError(f"{path!r}: optimizer {opt_name!r} does not fit the saved state: {exc}") from None

    if restore_rng:
        _set_rng_state(payload["rng"])
    return {"model": model, "step": payload["step"], "epoch": payload["epoch"], "extra": payload["extra"]}
