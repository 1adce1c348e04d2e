"""Reproduce Table 1 of the SLCVAE paper (Zhang et al. 2019) on DailyDialog with fastvae, on a CPU.

One command:

    python examples/reproduce_dailydialog.py [--data-dir DIR] [--run-root runs/dailydialog] [--threads 1]
    python examples/reproduce_dailydialog.py --preset slcvae-code [--minutes 120]   # the authors' setting

DIR holds ``dailydialog/dialogues_{train,validation,test}.txt`` (the official
11,118/1,000/1,000 split; default ``$FASTVAE_DATA`` or ``../shared/data``).
Every response is an example whose context is the up to 5 utterances before
it. Six models are trained with the same settings (``fastvae train``;
E=H=32, Z=8 (``--embed-dim``, ``--hidden-size``, ``--latent-size``), 2 LSTM
layers (``--num-layers``), vocabulary ``--max-vocab`` (10,000), sequences
cut to 40 tokens, batch 64, Adam 1e-3, logistic KL annealing k=0.0025
x0=2500, word dropout 0.2 for the VAEs, at most ``--epochs`` epochs or
``--minutes`` each, early stopping after ``--patience`` epochs without a
better validation loss):
Seq2Seq, CVAE, CVAE+BOW, SLCVAE, SLCVAE+BOW and SLCVAE+prior (fastvae's
variant whose labeling phase also maximizes log p(z_label | c),
``--label-prior-weight 1``); ``--label-loss-weight`` sets the SLCVAE rows'
lambda multiplier (default: the model's, 1). A run directory that already
holds a checkpoint is resumed, not started over, under this call's
``--epochs``, ``--minutes`` (counted from the run's start) and
``--patience``: the same command continues an interrupted run, a larger
budget trains it longer. The model and vocabulary flags (``--embed-dim``,
``--hidden-size``, ``--latent-size``, ``--num-layers``, ``--max-vocab``,
``--label-loss-weight``) shape new runs only: left out, an existing run
(resumed or, with ``--skip-training``, evaluated) keeps its own; given, they
must match it (else a usage error). Each model's best validation checkpoint is
evaluated on the test split with ``--samples`` (10) responses per context:
z drawn from the prior, greedy decoding per z (Seq2Seq: beam search with beam
``--samples``, its ``--samples`` best hypotheses; ``--strategy greedy`` is
this same protocol) -- or, with ``--strategy sample``, words sampled from the
softmax at ``--temperature`` (default 1) -- BLEU-precision / BLEU-recall
scored as the SLCVAE authors' code scores them by default (``--bleu
cumulative-3``: one BLEU-3 with weights 1/3 each; ``--bleu-smoothing
method7-legacy``: NLTK's smoothing 7 as NLTK 3.2.2-3.4.5, the paper's time,
computed it; ``--bleu mean-1-3`` averages BLEU-1..3, ``--bleu-smoothing
method7`` is today's NLTK), the context gain (BLEU-P/R minus the BLEU-P/R of
the same responses against the references of another test context, a
fixed derangement of the contexts, with its bootstrap spread: about 0 for
responses that ignore the context) and distinct-1/2 over all generated
responses. Two baseline rows, scored the same way: ``--samples`` random training
responses per context, which ignores the context altogether, and each
context answered by its own last utterance (one response: how much BLEU
mere overlap with the context earns); a stored baseline is computed again
when this call's ``--samples`` or ``--max-inputs`` differ from its own
``settings``. Every row is also scored separately on the test contexts
that occur in the training split ("seen": 23% of them) and on the rest
("unseen"): a model that memorizes training responses can gain on the seen
ones only.

``--preset slcvae-code`` trains the rows in the setting of the SLCVAE
authors' code instead (``fastvae train --preset slcvae-code``: E=200,
bidirectional encoders of 300, Z=200, one layer, batch 30, KL weight linear
over 10,000 steps, up to 45 epochs, the previous utterance as context; see
``fastvae.presets``): Seq2Seq+beam, CVAE, SLCVAE (the code's label loss,
0.1 x sigmoid cross-entropy, constant), SLCVAE-L2 (the paper's L2 label
loss, lambda = 1 x the KL weight) and SLCVAE-L2+prior (that, with fastvae's
``--label-prior-weight 1``); no early stopping unless
``--patience``, evaluation replies up to 40 tokens. The model flags then
override the preset's sizes only when given. Its default run root and
results file are ``runs/dailydialog-slcvae-code`` and
``benchmarks/results/dailydialog-slcvae-code.json``.

Prints the table and writes ``benchmarks/results/dailydialog-authors-bleu.json``
(``--results``; by default ``dailydialog.json`` for ``--bleu mean-1-3
--bleu-smoothing method7``, ``dailydialog-legacy-bleu.json`` for ``--bleu
mean-1-3``, ``dailydialog-cumulative3-bleu.json`` for ``--bleu-smoothing
method7``; one results file holds one BLEU and one preset): ``protocols.<protocol>.rows.<model>`` (``greedy``,
``sample``, ``beam``, or ``sample-T<t>`` for sampling at a temperature
other than 1; test
metrics, training summary, run.json, the ``fastvae train`` command when this
call trained, five example contexts with their samples) and ``baseline``
(each with the ``settings`` it was computed with).
Rows of other protocols or models already in the file are kept.
"""

import argparse
import json
import os
import platform
import sys
import time

import torch

from fastvae.cli import main as fastvae_main
from fastvae.cli import runs
from fastvae.cli.corpus import corpus_examples, corpus_spec, dataset
from fastvae.cli.evaluate import BLEU_SMOOTHINGS, evaluate_run
from fastvae.data import Vocab
from fastvae.evaluate import evaluate_echo_responses, evaluate_random_responses, write_report
from fastvae.metrics import BLEU_FORMULAS, CUMULATIVE_3, LEGACY_METHOD7, MEAN_1_3
from fastvae.models.checks import check_weight
from fastvae.models.registry import model_class
from fastvae.models.saving import CONFIG_NAME
from fastvae.presets import PRESETS, get_preset
from fastvae.run_layout import CHECKPOINT_FILE, MODEL_DIR, RUN_FILE, VOCAB_FILE

PAPER = {  # Zhang et al. 2019, Table 1 (DailyDialog): BLEU-P, BLEU-R, distinct-1, distinct-2
    "Seq2Seq+beam": None,
    "CVAE": (0.212, 0.345, 0.010, 0.041),
    "SLCVAE": (0.214, 0.354, 0.014, 0.078),
}
MODELS = (  # row name, --model, extra flags
    ("Seq2Seq+beam", "seq2seq", []),
    ("CVAE", "cvae", ["--word-dropout", "0.2"]),
    ("CVAE+BOW", "cvae", ["--word-dropout", "0.2", "--bow"]),
    ("SLCVAE", "slcvae", ["--word-dropout", "0.2"]),
    ("SLCVAE+BOW", "slcvae", ["--word-dropout", "0.2", "--bow"]),
    # fastvae's variant: the labeling phase also maximizes log p(z_label | c) (see SLCVAE's label_prior_weight)
    ("SLCVAE+prior", "slcvae", ["--word-dropout", "0.2", "--label-prior-weight", "1"]),
)
PRESET_ROWS = (  # the rows of --preset: its sizes and schedules, the paper's models
    ("Seq2Seq+beam", "seq2seq", []),
    ("CVAE", "cvae", []),
    ("SLCVAE", "slcvae", []),  # the preset's label loss (slcvae-code: the code's, 0.1 x sigmoid cross-entropy)
    ("SLCVAE-L2", "slcvae", ["--label-loss", "l2", "--label-loss-weight", "1", "--label-weight-schedule", "kl"]),
    # fastvae's variant: the paper's L2, and the labeling phase also maximizes log p(z_label | c)
    ("SLCVAE-L2+prior", "slcvae", ["--label-loss", "l2", "--label-loss-weight", "1", "--label-weight-schedule", "kl",
                                   "--label-prior-weight", "1"]),
)
# the results file of each BLEU when --results is left out (the files of earlier versions keep their names)
DEFAULT_RESULTS = {(MEAN_1_3, "method7"): "dailydialog.json", (MEAN_1_3, LEGACY_METHOD7): "dailydialog-legacy-bleu.json",
                   (CUMULATIVE_3, LEGACY_METHOD7): "dailydialog-authors-bleu.json",
                   (CUMULATIVE_3, "method7"): "dailydialog-cumulative3-bleu.json"}


DECODING = {
    "greedy": "z from the prior, greedy decoding per z; Seq2Seq: beam search with beam = --samples, "
              "its --samples best hypotheses",
    "sample": "z from the prior, words sampled from the softmax (temperature 1); Seq2Seq: sampled too",
    "beam": "z from the prior, beam search per z (beam = --samples)",
}
# the model and vocabulary flags: None in argparse (so that a flag given can be told from one left out), then these
MODEL_DEFAULTS = {"max_vocab": 10000, "embed_dim": 32, "hidden_size": 32, "latent_size": 8, "num_layers": 2}
BASELINE = "Random train responses"
ECHO = "Echo of the last context utterance"


def row_table(args):
    """The rows this call's settings train: :data:`PRESET_ROWS` with --preset, else :data:`MODELS`."""
    return PRESET_ROWS if args.preset else MODELS


def _model_flags(args, model, names):
    flags = []
    for name in names:
        if name == "latent_size" and not model_class(model).has_latent:
            continue
        flags += ["--" + name.replace("_", "-"), str(getattr(args, name))]
    return flags


def train_argv(args, model, extra, run_dir):
    run_control = ["--epochs", str(args.epochs), "--max-time", str(args.minutes * 60), "--patience", str(args.patience),
                   "--threads", str(args.threads), "--log-every", "100"]
    if args.preset:  # the preset's settings; the model flags of this call only where given
        argv = ["train", "--preset", args.preset, "--model", model, "--data", "dailydialog", "--run-dir", run_dir,
                *run_control, *extra]
        argv += _model_flags(args, model, [n for n in MODEL_DEFAULTS if getattr(args, n) is not None])
    else:
        argv = ["train", "--model", model, "--data", "dailydialog", "--run-dir", run_dir,
                *_model_flags(args, model, ["embed_dim", "hidden_size", "num_layers", "max_vocab"]),
                "--max-length", "40", "--batch-size", "64", "--lr", "1e-3", *run_control, *extra]
        if model_class(model).has_latent:
            argv += ["--latent-size", str(args.latent_size), "--kl-schedule", "logistic", "--kl-k", "0.0025",
                     "--kl-x0", "2500"]
    if model_class(model).has_labeling_phase and args.label_loss_weight is not None and "--label-loss-weight" not in extra:
        argv += ["--label-loss-weight", str(args.label_loss_weight)]
    if args.max_examples is not None:
        argv += ["--max-examples", str(args.max_examples)]
    if args.data_dir:
        argv += ["--data-dir", args.data_dir]
    if args.no_progress:
        argv.append("--no-progress")
    return argv


def row_run_dir(args, name):
    """The run directory of a table row: ``--run-root/<row name, lower case, '+' -> '-'>``."""
    return os.path.join(args.run_root, name.lower().replace("+", "-"))


def resume_argv(args, run_dir):
    """Continue a run under this call's limits (--epochs, --minutes counted from the run's start, --patience)."""
    argv = ["train", "--run-dir", run_dir, "--resume", "--epochs", str(args.epochs), "--max-time", str(args.minutes * 60),
            "--patience", str(args.patience)]
    return argv + (["--no-progress"] if args.no_progress else [])


def training_summary(run_dir):
    """What the run's metrics.csv says: finished epochs, the best validation epoch and the training time."""
    import csv

    with open(os.path.join(run_dir, "metrics.csv"), newline="") as f:
        valid = [row for row in csv.DictReader(f) if row["split"] == "valid"]
    if not valid:
        return {"epochs": 0}
    best = min(valid, key=lambda row: float(row["loss"]))
    return {
        "epochs": int(valid[-1]["epoch"]),
        "best_epoch": int(best["epoch"]),
        "best_valid_loss": float(best["loss"]),
        "train_minutes": float(valid[-1]["seconds"]) / 60.0,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir")
    p.add_argument("--preset", choices=sorted(PRESETS), help="train the rows with fastvae train --preset (slcvae-code: "
                   "the SLCVAE authors' setting; rows Seq2Seq+beam, CVAE, SLCVAE with the code's label loss, "
                   "SLCVAE-L2 with the paper's)")
    p.add_argument("--run-root", help="where the runs go (default runs/dailydialog; with --preset "
                   "runs/dailydialog-<preset>)")
    p.add_argument("--epochs", type=int, help="at most this many epochs (default 10; the preset's with --preset)")
    p.add_argument("--minutes", type=float, default=15.0, help="training time limit per model (default 15)")
    p.add_argument("--patience", type=int, help="early-stopping patience in epochs (0: off; default 3; with --preset "
                   "the preset's, off for slcvae-code)")
    p.add_argument("--max-examples", type=int, help="new runs train on the first N examples of each split only "
                   "(a quick check of the whole pipeline)")
    existing = "; an existing run keeps its own, and a value given must match it"
    p.add_argument("--max-vocab", type=int, help="vocabulary size (default 10000)" + existing)
    p.add_argument("--embed-dim", type=int, help="word embedding size E (default 32)" + existing)
    p.add_argument("--hidden-size", type=int, help="LSTM hidden size H (default 32)" + existing)
    p.add_argument("--latent-size", type=int, help="latent size Z of the VAEs (default 8)" + existing)
    p.add_argument("--num-layers", type=int, help="LSTM layers (default 2)" + existing)
    p.add_argument("--label-loss-weight", type=float,
                   help="SLCVAE rows: weight of ||z - z_label||^2, times the KL weight (finite, >= 0; default: the "
                   "model's, 1)" + existing)
    p.add_argument("--samples", type=int, default=10)
    p.add_argument("--max-inputs", type=int, help="score only the first N test contexts")
    p.add_argument("--strategy", choices=("greedy", "sample", "beam"),
                   help="decoding for evaluation (default, and greedy: the paper's protocol, greedy per z for the VAEs "
                   "and beam search with beam --samples for Seq2Seq)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="with --strategy sample: softmax temperature (default 1; > 0)")
    p.add_argument("--bleu", choices=BLEU_FORMULAS, default=CUMULATIVE_3,
                   help="the per-pair BLEU: cumulative-3 (default: one BLEU-3 with weights 1/3 each, as the SLCVAE "
                   "authors' code computes it) or mean-1-3 (the mean of BLEU-1, -2, -3)")
    p.add_argument("--bleu-smoothing", choices=BLEU_SMOOTHINGS, default=LEGACY_METHOD7,
                   help="BLEU smoothing: method7-legacy (default: NLTK's method 7 as NLTK 3.2.2-3.4.5, the paper's "
                   "time, computed it) or method7 (as the installed NLTK computes it); one results file holds one "
                   "BLEU (--bleu and --bleu-smoothing)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only", nargs="*", help="row names to run (default all; none named: only the two baselines, "
                   "random responses and echo)")
    p.add_argument("--skip-training", action="store_true", help="evaluate existing runs only")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--results", help="the results file (default: benchmarks/results/dailydialog-authors-bleu.json "
                   "for the default BLEU, see above; with --preset dailydialog-<preset>.json)")
    args = p.parse_args(argv)
    given = {name: getattr(args, name) for name in (*MODEL_DEFAULTS, "label_loss_weight")
             if getattr(args, name) is not None}
    preset = get_preset(args.preset) if args.preset else None
    if preset is None:
        for name, value in MODEL_DEFAULTS.items():
            if getattr(args, name) is None:
                setattr(args, name, value)
    if args.run_root is None:
        args.run_root = os.path.join("runs", f"dailydialog-{args.preset}" if preset else "dailydialog")
    if args.results is None:
        name = f"dailydialog-{args.preset}.json" if preset else DEFAULT_RESULTS[(args.bleu, args.bleu_smoothing)]
        args.results = os.path.join("benchmarks", "results", name)
    if args.epochs is None:
        args.epochs = preset.training["epochs"] if preset else 10
    if args.patience is None:
        args.patience = (preset.training["patience"] or 0) if preset else 3
    args.eval_max_length = preset.evaluation["max_length"] if preset else 30
    if args.strategy == "greedy":  # the paper's protocol, as when left out: Seq2Seq decodes with beam search
        args.strategy = None
    table_rows = row_table(args)
    unknown = sorted(set(args.only or ()) - {name for name, _, _ in table_rows})
    if unknown:
        p.error(f"--only: unknown row(s) {', '.join(unknown)} (choose from {', '.join(n for n, _, _ in table_rows)})")
    for name in ("epochs", "samples", "threads", "embed_dim", "hidden_size", "latent_size", "num_layers", "max_vocab",
                 "max_examples"):
        if getattr(args, name) is not None and getattr(args, name) < 1:  # checked before any training
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.max_inputs is not None and args.max_inputs < 1:
        p.error(f"--max-inputs must be >= 1, got {args.max_inputs}")
    if not 0 < args.minutes < float("inf"):
        p.error(f"--minutes must be a finite number > 0, got {args.minutes}")
    if args.patience < 0:
        p.error(f"--patience must be >= 0 (0: off), got {args.patience}")
    if args.label_loss_weight is not None:
        try:  # the models' own check (finite, >= 0, within float32)
            check_weight("--label-loss-weight", args.label_loss_weight)
        except ValueError as exc:
            p.error(str(exc))
    if not (args.temperature > 0 and args.temperature < float("inf")):
        p.error(f"--temperature must be a positive number, got {args.temperature}")
    if args.temperature != 1.0 and args.strategy != "sample":
        p.error("--temperature applies to --strategy sample only")
    try:
        held = _file_scoring(args.results)
    except ValueError as exc:
        p.error(str(exc))
    if held is not None and held != _scoring(args):
        p.error(f"{args.results} holds {_describe(held)}; write {_describe(_scoring(args))} to another --results file")
    rows = [row for row in table_rows if args.only is None or row[0] in args.only]
    for name, model_name, _ in rows:  # every row's run checked before any training or writing
        run_dir = row_run_dir(args, name)
        if args.skip_training and not _holds_run(run_dir):
            p.error(f"--skip-training: no run to evaluate in {run_dir} (row {name}); train it first or "
                    f"choose another --run-root")
        conflict = _setting_conflict(args, given, model_name, run_dir)
        if conflict:
            p.error(conflict)
    torch.set_num_threads(args.threads)
    protocol = protocol_name(args.strategy, args.temperature)
    command = "python examples/reproduce_dailydialog.py " + " ".join(argv if argv is not None else sys.argv[1:])

    def record(results, name=None, report=None):
        """Add a row of this call (if any) and this call's command, written only once a row or the call succeeded."""
        entry = _entry(results, protocol)
        if name is not None:
            entry["rows"][name] = report
        entry["commands"] = sorted(set(entry.get("commands", [])) | {command})

    for name, model_name, extra in rows:
        run_dir = row_run_dir(args, name)
        train_command = None
        if not args.skip_training:
            resume = os.path.isfile(os.path.join(run_dir, "checkpoint.pt"))
            train_command = resume_argv(args, run_dir) if resume else train_argv(args, model_name, extra, run_dir)
            code = fastvae_main(train_command)
            if code != 0:
                return code
        model, vocab = runs.load_best_or_latest(run_dir)
        run = runs.read_run(run_dir)
        spec = corpus_spec(run, args.data_dir)
        test = dataset(spec, "test", model_name, vocab, run.get("max_length"))
        train = dataset(spec, "train", model_name, vocab, run.get("max_length"))
        eval_args = argparse.Namespace(
            batch_size=64, iw_samples=0, no_generation=False, strategy=args.strategy, samples=args.samples,
            max_length=args.eval_max_length, temperature=args.temperature, top_k=0, top_p=1.0, beam_size=args.samples,
            max_inputs=args.max_inputs, bleu_smoothing=args.bleu_smoothing, bleu=args.bleu,
        )
        t0 = time.monotonic()
        report, texts = evaluate_run(model, vocab, test, eval_args, torch.Generator().manual_seed(0),
                                     seen_sources=train.sources)
        report["eval_seconds"] = time.monotonic() - t0
        report["model"] = name
        report["examples"] = len(test)
        report["training"] = training_summary(run_dir)
        report["run_config"] = run  # what the run was trained with (run.json), whatever command made it
        if train_command is not None:  # with --skip-training, run_config and training say how the run was made
            report["train_command"] = "fastvae " + " ".join(train_command)
        report["examples_shown"] = texts[:5]
        _update(args, lambda results: record(results, name, report))
        g = report["generation"]
        print(f"{name}: BLEU-P {g['bleu_precision']:.3f} BLEU-R {g['bleu_recall']:.3f} "
              f"distinct-1 {g['distinct_1']:.4f} distinct-2 {g['distinct_2']:.4f} "
              f"context gain P {_gain(g, 'precision')} R {_gain(g, 'recall')}", flush=True)
    stored = _read(args.results).get("baseline", {})
    data = {}

    def baseline_data():  # loaded once, and only when a baseline needs it
        if not data:
            data["value"] = _baseline_data(args)
        return data["value"]

    for name, make in ((BASELINE, random_baseline), (ECHO, echo_baseline)):
        settings = baseline_settings(name, args)
        scored = name in stored and "context_gain_precision" in stored[name]["generation"]  # older files: no gain
        if scored and _made_with(name, stored[name], baseline_data) == settings:
            continue  # kept as it is: the same settings give the same value
        if name in stored:
            print(f"{name}: computed again ({_made_with(name, stored[name], baseline_data)} -> {settings})", flush=True)
        baseline = {**make(args, baseline_data()), "settings": settings}
        _update(args, lambda results: results.setdefault("baseline", {}).update({name: baseline}))
    results = _update(args, record)
    print(table(results, protocol))
    return 0


def _holds_run(run_dir):
    """Whether ``run_dir`` holds a run that can be evaluated: run.json, vocab.json and a model or a checkpoint."""
    has = lambda name: os.path.exists(os.path.join(run_dir, name))  # noqa: E731
    return has(RUN_FILE) and has(VOCAB_FILE) and (has(MODEL_DIR) or has(CHECKPOINT_FILE))


def _run_model_config(run_dir):
    """The model config of the run in ``run_dir`` (model/config.json, else checkpoint.pt's); None without either."""
    path = os.path.join(run_dir, MODEL_DIR, CONFIG_NAME)
    if os.path.isfile(path):
        with open(path) as f:
            return json.load(f)["config"]
    path = os.path.join(run_dir, CHECKPOINT_FILE)
    if os.path.isfile(path):
        from fastvae.train.checkpoint import load_checkpoint

        return load_checkpoint(path, restore_rng=False)["model"].config
    return None


def _setting_conflict(args, given, model_name, run_dir):
    """A message when a model or vocabulary flag given in this call differs from the existing run in ``run_dir``
    (which is resumed or evaluated with its own settings, so the flag would be ignored); None when all agree."""
    flags = [name for name in ("embed_dim", "hidden_size", "num_layers") if name in given]
    cls = model_class(model_name)
    flags += ["latent_size"] if "latent_size" in given and cls.has_latent else []
    flags += ["label_loss_weight"] if "label_loss_weight" in given and cls.has_labeling_phase else []
    if not flags and "max_vocab" not in given:
        return None
    config = _run_model_config(run_dir) if os.path.isfile(os.path.join(run_dir, RUN_FILE)) else None
    if config is None:
        return None  # no run there yet: the flags make it
    for name in flags:
        held = config.get(name)  # (absent from an older model's config: nothing to compare)
        if held is not None and float(held) != float(given[name]):
            return _conflict_message(name, given[name], f"{name.replace('_', ' ')} {held}", run_dir)
    if "max_vocab" in given:
        size = config["vocab_size"]
        # the run's vocabulary holds min(its --max-vocab, every training word): smaller than the given
        # --max-vocab, it still matches when it holds every word of the training split
        if size > given["max_vocab"] or (size < given["max_vocab"]
                                         and size != _full_vocab_size(args, model_name, run_dir)):
            return _conflict_message("max_vocab", given["max_vocab"], f"a vocabulary of {size} tokens", run_dir)
    return None


def _conflict_message(name, given, held, run_dir):
    flag = "--" + name.replace("_", "-")
    return (f"{flag} {given} does not match the existing run in {run_dir}, which has {held} (its saved model "
            f"config); leave {flag} out to keep the run's, or choose another --run-root")


def _full_vocab_size(args, model_name, run_dir):
    """The vocabulary size of the run's training split without a --max-vocab limit (the model's minimum count 1)."""
    spec = corpus_spec(runs.read_run(run_dir), args.data_dir)
    examples = corpus_examples(spec, "train", model_name)
    return len(Vocab.build([t for ex in examples for t in (ex.source, ex.target)]))


def baseline_settings(name, args):
    """What a baseline row depends on besides the corpus and vocabulary, stored next to it as ``settings``."""
    settings = {"max_inputs": args.max_inputs}
    if name == BASELINE:  # the echo baseline gives one response, whatever --samples
        settings["num_samples"] = args.samples
    return settings


def _made_with(name, stored, baseline_data):
    """The settings a stored baseline was computed with: its ``settings``; a baseline stored before that record
    counts as made with its own report's ``num_samples``, and with ``max_inputs`` None when it scored every test
    context, else its count of ``inputs`` (the first N contexts are scored either way, so both give its value)."""
    if "settings" in stored:
        return stored["settings"]
    from fastvae.evaluate import split_by_seen

    g = stored["generation"]
    test = baseline_data()[1]
    made = {"max_inputs": None if int(g["inputs"]) == len(split_by_seen(test, [])) else int(g["inputs"])}
    if name == BASELINE:
        made["num_samples"] = int(g["num_samples"])
    return made


def _baseline_data(args):
    """``(vocab, test, train, run_dir)`` with the vocabulary of the first run found under --run-root,
    so that ``<unk>`` falls on the same words as in the models' rows."""
    for name, model_name, _ in row_table(args):
        run_dir = row_run_dir(args, name)
        if os.path.isfile(os.path.join(run_dir, VOCAB_FILE)):
            break
    else:
        raise SystemExit(f"no run under {args.run_root} to take the vocabulary from; train a model first")
    run = runs.read_run(run_dir)
    vocab = Vocab.load(os.path.join(run_dir, VOCAB_FILE))
    spec = corpus_spec(run, args.data_dir)
    test = dataset(spec, "test", model_name, vocab, run.get("max_length"))
    train = dataset(spec, "train", model_name, vocab, run.get("max_length"))
    return vocab, test, train, run_dir


def random_baseline(args, data=None):
    """The table's metrics for --samples random training responses per test context (the context is ignored).

    data: ``_baseline_data(args)``, when already loaded."""
    vocab, test, train, run_dir = data or _baseline_data(args)
    report = evaluate_random_responses(test, train.targets, vocab, num_samples=args.samples,
                                       max_inputs=args.max_inputs, generator=torch.Generator().manual_seed(0),
                                       seen_sources=train.sources, bleu_smoothing=args.bleu_smoothing,
                                       bleu_formula=args.bleu)
    return {"generation": report, "vocab_from": run_dir, "vocab_size": len(vocab)}


def echo_baseline(args, data=None):
    """The table's metrics when each test context is answered by its own last utterance (one response)."""
    vocab, test, train, run_dir = data or _baseline_data(args)
    report = evaluate_echo_responses(test, vocab, max_inputs=args.max_inputs, seen_sources=train.sources,
                                     bleu_smoothing=args.bleu_smoothing, bleu_formula=args.bleu)
    return {"generation": report, "vocab_from": run_dir, "vocab_size": len(vocab)}


def protocol_name(strategy, temperature=1.0):
    """The results file's key for a decoding: ``greedy``, ``sample``, ``beam`` or ``sample-T<temperature>``."""
    protocol = strategy or "greedy"
    return protocol if temperature == 1.0 else f"{protocol}-T{temperature:g}"


def _decoding(protocol):
    strategy, _, temperature = protocol.partition("-T")
    if not temperature:
        return DECODING[strategy]
    return DECODING[strategy].replace("temperature 1", f"temperature {temperature}")


def _entry(results, protocol):
    entry = results.setdefault("protocols", {}).setdefault(protocol, {"decoding": _decoding(protocol), "rows": {}})
    entry["decoding"] = _decoding(protocol)  # files from before said "beam 10", whatever --samples
    return entry


def _read(path):
    """The results file as it is on disk now ({} when there is none); ValueError for a file that is not one."""
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            results = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not a results file of this script: {exc}") from None
    if not isinstance(results, dict):
        raise ValueError(f"{path} is not a results file of this script (a JSON {type(results).__name__})")
    return results


def _update(args, change):
    """Apply ``change`` to the results file as it is on disk now, under a lock, and write it atomically.

    Two runs of this script (say, one per model, in parallel) can share one
    --results file: each adds its own rows and keeps the other's.
    """
    import fcntl

    folder = os.path.dirname(os.path.abspath(args.results))
    os.makedirs(folder, exist_ok=True)
    lock = os.open(folder, os.O_RDONLY)  # the folder is the lock: no lock file left behind
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = _read(args.results)
        held = _results_scoring(results) if results else None
        if held is not None and held != _scoring(args):  # a parallel call with another BLEU or preset
            raise SystemExit(f"{args.results} now holds {_describe(held)} (written by another call "
                             f"meanwhile); this call's rows ({_describe(_scoring(args))}) were not written")
        change(results)
        results["machine"] = {"cpu": platform.processor() or platform.machine(), "threads": args.threads,
                              "torch": torch.__version__}
        results["paper"] = {k: v for k, v in PAPER.items() if v is not None}
        results["bleu_smoothing"] = args.bleu_smoothing
        results["bleu_formula"] = args.bleu
        if args.preset:
            results["preset"] = args.preset
        write_report(args.results, results)
    finally:
        os.close(lock)
    return results


def _scoring(args):
    """What one results file holds one of: ``(BLEU formula, smoothing, preset)``."""
    return args.bleu, args.bleu_smoothing, args.preset


def _results_scoring(results):
    """The ``(formula, smoothing, preset)`` of a results dict; files from before these keys: mean-1-3, method7."""
    return results.get("bleu_formula", MEAN_1_3), results.get("bleu_smoothing", "method7"), results.get("preset")


def _describe(scoring):
    formula, smoothing, preset = scoring
    return f"BLEU {formula} with {smoothing}" + (f", rows of --preset {preset}" if preset else ", rows without --preset")


def _file_scoring(path):
    """The ``(formula, smoothing, preset)`` of an existing results file, or None."""
    results = _read(path)
    return _results_scoring(results) if results else None


def _gain(g, which):
    """``+0.012 ± 0.003``: a report's context gain and its bootstrap standard deviation ("-" when it has none)."""
    gain = g.get(f"context_gain_{which}")
    if gain is None:
        return "-"
    return f"{gain:+.3f} ± {g['context_gain_spread'][which + '_std']:.3f}"


def _number(g, key, digits=3):
    value = g.get(key)
    return "-" if value is None else f"{value:.{digits}f}"


TABLE_HEADER = ("| model | BLEU-P | BLEU-R | shuffled BLEU-P | shuffled BLEU-R | context gain P (± sd) | "
                "context gain R (± sd) | distinct-1 | distinct-2 | unseen BLEU-P | unseen BLEU-R |")


def table(results, protocol):
    """The rows as a Markdown table, the baseline rows (random training replies, echo) and the paper's next to them.

    The shuffled BLEU scores each row's replies against another test context's references; the context
    gain is BLEU minus shuffled BLEU (± its bootstrap standard deviation over the contexts); the last two
    columns score the test contexts not in the training split.
    """
    formula, smoothing, preset = _results_scoring(results)
    lines = [f"decoding: {protocol}; BLEU: {formula}, smoothing {smoothing}"
             + (f"; models trained with --preset {preset}" if preset else ""),
             TABLE_HEADER, "|---" * TABLE_HEADER.count(" | ") + "|---|"]
    rows = results["protocols"][protocol]["rows"]
    names = [name for name, _, _ in (PRESET_ROWS if preset else MODELS)]
    found = [(f"fastvae {name}", rows[name]["generation"]) for name in names if name in rows]
    found += [(name, v["generation"]) for name, v in results.get("baseline", {}).items()]
    for name, g in found:
        unseen = g.get("unseen", {})
        lines.append(f"| {name} | {g['bleu_precision']:.3f} | {g['bleu_recall']:.3f} | "
                     f"{_number(g, 'shuffled_bleu_precision')} | {_number(g, 'shuffled_bleu_recall')} | "
                     f"{_gain(g, 'precision')} | {_gain(g, 'recall')} | {g['distinct_1']:.4f} | {g['distinct_2']:.4f} | "
                     f"{_number(unseen, 'bleu_precision')} | {_number(unseen, 'bleu_recall')} |")
    for name, v in PAPER.items():
        if v is not None:
            lines.append(f"| paper {name} | {v[0]:.3f} | {v[1]:.3f} | - | - | - | - | {v[2]:.3f} | {v[3]:.3f} | - | - |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
