"""Run directories: what ``fastvae train`` writes and what the other commands read.

A run directory holds ``run.json`` (model class and config, corpus, vocabulary
and training settings), ``vocab.json``, ``model/`` (the best model),
``checkpoint.pt`` (for ``--resume``), ``metrics.csv``, ``tb/`` and the plots.
"""

import argparse
import dataclasses
import json
import os

import torch

from fastvae.data import TextDataset, Vocab
from fastvae.data.sources import CorpusSpec, load_corpus, target_sentences
from fastvae.models import CVAE, SLCVAE, Seq2Seq, SentenceVAE
from fastvae.models.generation import DecodeOptions
from fastvae.devices import usable_device
from fastvae.train.trainer import CHECKPOINT_NAME

RUN_FILE = "run.json"
VOCAB_FILE = "vocab.json"
MODEL_DIR = "model"

MODELS = {"sentence-vae": SentenceVAE, "cvae": CVAE, "slcvae": SLCVAE, "seq2seq": Seq2Seq}
CLASS_TO_NAME = {cls.__name__: name for name, cls in MODELS.items()}


def add_threads_option(parser):
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")


def seed_int(text):
    """argparse type of ``--seed``: an integer torch.manual_seed takes (64 bits)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if not -(2**63) <= value < 2**64:
        raise argparse.ArgumentTypeError(f"{value} does not fit in 64 bits")
    return value


def decode_options(args, strategy):
    """The decoding flags (``--max-length``, ``--temperature``, ...) as checked DecodeOptions, before any model loads."""
    return DecodeOptions(strategy, args.max_length, args.temperature, args.top_k, args.top_p, args.beam_size).check()


def set_threads(threads):
    """Apply ``--threads`` (None: leave torch's setting)."""
    if threads is None:
        return
    if threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)


RUN_OUTPUTS = (RUN_FILE, VOCAB_FILE, CHECKPOINT_NAME, MODEL_DIR, "metrics.csv", "tb")


def check_output_path(path, flag, run_dir=None):
    """Refuse ``flag``'s output ``path`` before any work: not a directory, its folder creatable,
    and not one of the files ``fastvae train`` wrote into ``run_dir`` (which it would destroy)."""
    if os.path.isdir(path):
        raise ValueError(f"{flag}: {path} is a directory, not a file path")
    if run_dir is not None:
        target = os.path.realpath(path)
        for name in RUN_OUTPUTS:
            own = os.path.realpath(os.path.join(run_dir, name))
            if target == own or target.startswith(own + os.sep):
                raise ValueError(f"{flag}: {path} is the run's own {name}; write elsewhere")
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{flag}: cannot create the folder of {path}: {exc.strerror}") from None


def check_new_run_dir(run_dir):
    """A new run may go into ``run_dir``: absent, or a folder without another run's files in it."""
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise ValueError(f"--run-dir {run_dir!r} is a file, not a folder")
    held = [name for name in (CHECKPOINT_NAME, RUN_FILE, MODEL_DIR) if os.path.exists(os.path.join(run_dir, name))]
    if held and held[0] == CHECKPOINT_NAME:
        raise ValueError(f"{run_dir!r} already holds a run; pass --resume to continue it or choose a new --run-dir")
    if held:  # a run without a checkpoint to resume from (stopped before its first save, or model/ copied in)
        raise ValueError(f"{run_dir!r} already holds {held[0]} of another run; remove it or choose a new --run-dir")


def read_run(run_dir):
    path = os.path.join(run_dir, RUN_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{run_dir!r} is not a fastvae run directory: {RUN_FILE} is missing")
    try:
        with open(path, encoding="utf-8") as f:
            run = json.load(f)
        model, corpus = run["model"], run["corpus"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(f"{path} is corrupt: {exc}") from None
    if model not in MODELS:
        raise ValueError(f"{path} is corrupt: unknown model {model!r} (one of {', '.join(sorted(MODELS))})")
    if not isinstance(corpus, dict) or not isinstance(corpus.get("name"), str):
        raise ValueError(f"{path} is corrupt: 'corpus' must be an object with a 'name'")
    return run


def load_run(run_dir, backend=None, device="cpu", latest=False):
    """``(model, vocab, run)`` of a run directory, in eval mode.

    The best model by validation loss (``model/``), or with ``latest=True``
    the newest weights, ``checkpoint.pt``'s (e.g. after a time or step limit,
    or to compare a later epoch with the best one).
    """
    device = usable_device(device)
    run_dir = os.fspath(run_dir)
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"no run directory at {run_dir!r}")
    run = read_run(run_dir)
    if latest:
        from fastvae.train.checkpoint import load_checkpoint

        path = os.path.join(run_dir, CHECKPOINT_NAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{run_dir!r} has no {CHECKPOINT_NAME} (it is written during training)")
        model = load_checkpoint(path, restore_rng=False, backend=backend)["model"]
    else:
        model_dir = os.path.join(run_dir, MODEL_DIR)
        if not os.path.isdir(model_dir):
            raise FileNotFoundError(f"{run_dir!r} has no trained model yet ({MODEL_DIR}/ is written after the first epoch)")
        model = MODELS[run["model"]].from_pretrained(model_dir, backend=backend)
    model = model.to(device).eval()
    vocab = Vocab.load(os.path.join(run_dir, VOCAB_FILE))
    if len(vocab) != model.config["vocab_size"]:
        raise ValueError(f"{run_dir!r}: vocab.json has {len(vocab)} tokens, the model {model.config['vocab_size']}")
    return model, vocab, run


def load_latest(run_dir):
    """``(model, vocab)`` with the newest weights: ``checkpoint.pt``'s (e.g. after a time or step limit), in eval mode."""
    return load_run(run_dir, latest=True)[:2]


def load_best_or_latest(run_dir):
    """``(model, vocab)``: the best model by validation loss, or the newest weights when no epoch finished."""
    if os.path.isdir(os.path.join(run_dir, MODEL_DIR)):
        return load_run(run_dir)[:2]
    return load_latest(run_dir)


def corpus_examples(spec, split, model_name):
    """The split's examples in the form the model reads (targets only for a Sentence-VAE)."""
    examples = load_corpus(spec, split)
    if examples is None:
        return None
    if model_name == "sentence-vae":
        return target_sentences(examples)
    if not spec.conditional:
        raise ValueError(f"--model {model_name} needs (source, target) pairs; the {spec.name!r} corpus has sentences only")
    return examples


def dataset(spec, split, model_name, vocab, max_length):
    examples = corpus_examples(spec, split, model_name)
    return None if examples is None else TextDataset(examples, vocab, max_length=max_length)


def tokenizer(run):
    """How the run's corpus was tokenized (PTB: already tokenized, split on spaces)."""
    from fastvae.data.tokenizer import tokenize

    return str.split if run["corpus"]["name"] == "ptb" else tokenize


def corpus_spec(run, data_dir=None):
    """The run's corpus; ``data_dir`` (e.g. ``--data-dir``), when given, replaces the folder it was read from.

    ``fastvae train`` stores the absolute data root of dailydialog/ptb runs; run.json files of older
    versions hold ``data_dir: null``, read as today: ``$FASTVAE_DATA``, else ``../shared/data``.
    """
    try:
        spec = CorpusSpec.from_dict(run["corpus"])
    except TypeError as exc:  # a key CorpusSpec does not know
        raise ValueError(f"the run's corpus settings (run.json) are corrupt: {exc}") from None
    return dataclasses.replace(spec, data_dir=data_dir) if data_dir else spec
