"""Run directories: reading what ``fastvae train`` wrote (run.json, the model, the vocabulary) and refusing
outputs that would overwrite it. The file names are :mod:`fastvae.run_layout`'s."""

import os

from fastvae._files import read_json_object, remove_stale_temps
from fastvae.data import Vocab
from fastvae.data.sources import CorpusSpec, corpus_tokenizer
from fastvae.devices import usable_device
from fastvae.models.registry import model_class, model_names
from fastvae.run_layout import CHECKPOINT_FILE, MODEL_DIR, RUN_FILE, RUN_OUTPUTS, VOCAB_FILE, in_run
from fastvae.train.checkpoint import load_checkpoint
from fastvae.train.config import TrainConfig
from fastvae.train.model_folder import is_model_folder, load_model_folder


def check_output_path(path, flag, run_dir=None):
    """Refuse ``flag``'s output ``path`` before any work: not a directory, its folder creatable,
    and not one of the files ``fastvae train`` wrote into ``run_dir`` (which it would destroy)."""
    if os.path.isdir(path):
        raise ValueError(f"{flag}: {path} is a directory, not a file path")
    if run_dir is not None:
        target = os.path.realpath(path)
        for name in RUN_OUTPUTS:
            own = os.path.realpath(in_run(run_dir, name))
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
    held = [name for name in (CHECKPOINT_FILE, RUN_FILE, MODEL_DIR) if os.path.exists(in_run(run_dir, name))]
    if held and held[0] == CHECKPOINT_FILE:
        advice = "pass --resume to continue it or choose a new" if resumable else "remove it or choose another"
        raise ValueError(f"{run_dir!r} already holds a run; {advice} {flag}")
    if held:  # a run without a checkpoint to resume from (stopped before its first save, or model/ copied in)
        raise ValueError(f"{run_dir!r} already holds {held[0]} of another run; remove it or choose a new {flag}")


def read_run(run_dir):
    """``run.json`` of ``run_dir``, checked: every error names the file and the key at fault."""
    path = in_run(run_dir, RUN_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{run_dir!r} is not a fastvae run directory: {RUN_FILE} is missing")
    run = read_json_object(path)
    for key in ("model", "corpus"):
        if key not in run:
            raise ValueError(f"{path} is corrupt: key {key!r} is missing")
    model, corpus = run["model"], run["corpus"]
    if not isinstance(model, str) or model not in model_names():
        raise ValueError(f"{path}: key 'model' names an unknown model {model!r} (one of {', '.join(sorted(model_names()))})")
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
    path = in_run(run_dir, RUN_FILE)
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
    if not os.path.isfile(in_run(run_dir, RUN_FILE)) and is_model_folder(run_dir):
        raise ValueError(f"{run_dir!r} is a model folder, not a run directory: this command needs the run "
                         f"({RUN_FILE}: its corpus, metrics.csv, checkpoint.pt); pass the folder above it")
    remove_stale_temps(run_dir)  # what a save killed mid-write left
    run = read_run(run_dir)
    if latest:
        path = in_run(run_dir, CHECKPOINT_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{run_dir!r} has no {CHECKPOINT_FILE} (it is written during training)")
        model = load_checkpoint(path, restore_rng=False, backend=backend)["model"]
    else:
        model_dir = in_run(run_dir, MODEL_DIR)
        if not os.path.isdir(model_dir):
            raise FileNotFoundError(f"{run_dir!r} has no trained model yet ({MODEL_DIR}/ is written after the first epoch)")
        model = model_class(run["model"]).from_pretrained(model_dir, backend=backend)
    model = model.to(device).eval()
    vocab = Vocab.load(in_run(run_dir, VOCAB_FILE), tokenizer=tokenizer_name(run))
    if len(vocab) != model.config["vocab_size"]:
        raise ValueError(f"{run_dir!r}: vocab.json has {len(vocab)} tokens, the model {model.config['vocab_size']}")
    return model, vocab, run


def load_model(path, device="cpu"):
    """``(model, vocab)`` in eval mode from a run directory (its best model), or a model folder on its own.

    The vocabulary carries its tokenizer (``vocab.tokenize``): the one the model was trained with.
    """
    path = os.fspath(path)
    if os.path.isdir(path) and not os.path.isfile(in_run(path, RUN_FILE)) and is_model_folder(path):
        return load_model_folder(path, device=usable_device(device))
    return load_run(path, device=device)[:2]


def load_latest(run_dir):
    """``(model, vocab)`` with the newest weights: ``checkpoint.pt``'s (e.g. after a time or step limit), in eval mode."""
    return load_run(run_dir, latest=True)[:2]


def load_best_or_latest(run_dir):
    """``(model, vocab)``: the best model by validation loss, or the newest weights when no epoch finished."""
    if os.path.isdir(in_run(run_dir, MODEL_DIR)):
        return load_run(run_dir)[:2]
    return load_latest(run_dir)


def tokenizer_name(run):
    """How the run's corpus was tokenized (:func:`fastvae.data.sources.corpus_tokenizer`)."""
    return corpus_tokenizer(run["corpus"]["name"])
