"""``fastvae demo``: train a small SLCVAE and a CVAE on the built-in Bible corpus, then compare them.

The corpus comes with the package's dependencies (pythonbible-*): a KJV verse
is the input, its WEB/ASV/YLT/Darby renderings the four references. Each
model trains for ``--steps`` steps (1200, two to three minutes each on a
laptop CPU; ``--minutes`` caps the total) with progress bars, both with the
bag-of-words loss (it teaches the context encoder the target's words within
these few steps: without it both models' renderings ignore the input
verse), SLCVAE with lambda = 0.1 x the KL weight and the prior term in its
labeling loss. Then the demo prints a few test verses with ``--samples``
generated renderings from each model, and both models' metrics side by
side: words sampled at ``--temperature`` (0.5), or with ``--greedy`` greedy
decoding per z (the paper's protocol, under which these briefly trained
models give one rendering per verse: z hardly matters yet). The two run
directories stay usable: ``fastvae generate RUN_DIR/slcvae``.
"""

import argparse
import os
import time

import torch

from fastvae.cli import runs, train
from fastvae.cli.evaluate import evaluate_run
from fastvae.evaluate import generate_texts

MODELS = ("slcvae", "cvae")


def add_parser(sub):
    p = sub.add_parser(
        "demo",
        help="5-minute quickstart: SLCVAE vs CVAE on the built-in Bible corpus",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--run-dir", default=os.path.join("runs", "demo"), help="where the two runs go (default runs/demo)")
    p.add_argument("--steps", type=int, default=1200, help="training steps per model (default 1200)")
    p.add_argument("--minutes", type=float, default=8.0,
                   help="cap on the training time of both models together (default 8; a model stopped early keeps its weights)")
    p.add_argument("--verses", type=int, default=6000, help="training verses (default 6000, x4 renderings)")
    p.add_argument("--show", type=int, default=4, help="test verses to print (default 4)")
    p.add_argument("--samples", type=int, default=5, help="renderings per verse (default 5)")
    p.add_argument("--eval-inputs", type=int, default=200, help="test verses scored for BLEU/distinct (default 200)")
    p.add_argument("--temperature", type=float, default=0.5,
                   help="renderings (and the metrics) sample words at this temperature (default 0.5)")
    p.add_argument("--greedy", action="store_true",
                   help="decode greedily per z instead (the SLCVAE paper's protocol; z alone must make them differ)")
    runs.add_threads_option(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
    return p


def _train_args(args, model, run_dir):
    argv = [
        "--model", model, "--run-dir", run_dir, "--data", "bible",
        "--max-examples", str(4 * args.verses), "--bible-max-length", "16", "--min-freq", "3",
        "--embed-dim", "64", "--hidden-size", "128", "--latent-size", "16", "--num-layers", "1",
        "--word-dropout", "0.25", "--batch-size", "64", "--lr", "2e-3", "--epochs", "100", "--patience", "0",
        "--kl-schedule", "logistic", "--kl-k", "0.01", "--kl-x0", "400",
        "--max-steps", str(args.steps), "--max-time", str(args.minutes * 60 / len(MODELS)), "--log-every", "20",
        "--no-plots", "--bow",
    ]
    if model == "slcvae":
        argv += ["--label-loss-weight", "0.1", "--label-prior-weight", "1"]
    if args.no_progress:
        argv.append("--no-progress")
    from fastvae.cli import build_parser  # the package imports this module: import the parser at call time

    return build_parser().parse_args(["train"] + argv)


def run(args):
    for name in ("minutes", "temperature"):
        if not 0 < getattr(args, name) < float("inf"):
            raise ValueError(f"--{name} must be a finite number > 0, got {getattr(args, name)}")
    for name in ("steps", "verses", "show", "samples", "eval_inputs"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    runs.set_threads(args.threads)
    start = time.monotonic()
    for name in MODELS:  # demo has no --resume: the advice is a new folder
        runs.check_new_run_dir(os.path.join(args.run_dir, name), resumable=False)
    models = {}
    for name in MODELS:
        run_dir = os.path.join(args.run_dir, name)
        print(f"\n=== training {name.upper()} with the bag-of-words loss ({args.steps} steps) -> {run_dir}", flush=True)
        torch.manual_seed(0)
        code = train.run(_train_args(args, name, run_dir))
        if code != 0:  # interrupted (Ctrl-C / SIGTERM): the checkpoint is saved; stop here as train does
            return code
        models[name] = runs.load_latest(run_dir)  # the step limit's weights, also saved as the run's model
        models[name][0].save_pretrained(os.path.join(run_dir, runs.MODEL_DIR))

    vocab = models[MODELS[0]][1]
    test = runs.dataset(runs.corpus_spec(runs.read_run(os.path.join(args.run_dir, MODELS[0]))), "test", "slcvae", vocab, None)
    reports, texts = {}, {}
    decoding = {"strategy": "greedy" if args.greedy else "sample", "temperature": 1.0 if args.greedy else args.temperature}
    eval_args = argparse.Namespace(
        batch_size=64, iw_samples=0, no_generation=False, samples=args.samples, max_length=30,
        top_k=0, top_p=1.0, beam_size=4, max_inputs=args.eval_inputs, bleu_smoothing="method7", **decoding,
    )
    for name, (model, _) in models.items():
        g = torch.Generator().manual_seed(0)
        reports[name], _ = evaluate_run(model, vocab, test, eval_args, g)
        g = torch.Generator().manual_seed(1)
        texts[name] = generate_texts(model, test, vocab, num_samples=args.samples, max_inputs=args.show, generator=g, **decoding)

    for i in range(min(args.show, len(texts[MODELS[0]]))):
        item = texts[MODELS[0]][i]
        print(f"\nKJV:  {item['source']}")
        print(f"WEB:  {item['references'][0]}")
        for name in MODELS:
            print(f"  {name.upper()}:")
            for k, sample in enumerate(texts[name][i]["samples"], 1):
                print(f"    {k}. {sample}")
    how = "greedy per z" if args.greedy else f"words sampled at temperature {args.temperature:g}"
    print(f"\nTest metrics ({args.eval_inputs} verses, {args.samples} samples each, {how}; NLL/KL per sentence):")
    rows = [
        ("NLL (ELBO)", "likelihood", "elbo"),
        ("KL", "likelihood", "kl"),
        ("BLEU-P", "generation", "bleu_precision"),
        ("BLEU-R", "generation", "bleu_recall"),
        ("distinct-1", "generation", "distinct_1"),
        ("distinct-2", "generation", "distinct_2"),
    ]
    print(f"  {'metric':<12}" + "".join(f"{n.upper():>10}" for n in MODELS))
    for label, part, key in rows:
        print(f"  {label:<12}" + "".join(f"{reports[n][part][key]:>10.3f}" for n in MODELS))
    print(f"\ndone in {(time.monotonic() - start) / 60:.1f} min; try: fastvae generate {os.path.join(args.run_dir, 'slcvae')} --samples 5")
    return 0
