"""``fastvae evaluate`` (likelihood + generation metrics, JSON report) and ``fastvae plot``."""

import dataclasses
import json
import os

import torch

from fastvae.cli import runs
from fastvae.cli.corpus import corpus_spec, dataset
from fastvae.cli.options import add_threads_option, decode_options, seed_int, set_threads
from fastvae.data.sources import SPLITS
from fastvae.evaluate import evaluate_generation, evaluate_likelihood, evaluate_random_responses, write_report
from fastvae.metrics import BLEU_FORMULAS, LEGACY_METHOD7, MEAN_1_3, SHUFFLE_SEED
from fastvae.presets import PRESETS
from fastvae.run_layout import LATENT_PLOT, METRICS_FILE, RUN_FILE, eval_report_name, in_run


BLEU_SMOOTHINGS = ("method7", LEGACY_METHOD7)
# what fastvae evaluate does when neither a flag nor the run's preset says otherwise
PROTOCOL_DEFAULTS = {"bleu_formula": MEAN_1_3, "bleu_smoothing": "method7", "max_length": 30}


def add_parsers(sub):
    p = sub.add_parser(
        "evaluate",
        help="NLL, PPL, KL, ELBO, active units, MI and BLEU-P/R, distinct-1/2 of a trained model",
        description="Evaluate RUN_DIR's best model (--latest: its newest weights) on a split of its corpus. Likelihood: NLL per sentence and per "
        "token, perplexity, KL, ELBO, active units, mutual information (and an importance-weighted NLL with "
        "--iw-samples). Conditional models also get --samples responses per distinct input: BLEU-precision/recall "
        "(--bleu, --bleu-smoothing), the context gain (BLEU-P/R minus the BLEU-P/R of the same responses against "
        "another input's references, a fixed derangement of the inputs; its spread over 1,000 bootstrap resamples "
        "of the inputs) and distinct-1/2. A run trained with --preset is scored with its preset's protocol unless "
        "flags say otherwise. Prints and writes a JSON report.",
    )
    p.add_argument("run_dir", help="a run directory written by fastvae train")
    p.add_argument("--split", choices=SPLITS, default="test", help="which split (default test)")
    p.add_argument("--data-dir", help="override the corpus folder stored in the run")
    p.add_argument("--max-examples", type=int, help="evaluate only the first N examples of the split")
    p.add_argument("--batch-size", type=int, default=64, help="examples per batch (default 64)")
    p.add_argument("--iw-samples", type=int, default=0, help="importance samples for the NLL estimate (0 = off)")
    p.add_argument("--samples", type=int, default=10, help="responses per input for BLEU/distinct (default 10)")
    p.add_argument("--max-inputs", type=int, help="score generation on the first N distinct inputs only")
    p.add_argument("--strategy", choices=("greedy", "sample", "beam"), help="decoding (default: beam for seq2seq, greedy otherwise)")
    p.add_argument("--max-length", type=int, help="longest response (default 30; the run's preset's, e.g. 40 for "
                   "slcvae-code)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--beam-size", type=int, default=4)
    p.add_argument("--no-generation", action="store_true", help="likelihood metrics only")
    p.add_argument("--bleu", choices=BLEU_FORMULAS, help="the per-pair BLEU: mean-1-3 (the mean of BLEU-1, -2, -3; "
                   "default) or cumulative-3 (one BLEU-3 with weights 1/3 each, the SLCVAE authors' code; the "
                   "default for runs of --preset slcvae-code)")
    p.add_argument("--bleu-smoothing", choices=BLEU_SMOOTHINGS,
                   help="method7 (default: NLTK's method 7 as installed) or method7-legacy (method 7 as NLTK "
                   "3.2.2-3.4.5 computed it, 2017-2020: far higher BLEU for the same responses; the default for "
                   "runs of --preset slcvae-code)")
    p.add_argument("--shuffle-seed", type=int, default=SHUFFLE_SEED, help="seed of the derangement of the inputs "
                   f"whose references score the shuffled BLEU (default {SHUFFLE_SEED})")
    p.add_argument("--random-baseline", action="store_true", help="also score --samples random training responses "
                   "per input (the context-free baseline) with the same BLEU: report key baselines.random_responses")
    p.add_argument("--by-overlap", action="store_true", help="also score separately the inputs whose source occurs "
                   "in the run's training split ('seen') and the rest ('unseen')")
    p.add_argument("--latest", action="store_true", help="evaluate the newest weights (RUN_DIR/checkpoint.pt) "
                   "instead of the best model by validation loss (RUN_DIR/model)")
    p.add_argument("--write-samples", help="also write the generated responses (JSON lines) to this file")
    p.add_argument("--output", help="report path (default RUN_DIR/eval_<split>.json)")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--device", default="cpu")
    add_threads_option(p)
    p.set_defaults(func=run_evaluate)

    p = sub.add_parser("plot", help="redraw a run's training curves and latent projection", description="Write "
                       "RUN_DIR/training_curves.png from metrics.csv and RUN_DIR/latent.png (VAEs) from the validation split.")
    p.add_argument("run_dir")
    p.add_argument("--max-points", type=int, default=2000, help="latent points to project (default 2000)")
    add_threads_option(p)
    p.set_defaults(func=run_plot)


def evaluate_run(model, vocab, data, args_like, generator, seen_sources=None):
    """The report dict of ``model`` on ``data`` (likelihood, then generation for conditional models).

    seen_sources: the training sources, for the ``seen``/``unseen`` generation sub-reports (None: none).
    """
    report = {"model": type(model).__name__, "examples": len(data)}
    report["likelihood"] = evaluate_likelihood(
        model, data, batch_size=args_like.batch_size, iw_samples=args_like.iw_samples, generator=generator,
        device=str(next(model.parameters()).device),
    )
    texts = None
    if model.is_conditional and not args_like.no_generation:
        report["generation"], texts = evaluate_generation(  # strategy None: the paper's (default_strategy)
            model, data, vocab, num_samples=args_like.samples, strategy=args_like.strategy,
            max_length=args_like.max_length,
            temperature=args_like.temperature, top_k=args_like.top_k, top_p=args_like.top_p,
            beam_size=args_like.beam_size, batch_size=args_like.batch_size, max_inputs=args_like.max_inputs,
            generator=generator, return_texts=True, seen_sources=seen_sources,
            bleu_smoothing=args_like.bleu_smoothing, bleu_formula=getattr(args_like, "bleu", None) or MEAN_1_3,
            shuffle_seed=getattr(args_like, "shuffle_seed", SHUFFLE_SEED),
        )
    return report, texts


def run_protocol(run_dir):
    """The evaluation protocol of the run in ``run_dir``: its preset's (``Preset.evaluation``), else {}."""
    path = in_run(run_dir, RUN_FILE)
    if not os.path.isfile(path):
        return {}  # load_run names what is missing
    name = (runs.read_run(run_dir).get("preset") or {}).get("name")
    return dict(PRESETS[name].evaluation) if name in PRESETS else {}


def apply_protocol(args, protocol):
    """Fill ``--bleu``, ``--bleu-smoothing``, ``--max-length`` left out with the run's protocol, else the defaults."""
    for dest, key in (("bleu", "bleu_formula"), ("bleu_smoothing", "bleu_smoothing"), ("max_length", "max_length")):
        if getattr(args, dest) is None:
            setattr(args, dest, protocol.get(key, PROTOCOL_DEFAULTS[key]))


def run_evaluate(args):
    set_threads(args.threads)
    for name in ("batch_size", "samples"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    output = args.output or in_run(args.run_dir, eval_report_name(args.split))
    for path, flag in ((args.output, "--output"), (args.write_samples, "--write-samples")):
        if path:
            runs.check_output_path(path, flag, run_dir=args.run_dir)
    if args.write_samples:
        if args.no_generation:
            raise ValueError("--write-samples writes generated responses: it cannot go with --no-generation")
        if os.path.abspath(args.write_samples) == os.path.abspath(output):
            raise ValueError(f"--write-samples and the report (--output) are the same file: {output}")
    apply_protocol(args, run_protocol(args.run_dir))
    # the decoding flags are checked before the likelihood pass, not after it
    decode_options(args, args.strategy or "greedy")
    model, vocab, run = runs.load_run(args.run_dir, device=args.device, latest=args.latest)
    spec = corpus_spec(run, args.data_dir)
    seen_sources = train = None
    for flag, wanted in (("--by-overlap", args.by_overlap), ("--random-baseline", args.random_baseline)):
        if wanted and (not model.is_conditional or args.no_generation):
            raise ValueError(f"{flag} goes with the generation metrics: it needs a conditional model and generation")
    if args.by_overlap or args.random_baseline:
        train = dataset(spec, "train", run["model"], vocab, run.get("max_length"))  # what the model trained on
    if args.by_overlap:
        seen_sources = train.sources
    if args.max_examples is not None:
        spec = dataclasses.replace(spec, max_examples=args.max_examples).check()
    data = dataset(spec, args.split, run["model"], vocab, run.get("max_length"))
    if data is None:
        raise ValueError(f"the run's {spec.name} corpus has no {args.split} file; train with --{args.split}-file")
    generator = torch.Generator(device=args.device).manual_seed(args.seed)
    report, texts = evaluate_run(model, vocab, data, args, generator, seen_sources)
    if args.random_baseline:
        report["baselines"] = {"random_responses": evaluate_random_responses(
            data, train.targets, vocab, num_samples=args.samples, max_inputs=args.max_inputs,
            generator=torch.Generator().manual_seed(args.seed), seen_sources=seen_sources,
            bleu_smoothing=args.bleu_smoothing, bleu_formula=args.bleu, shuffle_seed=args.shuffle_seed)}
    if run.get("preset"):
        report["preset"] = run["preset"]["name"]
    report.update(split=args.split, corpus=spec.name, run_dir=os.path.abspath(args.run_dir),
                  weights="latest (checkpoint.pt)" if args.latest else "best (model/)")
    write_report(output, report)
    if args.write_samples and texts is not None:
        with open(args.write_samples, "w", encoding="utf-8") as f:
            for item in texts:
                f.write(json.dumps(item) + "\n")
    with open(output, encoding="utf-8") as f:  # what was written (NaN as null)
        print(f.read(), end="")
    print(f"report written to {output}")
    return 0


def run_plot(args):
    from fastvae.plots import plot_latent_projection, plot_training_curves

    set_threads(args.threads)
    model, vocab, run = runs.load_run(args.run_dir)
    free_bits = run.get("train", {}).get("free_bits", 0.0) if isinstance(run.get("train"), dict) else 0.0
    written = [plot_training_curves(in_run(args.run_dir, METRICS_FILE), free_bits=free_bits or 0.0)]
    if model.has_latent:
        data = dataset(corpus_spec(run), "valid", run["model"], vocab, run.get("max_length"))
        if data is not None:
            written.append(plot_latent_projection(model, data, in_run(args.run_dir, LATENT_PLOT),
                                                  max_points=args.max_points))
    for path in written:
        print(path)
    return 0
