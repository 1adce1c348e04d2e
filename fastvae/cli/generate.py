"""``fastvae generate`` (N outputs per input), ``fastvae sample`` and ``fastvae interpolate`` (Sentence-VAE)."""

import dataclasses
import json
import sys

import torch

from fastvae.cli import runs
from fastvae.cli.options import add_threads_option, decode_options, seed_int, set_threads
from fastvae.data.corpora import read_lines
from fastvae.models.generation import SAMPLING_TEMPERATURE, SAMPLING_TOP_P
from fastvae.models.registry import model_name


def _decoding_options(p, default_strategy, temperature=1.0, top_p=1.0):
    p.add_argument("--strategy", choices=("greedy", "sample", "beam"), default=default_strategy, help=f"decoding (default {default_strategy})")
    p.add_argument("--max-length", type=int, default=30, help="longest output in tokens (default 30)")
    p.add_argument("--temperature", type=float, default=temperature, help=f"sampling temperature (default {temperature:g})")
    p.add_argument("--top-k", type=int, default=0, help="sample from the k most likely tokens (0 = all)")
    p.add_argument("--top-p", type=float, default=top_p,
                   help="nucleus sampling: the smallest set of tokens holding this probability mass "
                   + ("(default 1 = off)" if top_p == 1 else f"(default {top_p:g}; 1 = off)"))
    p.add_argument("--beam-size", type=int, default=4, help="beam width (default 4)")
    p.add_argument("--seed", type=seed_int, default=0, help="random seed (default 0)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    add_threads_option(p)


def add_parsers(sub):
    p = sub.add_parser(
        "generate",
        help="N diverse outputs per input from a trained conditional model",
        description="Read one input per line from --input (a file, or - for stdin), tokenize it like the training "
        "data and print --samples outputs for each: z drawn from the prior each time, words sampled at "
        f"--temperature {SAMPLING_TEMPERATURE:g} from the --top-p {SAMPLING_TOP_P:g} nucleus, so the outputs differ "
        "(--strategy greedy: the SLCVAE paper's greedy decoding per z; beam: beam search per z).",
    )
    p.add_argument("run_dir", metavar="MODEL", help="a run directory written by fastvae train, or a model folder "
                   "(RUN_DIR/model, or a copy of it)")
    p.add_argument("--input", default="-", help="file with one input per line, or - for stdin (default)")
    p.add_argument("--samples", type=int, default=5, help="outputs per input (default 5)")
    p.add_argument("--json", action="store_true", help="one JSON object per input instead of text")
    _decoding_options(p, "sample", SAMPLING_TEMPERATURE, SAMPLING_TOP_P)
    p.set_defaults(func=run_generate)

    p = sub.add_parser("sample", help="sentences from a Sentence-VAE's prior", description="Decode -n sentences from z ~ N(0, I).")
    p.add_argument("run_dir", metavar="MODEL", help="a run directory of a sentence-vae, or its model folder")
    p.add_argument("-n", "--num", type=int, default=10, help="how many sentences (default 10)")
    _decoding_options(p, "greedy")
    p.set_defaults(func=run_sample)

    p = sub.add_parser(
        "interpolate",
        help="decode points between two sentences in a Sentence-VAE's latent space",
        description="Greedy decodes of (1 - t) mu_a + t mu_b for --steps values of t in [0, 1].",
    )
    p.add_argument("run_dir", metavar="MODEL", help="a run directory of a sentence-vae, or its model folder")
    p.add_argument("sentence_a")
    p.add_argument("sentence_b")
    p.add_argument("--steps", type=int, default=5, help="points on the line, ends included (default 5)")
    p.add_argument("--max-length", type=int, default=30)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    add_threads_option(p)
    p.set_defaults(func=run_interpolate)


def _decode_kwargs(args):
    return dataclasses.asdict(decode_options(args, args.strategy))


def _text(vocab, ids):
    """Token ids up to (not including) ``<eos>`` as a string."""
    return " ".join(vocab.decode(ids))


class _UnknownWords:
    """Warns on stderr when input tokens are not in the run's vocabulary (the model reads them as <unk>)."""

    SHOWN = 5  # inputs warned about one by one; the rest are counted

    def __init__(self, command, vocab):
        self.command, self.vocab, self.warned, self.more = command, vocab, 0, 0

    def check(self, where, tokens):
        unknown = [t for t in tokens if t not in self.vocab]
        if not unknown:
            return
        if self.warned == self.SHOWN:
            self.more += 1
            return
        self.warned += 1
        words = ", ".join(repr(t) for t in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        print(f"fastvae {self.command}: warning: {where}: {len(unknown)} of {len(tokens)} tokens are not in the "
              f"run's vocabulary and are read as <unk>: {words}", file=sys.stderr)

    def finish(self):
        if self.more:
            print(f"fastvae {self.command}: warning: {self.more} more input(s) hold tokens outside the vocabulary",
                  file=sys.stderr)


def _read_inputs(path):
    if path == "-":
        try:
            lines = sys.stdin.read().split("\n")
        except UnicodeDecodeError as exc:
            raise ValueError(f"--input: stdin is not valid UTF-8 text: {exc}") from None
        lines = [line[:-1] if line.endswith("\r") else line for line in lines]
        if not any(line.strip() for line in lines):
            raise ValueError("--input: stdin holds no non-empty lines")
    else:
        try:
            lines = read_lines(path)  # errors name the file: missing, a directory, not UTF-8, empty
        except (ValueError, FileNotFoundError) as exc:
            raise ValueError(f"--input: {exc}") from None
    return [(i, line) for i, line in enumerate(lines, 1) if line.strip()]


def run_generate(args):
    if args.samples < 1:
        raise ValueError(f"--samples must be >= 1, got {args.samples}")
    kwargs = _decode_kwargs(args)
    set_threads(args.threads)
    model, vocab = runs.load_model(args.run_dir, device=args.device)
    tokenize = vocab.tokenize
    if not model.is_conditional:
        raise ValueError(f"{args.run_dir!r} holds a {model_name(model)}: use fastvae sample / interpolate")
    g = torch.Generator(device=args.device).manual_seed(args.seed)
    unknown = _UnknownWords("generate", vocab)
    for lineno, line in _read_inputs(args.input):
        tokens = tokenize(line)
        if not tokens:
            raise ValueError(f"--input line {lineno}: no tokens in {line!r}")
        unknown.check(f"input line {lineno}", tokens)
        ids = torch.tensor([vocab.encode(tokens) + [vocab.eos_id]], device=args.device)
        out, _ = model.generate(ids, torch.tensor([ids.shape[1]]), num_samples=args.samples, generator=g, **kwargs)
        texts = [_text(vocab, out[0, k]) for k in range(args.samples)]
        if args.json:
            print(json.dumps({"input": line, "outputs": texts}), flush=True)
        else:
            print(f"> {line}")
            for k, text in enumerate(texts, 1):
                print(f"  {k}. {text}")
            print(flush=True)
    unknown.finish()
    return 0


def _sentence_vae(args):
    set_threads(args.threads)
    model, vocab = runs.load_model(args.run_dir, device=args.device)
    if model.is_conditional or not model.has_latent:  # a prior to sample from, and no context to give
        raise ValueError(f"{args.run_dir!r} holds a {type(model).__name__}; sample/interpolate need a sentence-vae")
    return model, vocab, vocab.tokenize


def run_sample(args):
    if args.num < 1:
        raise ValueError(f"-n/--num must be >= 1, got {args.num}")
    kwargs = _decode_kwargs(args)
    model, vocab, _ = _sentence_vae(args)
    g = torch.Generator(device=args.device).manual_seed(args.seed)
    tokens, _ = model.sample(args.num, generator=g, **kwargs)
    for row in range(args.num):
        print(_text(vocab, tokens[row]))
    return 0


def run_interpolate(args):
    if args.steps < 2:
        raise ValueError(f"--steps must be >= 2, got {args.steps}")
    model, vocab, tokenize = _sentence_vae(args)
    ends = []
    unknown = _UnknownWords("interpolate", vocab)
    for name, sentence in (("sentence_a", args.sentence_a), ("sentence_b", args.sentence_b)):
        tokens = tokenize(sentence)
        if not tokens:
            raise ValueError(f"{name} has no tokens")
        unknown.check(name, tokens)
        ends.append(torch.tensor(vocab.encode(tokens) + [vocab.eos_id], device=args.device))
    tokens, _ = model.interpolate(ends[0], ends[1], steps=args.steps, max_length=args.max_length)
    for row, t in enumerate(torch.linspace(0, 1, args.steps).tolist()):
        print(f"{t:.2f}  {_text(vocab, tokens[row])}")
    return 0
