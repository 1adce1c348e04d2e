"""The argument checks of :mod:`fastvae.evaluate` (and :mod:`fastvae.plots`): a TypeError or ValueError naming
the argument before any model runs."""

import torch

from fastvae.data.vocab import Vocab
from fastvae.metrics import check_bleu_formula, check_smoothing
from fastvae.models.registry import check_model as check_registered_model
from fastvae.models.registry import describe


def check_model(model, conditional=False):
    """``model`` is a fastvae model; with ``conditional``, one that conditions on a context (not a SentenceVAE)."""
    check_registered_model(model)
    if conditional and not model.is_conditional:
        raise TypeError(f"model must be a conditional model ({describe('is_conditional')}); a {type(model).__name__} "
                        "has no context to condition on")


def check_dataset(model, dataset):
    """``dataset`` is a non-empty TextDataset that ``model`` can read: sources for a conditional model, and
    the model's vocabulary size."""
    if not hasattr(dataset, "targets") or not hasattr(dataset, "conditional"):
        raise TypeError(f"dataset must be a fastvae.data.TextDataset, got {type(dataset).__name__}")
    if len(dataset) == 0:
        raise ValueError("dataset is empty")
    if model.is_conditional and not dataset.conditional:
        raise ValueError(f"dataset has no sources, but a {type(model).__name__} needs a context for every example")
    vocab_size = model.config["vocab_size"]
    if len(dataset.vocab) != vocab_size:
        raise ValueError(f"dataset's vocabulary has {len(dataset.vocab)} tokens, the model's {vocab_size}")


def check_positive_int(name, value, optional=False):
    """``value`` is an integer >= 1 (or, with ``optional``, None)."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_scoring(bleu_smoothing, bleu_formula, shuffle_seed):
    """The BLEU settings of a generation report (:mod:`fastvae.metrics`) and the seed of its shuffled inputs."""
    check_smoothing(bleu_smoothing)
    check_bleu_formula(bleu_formula)
    if isinstance(shuffle_seed, bool) or not isinstance(shuffle_seed, int):
        raise ValueError(f"shuffle_seed must be an integer, got {shuffle_seed!r}")


def check_generator(generator):
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")


def check_vocab(vocab, dataset):
    """``vocab`` decodes ``dataset``'s ids: a Vocab equal to the one the dataset was encoded with."""
    if not isinstance(vocab, Vocab):
        raise TypeError(f"vocab must be a fastvae.data.Vocab, got {type(vocab).__name__}")
    if getattr(dataset, "vocab", vocab) != vocab:
        raise ValueError("vocab is not the vocabulary dataset was encoded with: its ids would decode to other words")
