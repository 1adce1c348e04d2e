"""Reproduce the Sentence-VAE on Penn Treebank (Bowman et al. 2016) with fastvae, on a CPU.

One command:

    python examples/reproduce_ptb.py [--data-dir DIR] [--run-dir runs/ptb] [--epochs 10] [--threads 1]

DIR holds ``ptb/ptb.{train,valid,test}.txt`` (Mikolov's split; default
``$FASTVAE_DATA`` or ``../shared/data``). Trains ``fastvae train --model
sentence-vae`` (E=300, H=256, Z=16, one LSTM layer, batch 32, Adam 1e-3,
logistic KL annealing k=0.0025 x0=2500, word dropout 0.25, embedding dropout
0.5, free bits 0.5 nats per dimension), then evaluates the best model on the
test split: reconstruction NLL per sentence (the "NLL" of Sentence-VAE
implementations), KL, ELBO, an importance-weighted NLL estimate, active units,
mutual information. The target -- test NLL <= 103.97 with KL >= 7.27 -- is
the published result of a widely used PyTorch Sentence-VAE implementation.
Writes ``benchmarks/results/ptb.json`` (``--results``) with the wall-clock
seconds per training epoch, the ``fastvae train`` command this call ran (none
with ``--skip-training``) and the run's own settings (its run.json).
``--resume`` continues an interrupted run up to ``--epochs`` epochs in all;
the model and training settings stay the run's.
"""

import argparse
import csv
import json
import os
import platform
import sys
import time

import torch

from fastvae.cli import main as fastvae_main
from fastvae.cli import runs
from fastvae.cli.corpus import corpus_spec, dataset
from fastvae.evaluate import evaluate_likelihood, write_report
from fastvae.run_layout import CHECKPOINT_FILE, MODEL_DIR, RUN_FILE, VOCAB_FILE

TARGET = {"nll": 103.97, "kl": 7.27}


def train_argv(args):
    argv = [
        "train", "--model", "sentence-vae", "--data", "ptb", "--run-dir", args.run_dir,
        "--embed-dim", "300", "--hidden-size", "256", "--latent-size", "16", "--num-layers", "1",
        "--word-dropout", "0.25", "--embed-dropout", "0.5", "--free-bits", "0.5",
        "--max-length", "61", "--batch-size", "32", "--lr", "1e-3", "--epochs", str(args.epochs),
        "--kl-schedule", "logistic", "--kl-k", "0.0025", "--kl-x0", "2500", "--patience", "0",
        "--threads", str(args.threads), "--log-every", "100",
    ]
    if args.data_dir:
        argv += ["--data-dir", args.data_dir]
    if args.no_progress:
        argv.append("--no-progress")
    return argv


def resume_argv(args):
    """Continue the run in --run-dir, up to --epochs epochs in all (the rest of its settings are its own)."""
    argv = ["train", "--run-dir", args.run_dir, "--resume", "--epochs", str(args.epochs), "--threads", str(args.threads)]
    return argv + (["--no-progress"] if args.no_progress else [])


def epoch_times(run_dir):
    """``(epochs, seconds per epoch)`` from metrics.csv (its 'seconds' column at each validation row)."""
    with open(os.path.join(run_dir, "metrics.csv"), newline="") as f:
        marks = [float(r["seconds"]) for r in csv.DictReader(f) if r["split"] == "valid"]
    return len(marks), (marks[-1] / len(marks) if marks else None)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir")
    p.add_argument("--run-dir", default=os.path.join("runs", "ptb"))
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--iw-samples", type=int, default=20)
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR up to --epochs epochs in all")
    p.add_argument("--skip-training", action="store_true", help="only evaluate RUN_DIR")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--results", default=os.path.join("benchmarks", "results", "ptb.json"))
    args = p.parse_args(argv)
    for name, low in (("epochs", 1), ("threads", 1), ("iw_samples", 0)):
        if getattr(args, name) < low:  # before any training, not after it
            p.error(f"--{name.replace('_', '-')} must be >= {low}, got {getattr(args, name)}")
    if args.skip_training and args.resume:
        p.error("--resume trains, --skip-training does not: choose one")
    if args.skip_training and not all(os.path.exists(os.path.join(args.run_dir, name))
                                      for name in (RUN_FILE, VOCAB_FILE, MODEL_DIR)):
        p.error(f"--skip-training: no trained run to evaluate in {args.run_dir}; train it first")
    if args.resume and not os.path.isfile(os.path.join(args.run_dir, CHECKPOINT_FILE)):
        p.error(f"--resume: no run to continue in {args.run_dir} (no {CHECKPOINT_FILE}); "
                "leave --resume out to start one")
    torch.set_num_threads(args.threads)
    train_command = None
    if not args.skip_training:
        train_command = resume_argv(args) if args.resume else train_argv(args)
        code = fastvae_main(train_command)
        if code != 0:
            return code
    model, vocab, run = runs.load_run(args.run_dir)
    spec = corpus_spec(run, args.data_dir)
    test = dataset(spec, "test", "sentence-vae", vocab, run.get("max_length"))
    start = time.monotonic()
    report = evaluate_likelihood(model, test, batch_size=64, iw_samples=args.iw_samples, generator=torch.Generator().manual_seed(0))
    epochs, per_epoch = epoch_times(args.run_dir)
    result = {
        "command": "python examples/reproduce_ptb.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "train_command": None if train_command is None else "fastvae " + " ".join(train_command),  # what this call ran
        "run_config": run,  # what the run was trained with (its run.json), whatever command made it
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": args.threads, "torch": torch.__version__},
        "epochs_trained": epochs,
        "seconds_per_epoch": per_epoch,
        "eval_seconds": time.monotonic() - start,
        "test": report,
        "target": TARGET,
        "met": report["rec_nll"] <= TARGET["nll"] and report["kl"] >= TARGET["kl"],
    }
    write_report(os.path.join(args.run_dir, "eval_test.json"), report)
    os.makedirs(os.path.dirname(args.results) or ".", exist_ok=True)
    write_report(args.results, result)
    print(json.dumps(result, indent=2))
    print(
        f"\nPTB test: NLL {report['rec_nll']:.2f} (target <= {TARGET['nll']}), KL {report['kl']:.2f} "
        f"(target >= {TARGET['kl']}), ELBO {report['elbo']:.2f}, IW-NLL {report.get('nll_iw', float('nan')):.2f}, "
        f"{result['seconds_per_epoch'] or float('nan'):.0f} s/epoch"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
