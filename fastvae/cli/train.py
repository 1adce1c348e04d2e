"""``fastvae train``: a corpus and a model name (or a preset) in, a run directory out."""

import argparse
import os
import sys

from fastvae._files import atomic_write_json
from fastvae.cli import runs
from fastvae.cli.corpus import corpus_examples, corpus_spec, data_description, dataset
from fastvae.cli.options import add_threads_option, seed_int, set_threads
from fastvae.data import Vocab
from fastvae.data.sources import CORPORA, CorpusSpec, data_root
from fastvae.models.conditional import LABEL_LOSSES
from fastvae.models.registry import describe, model_class, model_names
from fastvae.nn.backend import BACKENDS
from fastvae.presets import PRESETS, get_preset
from fastvae.run_layout import CHECKPOINT_FILE, RUN_FILE, VOCAB_FILE, in_run
from fastvae.train import Trainer, TrainConfig, load_checkpoint, seed_everything
from fastvae.train.config import LABEL_WEIGHT_SCHEDULES
from fastvae.train.schedules import SCHEDULES

# model options: (flag, config key, type, help); None = the model's own default
MODEL_OPTIONS = (
    ("--embed-dim", "embed_dim", int, "embedding size"),
    ("--hidden-size", "hidden_size", int, "LSTM hidden size"),
    ("--latent-size", "latent_size", int, "latent size (VAEs)"),
    ("--num-layers", "num_layers", int, "LSTM layers"),
    ("--word-dropout", "word_dropout", float, "probability of replacing a decoder input by <unk>"),
    ("--embed-dropout", "embed_dropout", float, "dropout on embedded tokens"),
    ("--label-loss-weight", "label_loss_weight", float, "SLCVAE: weight of the label term (lambda; see "
     "--label-weight-schedule)"),
    ("--label-prior-weight", "label_prior_weight", float, "SLCVAE: weight of -log p(z_label|c) in the labeling loss (default 0)"),
)

# training options: (flag, TrainConfig field, type, help)
TRAIN_OPTIONS = (
    ("--epochs", "epochs", int, "passes over the training data (default 10)"),
    ("--batch-size", "batch_size", int, "examples per step and process (default 32)"),
    ("--lr", "lr", float, "Adam learning rate (default 1e-3)"),
    ("--label-lr", "label_lr", float, "SLCVAE labeling network's learning rate (default: --lr)"),
    ("--free-bits", "free_bits", float, "KL floor per latent dimension (default 0)"),
    ("--label-weight", "label_weight", float, "SLCVAE lambda (default: the model's --label-loss-weight)"),
    ("--max-grad-norm", "max_grad_norm", float, "gradient clipping norm (default 5; 0 = off)"),
    ("--patience", "patience", int, "early stopping: epochs without a better validation loss (default 3; 0 = off)"),
    ("--log-every", "log_every", int, "steps per training row in metrics.csv (default 50)"),
    ("--valid-batch-size", "valid_batch_size", int, "validation batch size (default 128)"),
    ("--seed", "seed", seed_int, "random seed of the initial weights, the data order, word dropout and the latent noise (default 0)"),
    ("--max-steps", "max_steps", int, "stop (with a checkpoint) after this many steps"),
    ("--max-time", "max_time", float, "stop (with a checkpoint) after this many seconds of training"),
    ("--save-every", "save_every", int, "also checkpoint every N steps"),
    ("--device", "device", str, "cpu or cuda (default cpu)"),
)
# data options: (flag, dest, type, help)
DATA_OPTIONS = (
    ("--max-examples", "max_examples", int, "use only the first N examples of each split"),
    ("--bible-max-length", "bible_max_length", int, "bible: skip verses longer than N tokens"),
    ("--context-window", "context_window", int, "dailydialog: utterances before a response that form its context "
     "(default 5; 1: the previous utterance)"),
    ("--max-length", "max_length", int, "cut every sequence to N tokens (<eos> included)"),
    ("--min-freq", "min_freq", int, "vocabulary: minimum count (default 1)"),
    ("--max-vocab", "max_vocab", int, "vocabulary: at most N tokens, specials included"),
)
# library parameter -> option dest, for the names the error messages use (fastvae.cli._name_flag)
LIBRARY_NAMES = {"k": "kl_k", "x0": "kl_x0", "warmup_steps": "kl_warmup", "cycle_steps": "kl_cycle",
                 "ratio": "kl_ratio", "max_weight": "kl_max", "weight": "kl_max", "max_size": "max_vocab"}
# what a resumed run may change (the rest is read from the run directory)
RESUME_OVERRIDES = ("epochs", "patience", "max_steps", "max_time", "save_every", "log_every", "device",
                    "lr", "label_lr", "max_grad_norm")  # e.g. a lower lr or more clipping after a non-finite loss


def add_parser(sub):
    p = sub.add_parser(
        "train",
        help="train a model on a corpus",
        description="Train SentenceVAE / CVAE / SLCVAE / Seq2Seq. Writes RUN_DIR/{run.json,vocab.json,model/,"
        "checkpoint.pt,metrics.csv,tb/,training_curves.png,latent.png}. Ctrl-C saves a checkpoint and exits; "
        "--resume continues exactly. Multi-process: torchrun --nproc_per_node N -m fastvae train ...",
    )
    p.add_argument("--model", choices=sorted(model_names()), help="which model (required unless --resume or --preset)")
    p.add_argument("--preset", choices=sorted(PRESETS), help="a published setting (fastvae.presets): its model, sizes, "
                   "data, training and evaluation settings; flags given with it override its values (recorded in "
                   "run.json). slcvae-code: the SLCVAE authors' code")
    p.add_argument("--run-dir", required=True, help="output directory")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoint.pt with RUN_DIR's settings")
    data = p.add_argument_group("data")
    data.add_argument("--data", choices=CORPORA, help="corpus (default bible: built in)")
    data.add_argument("--data-dir", help="folder with dailydialog/ and ptb/ (default $FASTVAE_DATA or ../shared/data)")
    data.add_argument("--train-file", help="lines/tsv corpus: training file")
    data.add_argument("--valid-file", help="lines/tsv corpus: validation file")
    data.add_argument("--test-file", help="lines/tsv corpus: test file")
    for flag, _, typ, help_ in DATA_OPTIONS:
        data.add_argument(flag, type=typ, help=help_)
    model = p.add_argument_group("model")
    for flag, _, typ, help_ in MODEL_OPTIONS:
        model.add_argument(flag, type=typ, help=help_)
    model.add_argument("--bidirectional", action=argparse.BooleanOptionalAction,
                       help="bidirectional encoders (default off)")
    model.add_argument("--bow", action=argparse.BooleanOptionalAction,
                       help="CVAE/SLCVAE: add the bag-of-words loss (default off)")
    model.add_argument("--label-loss", choices=LABEL_LOSSES, help="SLCVAE: the label term, l2 (the paper's "
                       "||z - z_label||^2, default) or sigmoid-ce (the authors' code: sigmoid cross-entropy)")
    model.add_argument("--backend", choices=BACKENDS, help="fused (fastvae's ops, default) or reference (their "
                       "plain-PyTorch twins: the same model, slower)")
    train = p.add_argument_group("training")
    for flag, _, typ, help_ in TRAIN_OPTIONS:
        train.add_argument(flag, type=typ, help=help_)
    train.add_argument("--label-weight-schedule", choices=LABEL_WEIGHT_SCHEDULES,
                       help="SLCVAE: kl (default: lambda times the KL weight, the paper's) or constant (the code's)")
    train.add_argument("--kl-schedule", choices=sorted(SCHEDULES), help="KL annealing (default logistic)")
    train.add_argument("--kl-k", type=float, help="logistic: steepness k (default 0.0025)")
    train.add_argument("--kl-x0", type=float, help="logistic: midpoint step x0 (default 2500)")
    train.add_argument("--kl-warmup", type=int, help="linear: steps to reach the full weight")
    train.add_argument("--kl-cycle", type=int, help="cyclical: steps per cycle")
    train.add_argument("--kl-ratio", type=float, help="cyclical: fraction of a cycle spent rising (default 0.5)")
    train.add_argument("--kl-max", type=float, help="the final KL weight (default 1)")
    add_threads_option(train)
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    train.add_argument("--no-tensorboard", action="store_true", help="metrics.csv only")
    train.add_argument("--no-plots", action="store_true", help="no PNG plots at the end")
    p.set_defaults(func=run, library_names=LIBRARY_NAMES)
    return p


def kl_schedule(args, default):
    """The schedule dict from the --kl-* options (``default`` when none is given)."""
    name = args.kl_schedule
    given = {
        "k": args.kl_k,
        "x0": args.kl_x0,
        "warmup_steps": args.kl_warmup,
        "cycle_steps": args.kl_cycle,
        "ratio": args.kl_ratio,
        "max_weight": args.kl_max,
    }
    given = {k: v for k, v in given.items() if v is not None}
    if name is None:
        if not given:
            return default
        name = default["name"]
    accepted = {
        "logistic": ("k", "x0", "max_weight"),
        "linear": ("warmup_steps", "max_weight"),
        "cyclical": ("cycle_steps", "ratio", "max_weight"),
        "constant": ("max_weight",),
    }[name]
    stray = sorted(set(given) - set(accepted))
    if stray:
        raise ValueError(f"--kl-schedule {name} does not take {', '.join('--kl-' + s.split('_')[0] for s in stray)}")
    out = {"name": name, **{k: given[k] for k in accepted if k in given}}
    if default.get("name") == name:  # the flags given change the default schedule's values, the rest stay
        out = {**default, **out}
    if name == "constant":
        kept = default.get("weight", 1.0) if default.get("name") == "constant" else 1.0
        out = {"name": "constant", "weight": given.get("max_weight", kept)}
    if name in ("linear", "cyclical") and ("warmup_steps" if name == "linear" else "cycle_steps") not in out:
        raise ValueError(f"--kl-schedule {name} needs --kl-{'warmup' if name == 'linear' else 'cycle'}")
    return out


def _train_config(args, saved=None, preset=None):
    """The TrainConfig of this call: ``saved`` (a resumed run's), else the preset's or the defaults, then the flags."""
    base = TrainConfig.from_dict(saved) if saved else preset.train_config() if preset else TrainConfig()
    values = base.to_dict()
    for _, key, _, _ in TRAIN_OPTIONS:
        value = getattr(args, key)
        if value is None:
            continue
        if saved is not None and key not in RESUME_OVERRIDES:
            raise ValueError(f"--{key.replace('_', '-')} cannot change on --resume (it is read from the run directory)")
        values[key] = value
    if args.label_weight_schedule is not None:
        if saved is not None:
            raise ValueError("--label-weight-schedule cannot change on --resume (it is read from the run directory)")
        values["label_weight_schedule"] = args.label_weight_schedule
    if saved is None:
        values["kl_schedule"] = kl_schedule(args, values["kl_schedule"])
    elif args.kl_schedule is not None:
        raise ValueError("--kl-schedule cannot change on --resume")
    if values["max_grad_norm"] == 0:
        values["max_grad_norm"] = None
    if values["patience"] == 0:
        values["patience"] = None
    values["progress"] = not args.no_progress
    values["tensorboard"] = not args.no_tensorboard
    values["plots"] = not args.no_plots
    return TrainConfig.from_dict(values).check()


SWITCHES = (("--bidirectional", "bidirectional"), ("--bow", "bow"), ("--label-loss", "label_loss"))


def _model_kwargs(args, cls, model_name, preset=None):
    """The model's constructor arguments: the preset's (those the model takes), then the flags given."""
    accepted = cls.config_names()
    kwargs = preset.model_kwargs(cls) if preset else {}
    flags = [(flag, key) for flag, key, _, _ in MODEL_OPTIONS] + list(SWITCHES)
    for flag, key in flags:
        value = getattr(args, key)
        if value is None:
            continue
        if key not in accepted:
            raise ValueError(f"{flag} does not apply to --model {model_name}")
        kwargs[key] = value
    kwargs["backend"] = args.backend or "fused"
    return kwargs


def _given_settings(args):
    """The model, data and training settings given as flags (option dest -> value): what overrides a preset."""
    dests = [key for _, key, _, _ in MODEL_OPTIONS + DATA_OPTIONS + TRAIN_OPTIONS]
    dests += [key for _, key in SWITCHES]
    dests += ["data", "label_weight_schedule", "kl_schedule", "kl_k", "kl_x0", "kl_warmup", "kl_cycle", "kl_ratio",
              "kl_max", "backend"]
    return {key: getattr(args, key) for key in dests if getattr(args, key) is not None}


def prepare(args, seed, preset=None):
    """``(model, vocab, run)`` of a new run: the model built for the training split's vocabulary.

    preset: a :class:`fastvae.presets.Preset` (``--preset``) whose model, data and model settings apply where
    no flag gives one. The model's initial weights are drawn after ``seed_everything(seed)`` (``--seed``), so
    the same command builds the same model.
    """
    model_name = args.model or (preset.model if preset else None)
    if model_name is None:
        raise ValueError("--model is required (unless --resume or --preset)")
    data_settings = dict(preset.data) if preset else {}
    name = args.data or data_settings.get("data") or "bible"
    _check_applicable(args, model_name, name)

    def setting(key, default=None):  # a flag given, else the preset's value (for the preset's corpus), else default
        value = getattr(args, key)
        if value is not None:
            return value
        if key == "context_window" and name != data_settings.get("data"):
            return default  # the preset's context window is for its own corpus
        return data_settings.get(key, default)

    absolute = lambda path: None if path is None else os.path.abspath(path)  # noqa: E731 (run.json is read from anywhere)
    # dailydialog / ptb: the data root as resolved now (--data-dir, else $FASTVAE_DATA, else ../shared/data),
    # absolute, so that evaluate and --resume find the same data from any folder or shell
    data_dir = absolute(data_root(args.data_dir)) if name in ("dailydialog", "ptb") else absolute(args.data_dir)
    spec = CorpusSpec(
        name=name,
        data_dir=data_dir,
        train_file=absolute(args.train_file),
        valid_file=absolute(args.valid_file),
        test_file=absolute(args.test_file),
        max_examples=args.max_examples,
        bible_max_length=args.bible_max_length,
        context_window=setting("context_window"),
    ).check()
    max_length = setting("max_length")
    if max_length is not None and max_length < 2:
        raise ValueError(f"--max-length must be >= 2, got {max_length}")
    train_examples = corpus_examples(spec, "train", model_name)
    token_lists = [t for ex in train_examples for t in ((ex.source, ex.target) if hasattr(ex, "source") else (ex,))]
    vocab = Vocab.build(token_lists, min_freq=setting("min_freq", 1), max_size=setting("max_vocab"),
                        tokenizer=spec.tokenizer)
    cls = model_class(model_name)
    kwargs = _model_kwargs(args, cls, model_name, preset)
    seed_everything(seed)
    model = cls.for_vocab(vocab, **kwargs)
    run = {"model": model_name, "corpus": spec.to_dict(), "max_length": max_length}
    if preset is not None:
        run["preset"] = {"name": preset.name, "overrides": _given_settings(args)}
    return model, vocab, run


def _check_applicable(args, model_name, data):
    """Flags that the chosen model or corpus would ignore are refused, not dropped in silence."""
    if not model_class(model_name).has_labeling_phase:
        for flag, key in (("--label-weight", "label_weight"), ("--label-lr", "label_lr"),
                          ("--label-weight-schedule", "label_weight_schedule")):
            if getattr(args, key) is not None:
                raise ValueError(f"{flag} does not apply to --model {model_name} "
                                 f"({describe('has_labeling_phase')} only)")
    per_corpus = (("--bible-max-length", "bible_max_length", ("bible",)), ("--data-dir", "data_dir", ("dailydialog", "ptb")),
                  ("--train-file", "train_file", ("lines", "tsv")), ("--valid-file", "valid_file", ("lines", "tsv")),
                  ("--test-file", "test_file", ("lines", "tsv")), ("--context-window", "context_window", ("dailydialog",)))
    for flag, key, corpora in per_corpus:
        if getattr(args, key) is not None and data not in corpora:
            raise ValueError(f"{flag} does not apply to --data {data} (only to {' / '.join(corpora)})")
    for flag, key in (("--valid-file", "valid_file"), ("--test-file", "test_file")):
        path = getattr(args, key)
        if path is not None and not os.path.isfile(path):  # the test file is read only later, by evaluate
            raise ValueError(f"{flag}: no such file: {path}")


def _check_resume_args(args):
    """Model, data and KL options are read from the run directory on --resume: refuse them rather than ignore them."""
    keys = ("model", "preset", "data", "train_file", "valid_file", "test_file", "data_dir", "max_examples",
            "bible_max_length", "context_window", "max_length", "min_freq", "max_vocab", "backend", "kl_k", "kl_x0",
            "kl_warmup", "kl_cycle", "kl_ratio", "kl_max")
    given = [flag for flag, key, _, _ in MODEL_OPTIONS if getattr(args, key) is not None]
    given += ["--" + key.replace("_", "-") for key in keys if getattr(args, key) is not None]
    given += [flag for flag, key in SWITCHES if getattr(args, key) is not None]
    if given:
        raise ValueError(f"{given[0]} cannot change on --resume (it is read from the run directory)")


def run(args):
    set_threads(args.threads)
    run_dir = args.run_dir
    if args.resume:
        _check_resume_args(args)
        saved = runs.read_run(run_dir)
        config = _train_config(args, runs.saved_train_config(saved, run_dir))
        model_name = saved["model"]
        spec = corpus_spec(saved)
        vocab = Vocab.load(in_run(run_dir, VOCAB_FILE), tokenizer=runs.tokenizer_name(saved))
        model = load_checkpoint(in_run(run_dir, CHECKPOINT_FILE), restore_rng=False)["model"]
        run_info = saved
        run_info["train"] = config.to_dict()
    else:
        preset = get_preset(args.preset) if args.preset else None
        config = _train_config(args, preset=preset)
        runs.check_new_run_dir(run_dir)
        model, vocab, run_info = prepare(args, config.seed, preset)
        model_name, spec = run_info["model"], corpus_spec(run_info)
        run_info["train"] = config.to_dict()
    max_length = run_info.get("max_length")
    train_data = dataset(spec, "train", model_name, vocab, max_length)
    valid_data = dataset(spec, "valid", model_name, vocab, max_length)
    trainer = Trainer(model, train_data, valid_data, config, run_dir=run_dir,
                      data_description=data_description(spec, max_length))
    if trainer.dist.is_main:
        os.makedirs(run_dir, exist_ok=True)
        atomic_write_json(in_run(run_dir, RUN_FILE), run_info, allow_nan=False)
        vocab.save(in_run(run_dir, VOCAB_FILE))
        n_params = sum(p.numel() for p in model.parameters())
        print(
            f"{type(model).__name__}: {n_params:,} parameters, vocabulary {len(vocab):,}, "
            f"{len(train_data):,} training / {len(valid_data) if valid_data else 0:,} validation examples"
            + (f", {trainer.dist.world_size} processes" if trainer.dist.enabled else ""),
            flush=True,
        )
    result = trainer.fit(resume=args.resume)
    if trainer.dist.is_main:
        _report(result, run_dir)
    return 130 if result.status == "interrupted" else 0


def _report(result, run_dir):
    lines = {
        "finished": f"finished {result.epoch} epochs",
        "early_stopped": f"early stopping after epoch {result.epoch}",
        "interrupted": f"interrupted at step {result.step}; checkpoint saved",
        "time_limit": f"time limit reached at step {result.step}; checkpoint saved",
        "max_steps": f"step limit reached at step {result.step}; checkpoint saved",
    }
    print(lines[result.status] + f" ({result.seconds:.0f} s)", file=sys.stdout)
    if result.best_valid_loss is not None:
        print(f"best validation loss {result.best_valid_loss:.3f} (epoch {result.best_epoch}); model in {result.model_dir}")
    # the limits are saved in run.json: a plain --resume of a run at its limit trains no further step
    raise_limit = {"max_steps": f" --max-steps N (N > {result.step})",
                   "time_limit": f" --max-time S (S > {result.seconds:.0f})"}.get(result.status, "")
    if result.status in ("interrupted", "time_limit", "max_steps"):
        print(f"continue with: fastvae train --run-dir {run_dir} --resume{raise_limit}")
