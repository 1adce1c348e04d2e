"""A model folder that stands alone, in the layout of the Hugging Face Hub.

``save_model_folder(directory, model, vocab, ...)`` writes::

    config.json            the model class and its constructor arguments (BaseModel.save_pretrained)
    model.safetensors      the weights
    vocab.json             the vocabulary (Vocab.save_pretrained)
    tokenizer_config.json  the tokenizer and the special tokens
    README.md              the model card: what it was trained on, its metrics, how to use it

so the folder can be copied to a colleague or pushed to the Hub as it is, and
``load_model_folder(directory)`` (or ``fastvae generate directory``) gets the
model and its vocabulary back from it alone::

    model = fastvae.SLCVAE.from_pretrained("runs/demo/slcvae/model")
    vocab = fastvae.data.Vocab.from_pretrained("runs/demo/slcvae/model")

A ``model/`` folder written by fastvae 0.1.0 holds only config.json and the
weights, its vocabulary one level up in the run directory: it still loads,
from there.
"""

import json
import math
import os
from typing import Any, Mapping, Optional, Tuple, Union

import torch

from fastvae._files import atomic_write_text
from fastvae._version import __version__
from fastvae.data.sources import corpus_tokenizer
from fastvae.data.vocab import TOKENIZER_CONFIG_NAME, VOCAB_NAME, Vocab
from fastvae.models.base import BaseModel
from fastvae.models.generation import SAMPLING_TEMPERATURE, SAMPLING_TOP_P
from fastvae.models.registry import model_classes, model_name
from fastvae.models.saving import CONFIG_NAME, WEIGHTS_NAME, read_config
from fastvae.run_layout import RUN_FILE, VOCAB_FILE

PathLike = Union[str, "os.PathLike[str]"]

CARD_NAME = "README.md"
LEGACY_VOCAB = os.path.join(os.pardir, VOCAB_FILE)  # fastvae 0.1.0: the run directory's vocab.json


def is_model_folder(path: PathLike) -> bool:
    """Whether ``path`` is a folder holding a saved model (``config.json`` and ``model.safetensors``)."""
    return all(os.path.isfile(os.path.join(path, name)) for name in (CONFIG_NAME, WEIGHTS_NAME))


def save_model_folder(
    directory: PathLike,
    model: BaseModel,
    vocab: Vocab,
    trained_on: Optional[Mapping[str, Any]] = None,
    metrics: Optional[Mapping[str, Mapping[str, float]]] = None,
    training: Optional[Mapping[str, Any]] = None,
) -> PathLike:
    """Write ``model``, ``vocab`` (with its tokenizer) and a model card into ``directory``.

    trained_on: what the model learned from, a dict of JSON-able values
        (e.g. ``{"corpus": "bible", "training examples": 10356}``).
    metrics: ``{title: {name: number}}``, e.g. ``{"validation (epoch 3)":
        {"NLL": 41.2, "KL": 3.1}}``; each title becomes a table of the card.
    training: the training settings worth repeating (a dict).
    Each file is written atomically; returns ``directory``.
    """
    if not isinstance(vocab, Vocab):
        raise TypeError(f"vocab must be a fastvae.data.Vocab, got {type(vocab).__name__}")
    if len(vocab) != model.config["vocab_size"]:
        raise ValueError(f"vocab has {len(vocab)} tokens but the model's vocab_size is {model.config['vocab_size']}")
    model.save_pretrained(directory)
    vocab.save_pretrained(directory)
    card = model_card(model, vocab, trained_on or {}, metrics or {}, training or {})
    atomic_write_text(os.path.join(directory, CARD_NAME), card)
    return directory


def load_model_folder(
    directory: PathLike, backend: Optional[str] = None, device: Union[str, torch.device] = "cpu"
) -> Tuple[BaseModel, Vocab]:
    """``(model, vocab)`` of a model folder, the model in eval mode on ``device``.

    The model class is read from ``config.json``; the vocabulary and its
    tokenizer from ``vocab.json`` / ``tokenizer_config.json`` (a fastvae
    0.1.0 ``model/`` folder: from its run directory's ``vocab.json``).
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"no model folder at {directory!r}")
    if not is_model_folder(directory):
        missing = [n for n in (CONFIG_NAME, WEIGHTS_NAME) if not os.path.isfile(os.path.join(directory, n))]
        raise FileNotFoundError(f"{directory!r} is not a saved fastvae model: {', '.join(missing)} missing")
    name, _ = read_config(os.path.join(directory, CONFIG_NAME))
    model = model_classes()[name].from_pretrained(directory, backend=backend, map_location=device)
    vocab = load_folder_vocab(directory)
    if len(vocab) != model.config["vocab_size"]:
        raise ValueError(f"{directory!r}: the vocabulary has {len(vocab)} tokens, the model {model.config['vocab_size']}")
    return model, vocab


def load_folder_vocab(directory: PathLike) -> Vocab:
    """The vocabulary of a model folder (or, for a fastvae 0.1.0 ``model/``, of the run directory above it)."""
    if os.path.isfile(os.path.join(directory, VOCAB_NAME)):
        return Vocab.from_pretrained(directory)
    legacy = os.path.join(directory, LEGACY_VOCAB)
    run_file = os.path.join(directory, os.pardir, RUN_FILE)
    if os.path.isfile(legacy):
        corpus = {}
        if os.path.isfile(run_file):  # its corpus says how it was tokenized (fastvae 0.1.0 read PTB split on spaces)
            try:
                with open(run_file, encoding="utf-8") as f:
                    corpus = json.load(f).get("corpus", {})
            except (OSError, ValueError, AttributeError):
                corpus = {}
        name = corpus.get("name") if isinstance(corpus, dict) else None
        return Vocab.load(legacy, tokenizer=corpus_tokenizer(name))
    raise FileNotFoundError(
        f"{directory!r} holds no vocabulary ({VOCAB_NAME} is missing, and there is none in the folder above it): "
        "save the folder with fastvae.train.save_model_folder, or copy the run's vocab.json into it"
    )


# ---------------------------------------------------------------- the card


def _number(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"


def _cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")  # a "|" would end the table cell


def _table(rows, header=("", "")):
    lines = [f"| {header[0]} | {header[1]} |", "|---|---:|"]
    lines += [f"| {_cell(key)} | {_cell(_number(value))} |" for key, value in rows.items()]
    return "\n".join(lines)


def model_card(model, vocab, trained_on, metrics, training):
    """The text of ``README.md``: Hub metadata (YAML front matter), then what the model is and how to use it."""
    name = type(model).__name__
    cfg = model.config
    tags = ["fastvae", "text-generation", "pytorch", model_name(model)]
    if model.has_latent:
        tags.append("variational-autoencoder")
    sizes = {k: cfg[k] for k in ("vocab_size", "embed_dim", "hidden_size", "latent_size", "num_layers", "bidirectional",
                                 "bow", "label_loss_weight", "label_prior_weight", "word_dropout") if k in cfg}
    sizes["parameters"] = sum(p.numel() for p in model.parameters())
    front = ["---", "library_name: fastvae", "pipeline_tag: text-generation", "tags:"] + [f"- {t}" for t in tags] + ["---"]
    parts = [
        "\n".join(front),
        f"# {name} trained with fastvae {__version__}",
        f"A {model.summary}, saved by fastvae. This folder is all it needs: "
        f"`{CONFIG_NAME}` (class and sizes), `{WEIGHTS_NAME}`, `{VOCAB_NAME}` and `{TOKENIZER_CONFIG_NAME}` "
        f"(tokenizer: `{vocab.tokenizer}`).",
        "## Trained on\n\n" + (_table(trained_on, ("data", "")) if trained_on else "Not recorded."),
    ]
    for title, values in metrics.items():
        parts.append(f"## Metrics: {title}\n\n" + _table(values, ("metric", "value")))
    if training:
        parts.append("## Training settings\n\n" + _table(
            {k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in training.items()}, ("setting", "value")))
    parts.append("## Model\n\n" + _table(sizes, ("argument", "value")))
    if model.is_conditional:
        usage = (
            "```bash\nfastvae generate path/to/this/folder --samples 5 <<< \"an input sentence\"\n```\n\n"
            "```python\nimport torch\nfrom fastvae import " + name + "\nfrom fastvae.data import Vocab\n\n"
            f"model = {name}.from_pretrained(\"path/to/this/folder\")\n"
            "vocab = Vocab.from_pretrained(\"path/to/this/folder\")\n"
            "ids = torch.tensor([vocab.encode_text(\"an input sentence\")])\n"
            "tokens, _ = model.generate(ids, torch.tensor([ids.shape[1]]), num_samples=5, strategy=\"sample\", "
            f"temperature={SAMPLING_TEMPERATURE}, top_p={SAMPLING_TOP_P})\n"
            "print([\" \".join(vocab.decode(t)) for t in tokens[0]])\n```"
        )
    else:
        usage = (
            "```bash\nfastvae sample path/to/this/folder -n 5\n```\n\n"
            "```python\nfrom fastvae import SentenceVAE\nfrom fastvae.data import Vocab\n\n"
            "model = SentenceVAE.from_pretrained(\"path/to/this/folder\")\n"
            "vocab = Vocab.from_pretrained(\"path/to/this/folder\")\n"
            "tokens, _ = model.sample(5)\nprint([\" \".join(vocab.decode(t)) for t in tokens])\n```"
        )
    parts.append("## Use\n\n" + usage)
    return "\n\n".join(parts) + "\n"
