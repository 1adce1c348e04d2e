"""``fastvae train``: a corpus and a model name in, a run directory out."""

import os
import sys

from fastvae.cli import runs
from fastvae.data import Vocab
from fastvae.data.sources import CORPORA, CorpusSpec, data_root
from fastvae.evaluate import write_report
from fastvae.train import Trainer, TrainConfig, seed_everything
from fastvae.train.schedules import SCHEDULES

# model options: (flag, config key, type, help); None = the model's own default
MODEL_OPTIONS = (
    ("--embed-dim", "embed_dim", int, "embedding size"),
    ("--hidden-size", "hidden_size", int, "LSTM hidden size"),
    ("--latent-size", "latent_size", int, "latent size (VAEs)"),
    ("--num-layers", "num_layers", int, "LSTM layers"),
    ("--word-dropout", "word_dropout", float, "probability of replacing a decoder input by <unk>"),
    ("--embed-dropout", "embed_dropout", float, "dropout on embedded tokens"),
    ("--label-loss-weight", "label_loss_weight", float, "SLCVAE: weight of ||z - z_label||^2 (times the KL weight)"),
    ("--label-prior-weight", "label_prior_weight", float, "SLCVAE: weight of -log p(z_label|c) in the labeling loss (default 0)"),
)

# training options: (flag, TrainConfig field, type, help)
TRAIN_OPTIONS = (
    ("--epochs", "epochs", int, "passes over the training data (default 10)"),
    ("--batch-size", "batch_size", int, "examples per step and process (default 32)"),
    ("--lr", "lr", float, "Adam learning rate (default 1e-3)"),
    ("--label-lr", "label_lr", float, "SLCVAE labeling network's learning rate (default: --lr)"),
    ("--free-bits", "free_bits", float, "KL floor per latent dimension (default 0)"),
    ("--label-weight", "label_weight", float, "SLCVAE lambda multiplier, annealed with the KL weight"),
    ("--max-grad-norm", "max_grad_norm", float, "gradient clipping norm (default 5; 0 = off)"),
    ("--patience", "patience", int, "early stopping: epochs without a better validation loss (default 3; 0 = off)"),
    ("--log-every", "log_every", int, "steps per training row in metrics.csv (default 50)"),
    ("--valid-batch-size", "valid_batch_size", int, "validation batch size (default 128)"),
    ("--seed", "seed", runs.seed_int, "random seed of the initial weights, the data order, word dropout and the latent noise (default 0)"),
    ("--max-steps", "max_steps", int, "stop (with a checkpoint) after this many steps"),
    ("--max-time", "max_time", float, "stop (with a checkpoint) after this many seconds of training"),
    ("--save-every", "save_every", int, "also checkpoint every N steps"),
    ("--device", "device", str, "cpu or cuda (default cpu)"),
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
    p.add_argument("--model", choices=sorted(runs.MODELS), help="which model (required unless --resume)")
    p.add_argument("--run-dir", required=True, help="output directory")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoint.pt with RUN_DIR's settings")
    data = p.add_argument_group("data")
    data.add_argument("--data", choices=CORPORA, help="corpus (default bible: built in)")
    data.add_argument("--data-dir", help="folder with dailydialog/ and ptb/ (default $FASTVAE_DATA or ../shared/data)")
    data.add_argument("--train-file", help="lines/tsv corpus: training file")
    data.add_argument("--valid-file", help="lines/tsv corpus: validation file")
    data.add_argument("--test-file", help="lines/tsv corpus: test file")
    data.add_argument("--max-examples", type=int, help="use only the first N examples of each split")
    data.add_argument("--bible-max-length", type=int, help="bible: skip verses longer than N tokens")
    data.add_argument("--max-length", type=int, help="cut every sequence to N tokens (<eos> included)")
    data.add_argument("--min-freq", type=int, help="vocabulary: minimum count (default 1)")
    data.add_argument("--max-vocab", type=int, help="vocabulary: at most N tokens, specials included")
    model = p.add_argument_group("model")
    for flag, _, typ, help_ in MODEL_OPTIONS:
        model.add_argument(flag, type=typ, help=help_)
    model.add_argument("--bidirectional", action="store_true", help="bidirectional encoders")
    model.add_argument("--bow", action="store_true", help="CVAE/SLCVAE: add the bag-of-words loss")
    model.add_argument("--backend", choices=("fused", "reference"), help="kernels (default fused)")
    train = p.add_argument_group("training")
    for flag, _, typ, help_ in TRAIN_OPTIONS:
        train.add_argument(flag, type=typ, help=help_)
    train.add_argument("--kl-schedule", choices=sorted(SCHEDULES), help="KL annealing (default logistic)")
    train.add_argument("--kl-k", type=float, help="logistic: steepness k (default 0.0025)")
    train.add_argument("--kl-x0", type=float, help="logistic: midpoint step x0 (default 2500)")
    train.add_argument("--kl-warmup", type=int, help="linear: steps to reach the full weight")
    train.add_argument("--kl-cycle", type=int, help="cyclical: steps per cycle")
    train.add_argument("--kl-ratio", type=float, help="cyclical: fraction of a cycle spent rising (default 0.5)")
    train.add_argument("--kl-max", type=float, help="the final KL weight (default 1)")
    runs.add_threads_option(train)
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
    if name == "logistic":
        out = {**{k: v for k, v in default.items() if default.get("name") == "logistic"}, **out}
    if name == "constant":
        out = {"name": "constant", "weight": given.get("max_weight", 1.0)}
    if name in ("linear", "cyclical") and ("warmup_steps" if name == "linear" else "cycle_steps") not in out:
        raise ValueError(f"--kl-schedule {name} needs --kl-{'warmup' if name == 'linear' else 'cycle'}")
    return out


def _train_config(args, saved=None):
    base = TrainConfig.from_dict(saved) if saved else TrainConfig()
    values = base.to_dict()
    for _, key, _, _ in TRAIN_OPTIONS:
        value = getattr(args, key)
        if value is None:
            continue
        if saved is not None and key not in RESUME_OVERRIDES:
            raise ValueError(f"--{key.replace('_', '-')} cannot change on --resume (it is read from the run directory)")
        values[key] = value
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


def _model_kwargs(args, cls):
    import inspect

    accepted = inspect.signature(cls.__init__).parameters
    kwargs = {}
    for flag, key, _, _ in MODEL_OPTIONS:
        value = getattr(args, key)
        if value is None:
            continue
        if key not in accepted:
            raise ValueError(f"{flag} does not apply to --model {args.model}")
        kwargs[key] = value
    for flag, key in (("--bidirectional", "bidirectional"), ("--bow", "bow")):
        if getattr(args, key):
            if key not in accepted:
                raise ValueError(f"{flag} does not apply to --model {args.model}")
            kwargs[key] = True
    kwargs["backend"] = args.backend or "fused"
    return kwargs


def prepare(args, seed):
    """``(model, vocab, run)`` of a new run: the model built for the training split's vocabulary.

    The model's initial weights are drawn after ``seed_everything(seed)`` (``--seed``), so the same command
    builds the same model.
    """
    if args.model is None:
        raise ValueError("--model is required (unless --resume)")
    _check_applicable(args)
    absolute = lambda path: None if path is None else os.path.abspath(path)  # noqa: E731 (run.json is read from anywhere)
    name = args.data or "bible"
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
    ).check()
    if args.max_length is not None and args.max_length < 2:
        raise ValueError(f"--max-length must be >= 2, got {args.max_length}")
    train_examples = runs.corpus_examples(spec, "train", args.model)
    token_lists = [t for ex in train_examples for t in ((ex.source, ex.target) if hasattr(ex, "source") else (ex,))]
    vocab = Vocab.build(token_lists, min_freq=1 if args.min_freq is None else args.min_freq, max_size=args.max_vocab,
                        tokenizer="whitespace" if name == "ptb" else "fastvae")
    cls = runs.MODELS[args.model]
    ids = {"pad_id": vocab.pad_id, "unk_id": vocab.unk_id, "sos_id": vocab.sos_id, "eos_id": vocab.eos_id}
    kwargs = _model_kwargs(args, cls)
    seed_everything(seed)
    model = cls(len(vocab), **kwargs, **ids)
    run = {"model": args.model, "corpus": spec.to_dict(), "max_length": args.max_length}
    return model, vocab, run


def _check_applicable(args):
    """Flags that the chosen model or corpus would ignore are refused, not dropped in silence."""
    data = args.data or "bible"
    if args.model != "slcvae":
        for flag, key in (("--label-weight", "label_weight"), ("--label-lr", "label_lr")):
            if getattr(args, key) is not None:
                raise ValueError(f"{flag} does not apply to --model {args.model} (SLCVAE only)")
    per_corpus = (("--bible-max-length", "bible_max_length", ("bible",)), ("--data-dir", "data_dir", ("dailydialog", "ptb")),
                  ("--train-file", "train_file", ("lines", "tsv")), ("--valid-file", "valid_file", ("lines", "tsv")),
                  ("--test-file", "test_file", ("lines", "tsv")))
    for flag, key, corpora in per_corpus:
        if getattr(args, key) is not None and data not in corpora:
            raise ValueError(f"{flag} does not apply to --data {data} (only to {' / '.join(corpora)})")
    for flag, key in (("--valid-file", "valid_file"), ("--test-file", "test_file")):
        path = getattr(args, key)
        if path is not None and not os.path.isfile(path):  # the test file is read only later, by evaluate
            raise ValueError(f"{flag}: no such file: {path}")


def _check_resume_args(args):
    """Model, data and KL options are read from the run directory on --resume: refuse them rather than ignore them."""
    keys = ("model", "data", "train_file", "valid_file", "test_file", "data_dir", "max_examples", "bible_max_length",
            "max_length", "min_freq", "max_vocab", "backend", "kl_k", "kl_x0", "kl_warmup", "kl_cycle", "kl_ratio", "kl_max")
    given = [flag for flag, key, _, _ in MODEL_OPTIONS if getattr(args, key) is not None]
    given += ["--" + key.replace("_", "-") for key in keys if getattr(args, key) is not None]
    given += [flag for flag in ("--bidirectional", "--bow") if getattr(args, flag[2:])]
    if given:
        raise ValueError(f"{given[0]} cannot change on --resume (it is read from the run directory)")


def run(args):
    runs.set_threads(args.threads)
    run_dir = args.run_dir
    if args.resume:
        _check_resume_args(args)
        saved = runs.read_run(run_dir)
        config = _train_config(args, runs.saved_train_config(saved, run_dir))
        model_name = saved["model"]
        spec = runs.corpus_spec(saved)
        vocab = Vocab.load(os.path.join(run_dir, runs.VOCAB_FILE), tokenizer=runs.tokenizer_name(saved))
        from fastvae.train.checkpoint import load_checkpoint

        model = load_checkpoint(os.path.join(run_dir, runs.CHECKPOINT_NAME), restore_rng=False)["model"]
        run_info = saved
        run_info["train"] = config.to_dict()
    else:
        config = _train_config(args)
        runs.check_new_run_dir(run_dir)
        model, vocab, run_info = prepare(args, config.seed)
        model_name, spec = args.model, runs.corpus_spec(run_info)
        run_info["train"] = config.to_dict()
    max_length = run_info.get("max_length")
    train_data = runs.dataset(spec, "train", model_name, vocab, max_length)
    valid_data = runs.dataset(spec, "valid", model_name, vocab, max_length)
    trainer = Trainer(model, train_data, valid_data, config, run_dir=run_dir,
                      data_description=runs.data_description(spec, max_length))
    if trainer.dist.is_main:
        os.makedirs(run_dir, exist_ok=True)
        write_report(os.path.join(run_dir, runs.RUN_FILE), run_info)
        vocab.save(os.path.join(run_dir, runs.VOCAB_FILE))
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
