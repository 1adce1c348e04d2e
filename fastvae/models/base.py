"""What every model shares: the batch format, outputs, input checks, save/load."""

import inspect
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, Optional, Type, TypeVar, Union

import torch

from fastvae._files import atomic_write, remove_stale_temps
from fastvae.devices import usable_device
from fastvae.nn import WordEmbedding
from fastvae.ops import _checks
from fastvae.nn.rnn import check_backend

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1

PathLike = Union[str, "os.PathLike[str]"]
Device = Union[str, torch.device]


@dataclass
class Batch:
    """A padded, batch-first batch of token ids (int64).

    target: ``[B, T]`` the sentence to generate, ending with ``<eos>``, padded
        with ``<pad>`` (no ``<sos>``: the decoder adds it).
    target_lengths: ``[B]`` lengths including ``<eos>``, each in ``1..T``.
    context, context_lengths: the same for the conditioning sequence
        (conditional models only; a dialogue context is its utterances joined
        into one sequence).
    """

    target: torch.Tensor
    target_lengths: torch.Tensor
    context: Optional[torch.Tensor] = None
    context_lengths: Optional[torch.Tensor] = None

    def to(self, device: Device) -> "Batch":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Batch(move(self.target), move(self.target_lengths), move(self.context), move(self.context_lengths))


@dataclass
class ModelOutput:
    """Batch means of one training step's terms (``loss`` is what to backpropagate).

    nll: mean negative log-likelihood per sentence; kl: mean KL(q || p) per
    sentence (unweighted); label: mean ``||z - z_label||^2`` (SLCVAE); bow:
    mean bag-of-words NLL per sentence (CVAE with ``bow=True``).
    """

    loss: torch.Tensor
    nll: torch.Tensor
    kl: Optional[torch.Tensor] = None
    label: Optional[torch.Tensor] = None
    bow: Optional[torch.Tensor] = None


SPECIAL_IDS = ("pad_id", "unk_id", "sos_id", "eos_id")
SIZES = ("embed_dim", "hidden_size", "num_layers", "latent_size", "prior_hidden_size", "bow_hidden_size")


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def check_config(config):
    """Sizes and special token ids of a model's constructor arguments (named ValueError/TypeError)."""
    V = config["vocab_size"]
    if not _is_int(V) or V < 1:
        raise ValueError(f"vocab_size must be a positive integer, got {V!r}")
    for name in SIZES:
        value = config.get(name)
        if value is not None and (not _is_int(value) or value < 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    for name in ("word_dropout", "embed_dropout"):
        value = config.get(name, 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    for name in SPECIAL_IDS:
        value = config[name]
        if not _is_int(value) or not 0 <= value < V:
            raise ValueError(f"{name} must be a token id in [0, vocab_size={V}), got {value!r}")


_FLOAT32_MAX = torch.finfo(torch.float32).max


def check_weight(name, value):
    """A loss weight: a real number in [0, float32's largest] (Python number or one-element tensor).

    Returns a float. The upper bound keeps a weight such as 1e300, finite as a
    Python float, from turning into inf (and the loss into NaN) in float32.
    """
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.dtype == torch.bool:
        value = value.item()
    value = _checks.nonneg_number(name, value)
    if value > _FLOAT32_MAX:
        raise ValueError(f"{name} must be at most {_FLOAT32_MAX:.4g} (float32's largest number), got {value:g}")
    return value


def check_tokens(name, tokens, lengths, vocab_size):
    """``tokens [B, T]`` int64 ids in ``[0, vocab_size)``, ``lengths [B]`` in ``1..T``; returns CPU lengths."""
    if not isinstance(tokens, torch.Tensor):
        raise TypeError(f"{name} must be a tensor of token ids, got {type(tokens).__name__}")
    if tokens.dtype != torch.int64:
        raise TypeError(f"{name} must be int64 token ids, got dtype {tokens.dtype}")
    if tokens.dim() != 2:
        raise ValueError(f"{name} must be [batch, time], got shape {tuple(tokens.shape)}")
    B, T = tokens.shape
    if B == 0 or T == 0:
        raise ValueError(f"{name} is empty (shape {tuple(tokens.shape)}): a batch needs at least one token")
    lo, hi = int(tokens.min()), int(tokens.max())
    if lo < 0 or hi >= vocab_size:
        bad = lo if lo < 0 else hi
        raise ValueError(f"{name} holds token id {bad}, outside the vocabulary [0, {vocab_size})")
    lengths_name = f"{name}_lengths"
    if not isinstance(lengths, torch.Tensor) or lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise TypeError(f"{lengths_name} must be an integer tensor")
    if lengths.shape != (B,):
        raise ValueError(f"{lengths_name} must have shape ({B},) (one per sequence of {name}), got {tuple(lengths.shape)}")
    lengths = lengths.to("cpu", torch.int64)
    if int(lengths.min()) < 1 or int(lengths.max()) > T:
        raise ValueError(f"{lengths_name} must lie in 1..{T} (the padded length of {name}), got {lengths.tolist()}")
    return lengths


@contextmanager
def evaluating(model):
    """``model.eval()`` and ``torch.no_grad()`` inside the block; the model's train/eval mode is restored after.

    Generation and evaluation run in it, so dropout never reaches a decode
    whatever mode the caller left the model in.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


ModelT = TypeVar("ModelT", bound="BaseModel")


class BaseModel(torch.nn.Module):
    """Stores its constructor arguments so ``save_pretrained``/``from_pretrained`` can rebuild it."""

    def _store_config(self, local_vars):
        params = inspect.signature(type(self).__init__).parameters
        self.config = {name: local_vars[name] for name in params if name != "self"}
        check_config(self.config)
        self.backend = check_backend(self.config["backend"])

    def _make_embedding(self):
        """The token embedding every part shares (word dropout never touches <sos>/<pad>)."""
        cfg = self.config
        return WordEmbedding(
            cfg["vocab_size"],
            cfg["embed_dim"],
            cfg["pad_id"],
            cfg["unk_id"],
            keep_ids=(cfg["sos_id"],),
            word_dropout=cfg["word_dropout"],
            dropout=cfg["embed_dropout"],
        )

    # ---------------------------------------------------------------- inputs

    def _decoder_io(self, batch):
        """Decoder inputs ``<sos> x_1 .. x_{n-1}`` and targets ``x_1 .. <eos>`` of ``batch.target``."""
        target = batch.target
        sos = torch.full_like(target[:, :1], self.config["sos_id"])
        return torch.cat([sos, target[:, :-1]], dim=1), target

    def _check_batch(self, batch, conditional):
        if not isinstance(batch, Batch):
            raise TypeError(f"batch must be a fastvae.models.Batch, got {type(batch).__name__}")
        V = self.config["vocab_size"]
        target_lengths = check_tokens("target", batch.target, batch.target_lengths, V)
        if not conditional:
            return target_lengths, None
        if batch.context is None or batch.context_lengths is None:
            raise ValueError(f"{type(self).__name__} needs batch.context and batch.context_lengths")
        context_lengths = check_tokens("context", batch.context, batch.context_lengths, V)
        if batch.context.shape[0] != batch.target.shape[0]:
            raise ValueError(
                f"context and target must have the same batch size, got {batch.context.shape[0]} and {batch.target.shape[0]}"
            )
        return target_lengths, context_lengths

    # ------------------------------------------------------------- save/load

    def save_pretrained(self, directory: PathLike) -> None:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` (atomically per file)."""
        from safetensors.torch import save

        if os.path.exists(directory) and not os.path.isdir(directory):
            raise ValueError(f"directory {os.fspath(directory)!r} is a file; save_pretrained writes a folder")
        os.makedirs(directory, exist_ok=True)
        config = {"format_version": FORMAT_VERSION, "model": type(self).__name__, "config": self.config}
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        atomic_write(os.path.join(directory, WEIGHTS_NAME), lambda f: f.write(save(state, metadata={"format": "pt"})))
        atomic_write(os.path.join(directory, CONFIG_NAME), _json_writer(config), binary=False)

    @classmethod
    def from_pretrained(
        cls: Type[ModelT], directory: PathLike, backend: Optional[str] = None, map_location: Device = "cpu"
    ) -> ModelT:
        """Rebuild a model saved by ``save_pretrained`` (optionally on the other backend), in eval mode.

        Call ``.train()`` on it to train further (the Trainer does so itself).
        """
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


def model_classes() -> Dict[str, Type[BaseModel]]:
    """The public fastvae model classes by name (``"SLCVAE": SLCVAE``, ...)."""
    found, todo = {}, list(BaseModel.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if not cls.__name__.startswith("_"):
            found[cls.__name__] = cls
    return found


def read_config(config_path):
    """``(class name, constructor arguments)`` of a ``config.json`` written by ``save_pretrained``.

    Every error is a ValueError naming the file and the key at fault.
    """
    try:
        with open(config_path, encoding="utf-8") as f:
            saved = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(f"{config_path} is corrupt: not a JSON file ({exc})") from None
    if not isinstance(saved, dict):
        raise ValueError(f"{config_path} is corrupt: it must hold a JSON object, not a {type(saved).__name__}")
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


def _json_writer(obj):
    def write(f):
        f.write(json.dumps(obj, indent=2, sort_keys=True) + "\n")

    return write
