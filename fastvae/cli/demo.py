"""``fastvae demo``: train a small SLCVAE and a CVAE on the built-in Bible corpus, then compare them.

The corpus comes with the package's dependencies (pythonbible-*): a KJV verse
is the input, its WEB/ASV/YLT/Darby renderings the four references. Each
model trains for exactly ``--steps`` steps (no time cap), both with the
bag-of-words loss (it teaches the context encoder the target's words within
these few steps: without it both models' renderings ignore the input verse)
and a free-bits floor on the KL (it keeps z informative: without it the KL
collapses to ~0.1 nat in so short a training and z changes nothing),
SLCVAE with lambda = 0.1 x the KL weight and the prior term in its labeling
loss. On a machine with two or more CPU cores the two models train at the
same time, one per core (``--sequential``: one after the other). Then the
demo prints a few test verses with ``--samples`` generated renderings from
each model, and both models' metrics side by side: words sampled at
``--temperature`` from the ``--top-p`` nucleus (``fastvae generate``'s
defaults), or with ``--greedy`` greedy decoding per z (the paper's
protocol). The two run directories stay usable (``fastvae generate
RUN_DIR/slcvae``); each ``model/`` folder holds the trained model, its
vocabulary and a model card with these test metrics.
"""

import argparse
import contextlib
import multiprocessing
import os
import sys
import time

import torch

from fastvae.cli import runs, train
from fastvae.cli.corpus import corpus_spec, data_description, dataset
from fastvae.cli.evaluate import evaluate_run
from fastvae.cli.options import set_threads
from fastvae.evaluate import generate_texts
from fastvae.models.generation import SAMPLING_TEMPERATURE, SAMPLING_TOP_P
from fastvae.models.registry import model_class
from fastvae.run_layout import CHECKPOINT_FILE, MODEL_DIR, in_run
from fastvae.train import load_checkpoint, save_model_folder

MODELS = ("slcvae", "cvae")
STEPS = 800
LOG_NAME = "demo-train.log"  # the output of a model trained in the background process


def add_parser(sub):
    p = sub.add_parser(
        "demo",
        help="the quickstart (about 3 minutes on a 2-core laptop): SLCVAE vs CVAE on the built-in Bible corpus",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--run-dir", default=os.path.join("runs", "demo"), help="where the two runs go (default runs/demo)")
    p.add_argument("--steps", type=int, default=STEPS, help=f"training steps per model (default {STEPS})")
    p.add_argument("--verses", type=int, default=6000, help="training verses (default 6000, x4 renderings)")
    p.add_argument("--show", type=int, default=4, help="test verses to print (default 4)")
    p.add_argument("--samples", type=int, default=5, help="renderings per verse (default 5)")
    p.add_argument("--eval-inputs", type=int, default=200, help="test verses scored for BLEU/distinct (default 200)")
    p.add_argument("--temperature", type=float, default=SAMPLING_TEMPERATURE,
                   help=f"renderings (and the metrics) sample words at this temperature (default {SAMPLING_TEMPERATURE})")
    p.add_argument("--top-p", type=float, default=SAMPLING_TOP_P,
                   help=f"... from the smallest set of words holding this probability mass (default {SAMPLING_TOP_P})")
    p.add_argument("--greedy", action="store_true",
                   help="decode greedily per z instead (the SLCVAE paper's protocol; z alone must make them differ)")
    p.add_argument("--sequential", action="store_true",
                   help="train the two models one after the other (default: at the same time when 2+ cores are free)")
    p.add_argument("--threads", type=int, help="torch CPU threads per model (default 1 when the models train at "
                   "the same time, else torch's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
    return p


def _train_args(args, model, run_dir, progress):
    argv = [
        "--model", model, "--run-dir", run_dir, "--data", "bible",
        "--max-examples", str(4 * args.verses), "--bible-max-length", "16", "--min-freq", "3",
        "--embed-dim", "64", "--hidden-size", "64", "--latent-size", "16", "--num-layers", "1",
        "--word-dropout", "0.25", "--batch-size", "64", "--lr", "3e-3", "--epochs", "1000", "--patience", "0",
        "--kl-schedule", "logistic", "--kl-k", "0.01", "--kl-x0", "300", "--free-bits", "0.25",
        "--max-steps", str(args.steps), "--log-every", "20", "--seed", "0", "--no-tensorboard", "--bow",
    ]
    if model_class(model).has_labeling_phase:
        argv += ["--label-loss-weight", "0.1", "--label-prior-weight", "1"]
    if args.threads is not None:
        argv += ["--threads", str(args.threads)]
    if not progress:
        argv.append("--no-progress")
    return argv


def _parse_train(argv):
    from fastvae.cli import build_parser  # the package imports this module: import the parser at call time

    return build_parser().parse_args(["train"] + argv)


def _train_in_background(argv, log_path):
    """The body of the background process: ``fastvae train argv`` with its output in ``log_path``."""
    with open(log_path, "a", encoding="utf-8") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        from fastvae.cli import main

        code = main(["train"] + argv)
    sys.exit(code)


def _cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _train_both(args, run_dirs):
    """Train the models (at once: the second in a spawned process, one core each); returns an exit code."""
    parallel = not args.sequential and _cores() >= 2
    if parallel and args.threads is None:
        args.threads = 1  # one core per model: these small products gain little from a second thread
    set_threads(args.threads)
    first, second = MODELS
    background = None
    if parallel:
        log_path = os.path.join(run_dirs[second], LOG_NAME)
        os.makedirs(run_dirs[second], exist_ok=True)
        open(log_path, "w", encoding="utf-8").close()  # there even if the process is stopped before it writes
        background = multiprocessing.get_context("spawn").Process(
            target=_train_in_background, args=(_train_args(args, second, run_dirs[second], False), log_path))
        print(f"\n=== training {second.upper()} in the background ({args.steps} steps, log: {log_path}) and "
              f"{first.upper()} here, one core each", flush=True)
        background.start()
    codes = {}
    try:
        for name in (first,) if parallel else MODELS:
            print(f"\n=== training {name.upper()} ({args.steps} steps) -> {run_dirs[name]}", flush=True)
            codes[name] = train.run(_parse_train(_train_args(args, name, run_dirs[name], not args.no_progress)))
            if codes[name] != 0:  # interrupted (Ctrl-C / SIGTERM): the checkpoint is saved; stop here as train does
                break
    finally:
        if background is not None:
            if codes.get(first) != 0:
                background.terminate()  # SIGTERM: it saves its checkpoint and stops, as train does
            background.join()
            codes[second] = background.exitcode
            print(f"\n=== {second.upper()} (trained in the background):", flush=True)
            with open(log_path, encoding="utf-8") as f:
                print(f.read().rstrip() or f"(stopped before it started: exit status {background.exitcode})", flush=True)
    failed = [code for code in codes.values() if code != 0]
    if not failed:
        return 0
    return 130 if all(code in (130, -15) for code in failed) else (failed[0] if failed[0] > 0 else 1)


def run(args):
    if not 0 < args.temperature < float("inf"):
        raise ValueError(f"--temperature must be a finite number > 0, got {args.temperature}")
    if not 0 < args.top_p <= 1:
        raise ValueError(f"--top-p must lie in (0, 1], got {args.top_p}")
    for name in ("steps", "verses", "show", "samples", "eval_inputs"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    start = time.monotonic()
    run_dirs = {name: os.path.join(args.run_dir, name) for name in MODELS}
    for name in MODELS:  # demo has no --resume: the advice is a new folder
        runs.check_new_run_dir(run_dirs[name], resumable=False)
    code = _train_both(args, run_dirs)
    if code != 0:
        return code
    trained = time.monotonic() - start
    models = {name: runs.load_latest(run_dirs[name]) for name in MODELS}  # the weights of step --steps

    vocab = models[MODELS[0]][1]
    run_info = runs.read_run(run_dirs[MODELS[0]])
    spec = corpus_spec(run_info)
    test = dataset(spec, "test", MODELS[0], vocab, None)
    reports, texts = {}, {}
    decoding = ({"strategy": "greedy", "temperature": 1.0, "top_p": 1.0} if args.greedy else
                {"strategy": "sample", "temperature": args.temperature, "top_p": args.top_p})
    eval_args = argparse.Namespace(
        batch_size=64, iw_samples=0, no_generation=False, samples=args.samples, max_length=30,
        top_k=0, beam_size=4, max_inputs=args.eval_inputs, bleu_smoothing="method7", **decoding,
    )
    how = ("greedy per z" if args.greedy else
           f"words sampled at temperature {args.temperature:g}" + (f", top-p {args.top_p:g}" if args.top_p < 1 else ""))
    for name, (model, _) in models.items():
        g = torch.Generator().manual_seed(0)
        reports[name], _ = evaluate_run(model, vocab, test, eval_args, g)
        g = torch.Generator().manual_seed(1)
        texts[name] = generate_texts(model, test, vocab, num_samples=args.samples, max_inputs=args.show, generator=g,
                                     **decoding)
        _save_model(model, vocab, run_dirs[name], spec, reports[name], len(test), args, how)

    for i in range(min(args.show, len(texts[MODELS[0]]))):
        item = texts[MODELS[0]][i]
        print(f"\nKJV:  {item['source']}")
        print(f"WEB:  {item['references'][0]}")
        for name in MODELS:
            print(f"  {name.upper()}:")
            for k, sample in enumerate(texts[name][i]["samples"], 1):
                print(f"    {k}. {sample}")
    print(f"\nTest metrics ({args.eval_inputs} verses, {args.samples} samples each, {how}; NLL/KL per sentence):")
    print(f"  {'metric':<12}" + "".join(f"{n.upper():>10}" for n in MODELS))
    for label, part, key in _ROWS:
        print(f"  {label:<12}" + "".join(f"{reports[n][part][key]:>10.3f}" for n in MODELS))
    print(f"\ndone in {(time.monotonic() - start) / 60:.1f} min (training {trained / 60:.1f} min); "
          f"try: fastvae generate {run_dirs['slcvae']} --samples 5")
    return 0


_ROWS = (
    ("NLL (ELBO)", "likelihood", "elbo"),
    ("KL", "likelihood", "kl"),
    ("BLEU-P", "generation", "bleu_precision"),
    ("BLEU-R", "generation", "bleu_recall"),
    ("distinct-1", "generation", "distinct_1"),
    ("distinct-2", "generation", "distinct_2"),
)


def _save_model(model, vocab, run_dir, spec, report, test_examples, args, how):
    """RUN_DIR/model: the weights of the last step (the ones the demo showed), with the test metrics in its card."""
    run_info = runs.read_run(run_dir)
    state = load_checkpoint(in_run(run_dir, CHECKPOINT_FILE), restore_rng=False)["extra"]["trainer"]
    trained_on = {**data_description(spec), "training examples": state["train_examples"], "steps": args.steps}
    metrics = {f"the Bible test split ({test_examples} examples; generation: {args.eval_inputs} verses, "
               f"{args.samples} samples each, {how})": {label: report[part][key] for label, part, key in _ROWS}}
    training = {k: run_info["train"][k] for k in ("seed", "batch_size", "lr", "kl_schedule", "free_bits")}
    save_model_folder(in_run(run_dir, MODEL_DIR), model, vocab, trained_on, metrics, training)
