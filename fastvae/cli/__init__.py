"""The ``fastvae`` command: train, evaluate, generate, sample, interpolate, plot, demo.

``fastvae <command> --help`` describes each. Errors in the arguments or the
data end the command with a one-line message naming the culprit and exit
status 2; a non-finite value produced by training (the loss, the gradient
norm, a value inside the forward pass such as the latent z) exits with 1,
naming the step and the last good checkpoint; Ctrl-C during training saves
a checkpoint and exits with 130. ``fastvae --version`` prints the versions.
"""

import argparse
import os
import sys

from fastvae.train import NonFiniteLossError


def build_parser():
    from fastvae.cli import demo, evaluate, generate, train

    parser = argparse.ArgumentParser(
        prog="fastvae",
        description="Variational text generation with fused kernels: train and use Sentence-VAE, CVAE, SLCVAE, Seq2Seq.",
    )
    parser.add_argument("--version", action="version", version=version_text(),
                        help="print fastvae's version (and torch's, and whether the compiled kernels load) and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    train.add_parser(sub)
    evaluate.add_parsers(sub)
    generate.add_parsers(sub)
    demo.add_parser(sub)
    parser.set_defaults(commands=sub.choices)
    return parser


def version_text():
    """``fastvae 0.1.0 (torch 2.13.0+cpu, compiled kernels loaded)``: what ``fastvae --version`` prints."""
    import torch

    from fastvae import HAS_EXTENSION, __version__

    kernels = "compiled kernels loaded" if HAS_EXTENSION else "compiled kernels missing: plain-PyTorch fallback"
    return f"fastvae {__version__} (torch {torch.__version__}, {kernels})"


def _name_flag(message, command_parser):
    """``message`` with a leading option name (``top_p must ...``, from a library check) spelled as its flag.

    A command whose library names differ from its options' (the KL schedule's ``x0`` is ``--kl-x0``) maps
    them in its ``library_names`` default.
    """
    field, _, rest = message.partition(" ")
    if not rest.startswith(("must ", "is ")) or os.path.exists(field):
        return message  # e.g. "<path> is empty" for a file that happens to share an option's name
    field = (command_parser.get_default("library_names") or {}).get(field, field)
    for action in command_parser._actions:
        if action.dest == field and action.option_strings:
            return f"{action.option_strings[-1]} {rest}"
    return message


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:  # a second Ctrl-C during training, or Ctrl-C in any other command
        print(f"fastvae {args.command}: aborted (checkpoints on disk are whole: they are only ever replaced atomically)",
              file=sys.stderr)
        return 130
    except NonFiniteLossError as exc:
        print(f"fastvae {args.command}: {exc}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, ImportError) as exc:
        print(f"fastvae {args.command}: error: {_name_flag(str(exc), args.commands[args.command])}", file=sys.stderr)
        return 2
    except OSError as exc:  # the file system refused (a directory where a file was meant, permissions, a full disk)
        print(f"fastvae {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, MemoryError) as exc:
        text = str(exc)
        if not isinstance(exc, MemoryError) and "can't allocate memory" not in text and "out of memory" not in text:
            raise  # a bug, not the user's sizes: keep the traceback
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        print(f"fastvae {args.command}: error: out of memory ({first}); try smaller sizes "
              "(--hidden-size, --batch-size, --beam-size, --samples ...)", file=sys.stderr)
        return 2
