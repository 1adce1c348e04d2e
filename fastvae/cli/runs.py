"""Run directories: what ``fastvae train`` writes and what the other commands read.

A run directory holds ``run.json`` (model class and config, corpus, vocabulary
and training settings), ``vocab.json``, ``model/`` (the best model, a folder
that stands alone: weights, config, vocabulary, tokenizer and model card),
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
from fastvae._files import remove_stale_temps
from fastvae.devices import usable_device
from fastvae.train.model_folder import is_model_folder, load_model_folder
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


def check_new_run_dir(run_dir, resumable=True, flag="--run-dir"):
    """A new run may go into ``run_dir``: absent, or a folder without another run's files in it.

    resumable: whether the command has ``--resume`` to advise (``fastvae demo`` has not). flag: the option
    that chose ``run_dir``, named in the errors.
    """
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise ValueError(f"{flag} {run_dir!r} is a file, not a folder")
    held = [name for name in (CHECKPOINT_NAME, RUN_FILE, MODEL_DIR) if os.path.exists(os.path.join(run_dir, name))]
    if held and held[0] == CHECKPOINT_NAME:
        advice = "pass --resume to continue it or choose a new" if resumable else "remove it or choose another"
        raise ValueError(f"{run_dir!r} already holds a run; {advice} {flag}")
    if held:  # a run without a checkpoint to resume from (stopped before its first save, or model/ copied in)
        raise ValueError(f"{run_dir!r} already holds {held[0]} of another run; remove it or choose a new {flag}")


def read_run(run_dir):
    """``run.json`` of ``run_dir``, checked: every error names the file and the key at fault."""
    path = os.path.join(run_dir, RUN_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{run_dir!r} is not a fastvae run directory: {RUN_FILE} is missing")
    try:
        with open(path, encoding="utf-8") as f:
            run = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(f"{path} is corrupt: not a JSON file ({exc})") from None
    if not isinstance(run, dict):
        raise ValueError(f"{path} is corrupt: it must hold a JSON object, not a {type(run).__name__}")
    for key in ("model", "corpus"):
        if key not in run:
            raise ValueError(f"{path} is corrupt: key {key!r} is missing")
    model, corpus = run["model"], run["corpus"]
    if not isinstance(model, str) or model not in MODELS:
        raise ValueError(f"{path}: key 'model' names an unknown model {model!r} (one of {', '.join(sorted(MODELS))})")
    if not isinstance(corpus, dict) or not isinstance(corpus.get("name"), str):
        raise ValueError(f"{path}: key 'corpus' must be an object with a 'name'")
    try:
        CorpusSpec.from_dict(corpus)
    except (TypeError, ValueError) as exc:  # a key CorpusSpec does not know, an unknown corpus name, ...
        raise ValueError(f"{path}: key 'corpus' is invalid: {exc}") from None
    max_length = run.get("max_length")
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2):
        raise ValueError(f"{path}: key 'max_length' must be an integer >= 2 or null, got {max_length!r}")
    return run


def saved_train_config(run, run_dir):
    """The TrainConfig dict of ``run`` (read by :func:`read_run`), checked: errors name run.json and the key."""
    from fastvae.train import TrainConfig

    path = os.path.join(run_dir, RUN_FILE)
    saved = run.get("train")
    if not isinstance(saved, dict):
        raise ValueError(f"{path}: key 'train' must be an object of training settings, got {saved!r}")
    try:
        return TrainConfig.from_dict(saved).check().to_dict()
    except (TypeError, ValueError) as exc:
        field, _, rest = str(exc).partition(" ")
        if field in saved:  # "lr must be a finite number > 0, got -1.0"
            raise ValueError(f"{path}: key 'train.{field}' {rest}") from None
        raise ValueError(f"{path}: key 'train' is invalid: {exc}") from None


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
    if not os.path.isfile(os.path.join(run_dir, RUN_FILE)) and is_model_folder(run_dir):
        raise ValueError(f"{run_dir!r} is a model folder, not a run directory: this command needs the run "
                         f"({RUN_FILE}: its corpus, metrics.csv, checkpoint.pt); pass the folder above it")
    remove_stale_temps(run_dir)  # what a save killed mid-write left
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
    vocab = Vocab.load(os.path.join(run_dir, VOCAB_FILE), tokenizer=tokenizer_name(run))
    if len(vocab) != model.config["vocab_size"]:
        raise ValueError(f"{run_dir!r}: vocab.json has {len(vocab)} tokens, the model {model.config['vocab_size']}")
    return model, vocab, run


def load_model(path, device="cpu"):
    """``(model, vocab)`` in eval mode from a run directory (its best model), or a model folder on its own.

    The vocabulary carries its tokenizer (``vocab.tokenize``): the one the model was trained with.
    """
    path = os.fspath(path)
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, RUN_FILE)) and is_model_folder(path):
        return load_model_folder(path, device=usable_device(device))
    return load_run(path, device=device)[:2]


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


def tokenizer_name(run):
    """How the run's corpus was tokenized: ``"whitespace"`` for PTB (it comes tokenized), else ``"fastvae"``."""
    return "whitespace" if run["corpus"]["name"] == "ptb" else "fastvae"


def tokenizer(run):
    """The tokenizer function of the run's corpus (:func:`tokenizer_name`)."""
    from fastvae.data.tokenizer import get_tokenizer

    return get_tokenizer(tokenizer_name(run))


def data_description(spec, max_length=None):
    """What a model card says the model was trained on: the corpus and the options that chose its examples."""
    out = {"corpus": spec.name}
    for key in ("train_file", "valid_file"):
        if getattr(spec, key):
            out[key.replace("_", " ")] = os.path.basename(getattr(spec, key))
    for key, label in (("max_examples", "at most examples per split"), ("bible_max_length", "longest verse (tokens)"),
                       ("context_window", "context (utterances before the response)")):
        if getattr(spec, key) is not None:
            out[label] = getattr(spec, key)
    if max_length is not None:
        out["sequences cut to (tokens)"] = max_length
    return out


def corpus_spec(run, data_dir=None):
    """The run's corpus; ``data_dir`` (e.g. ``--data-dir``), when given, replaces the folder it was read from.

    ``fastvae train`` stores the absolute data root of dailydialog/ptb runs; run.json files of older
    versions hold ``data_dir: null``, read as today: ``$FASTVAE_DATA``, else ``../shared/data``.
    ``run`` comes from :func:`read_run`, which has checked the corpus settings.
    """
    spec = CorpusSpec.from_dict(run["corpus"])
    return dataclasses.replace(spec, data_dir=data_dir) if data_dir else spec
