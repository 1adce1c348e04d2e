"""Input checks of the models: constructor arguments, loss weights and token batches (named ValueError/TypeError)."""

import torch

from fastvae.ops import _checks

SPECIAL_IDS = ("pad_id", "unk_id", "sos_id", "eos_id")
SIZES = ("embed_dim", "hidden_size", "num_layers", "latent_size", "prior_hidden_size", "bow_hidden_size")

_FLOAT32_MAX = torch.finfo(torch.float32).max


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
