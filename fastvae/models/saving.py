"""A model's folder on disk: ``config.json`` (class and constructor arguments) and ``model.safetensors``.

What :meth:`BaseModel.save_pretrained` writes and :meth:`BaseModel.from_pretrained` reads back; every
error names the file and the key at fault.
"""

import os
from typing import Union

from fastvae._files import atomic_write, atomic_write_json, read_json_object, remove_stale_temps
from fastvae.devices import usable_device
from fastvae.models.registry import model_classes
from fastvae.nn.backend import check_backend

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1

PathLike = Union[str, "os.PathLike[str]"]


def save_pretrained(model, directory):
    """Write ``model``'s ``config.json`` and ``model.safetensors`` into ``directory`` (atomically per file)."""
    from safetensors.torch import save

    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ValueError(f"directory {os.fspath(directory)!r} is a file; save_pretrained writes a folder")
    os.makedirs(directory, exist_ok=True)
    config = {"format_version": FORMAT_VERSION, "model": type(model).__name__, "config": model.config}
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(os.path.join(directory, WEIGHTS_NAME), lambda f: f.write(save(state, metadata={"format": "pt"})))
    atomic_write_json(os.path.join(directory, CONFIG_NAME), config)


def from_pretrained(cls, directory, backend=None, map_location="cpu"):
    """A ``cls`` rebuilt from a folder written by :func:`save_pretrained` (optionally on the other backend),
    in eval mode on ``map_location``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not os.path.isdir(directory):
        raise FileNotFoundError(f"no model directory at {directory!r}")
    remove_stale_temps(directory)  # what a save killed mid-write left
    config_path = os.path.join(directory, CONFIG_NAME)
    weights_path = os.path.join(directory, WEIGHTS_NAME)
    for path in (config_path, weights_path):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{directory!r} is not a saved fastvae model: {os.path.basename(path)} is missing")
    name, kwargs = read_config(config_path)
    device = usable_device(map_location, "map_location")
    if name != cls.__name__:
        raise ValueError(f"{directory!r} holds a {name}, not a {cls.__name__}; load it with fastvae.{name}.from_pretrained")
    if backend is not None:
        kwargs["backend"] = check_backend(backend)  # the caller's argument: its error is not the file's
    try:
        model = cls(**kwargs)
    except TypeError as exc:  # an argument the constructor does not take, or one missing
        raise ValueError(f"{config_path}: key 'config' does not fit {cls.__name__}: {exc}") from None
    except ValueError as exc:  # a size or id out of range: "hidden_size must be a positive integer, ..."
        raise ValueError(f"{config_path}: key 'config' holds an invalid value: {exc}") from None
    try:
        state = load_file(weights_path, device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"{weights_path} is corrupt: {exc}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{weights_path} does not match the {cls.__name__} in {CONFIG_NAME}: {exc}") from None
    return model.to(device).eval()


def read_config(config_path):
    """``(class name, constructor arguments)`` of a ``config.json`` written by ``save_pretrained``.

    Every error is a ValueError naming the file and the key at fault.
    """
    saved = read_json_object(config_path)
    version = saved.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{config_path} has format_version {version!r} (key 'format_version'); this fastvae reads version {FORMAT_VERSION} "
            "(a model saved by another fastvae version, or not a fastvae config)"
        )
    name, kwargs = saved.get("model"), saved.get("config")
    known = model_classes()
    if not isinstance(name, str) or name not in known:
        raise ValueError(f"{config_path}: key 'model' names an unknown model {name!r} "
                         f"(a fastvae config names one of {', '.join(sorted(known))})")
    if not isinstance(kwargs, dict):
        raise ValueError(f"{config_path}: key 'config' must be an object of {name}'s arguments, got {kwargs!r}")
    return name, dict(kwargs)
