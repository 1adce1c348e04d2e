"""Options several commands share: ``--threads``, ``--seed``'s type, and the decoding flags checked up front."""

import argparse

import torch

from fastvae.models.generation import DecodeOptions


def add_threads_option(parser):
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")


def set_threads(threads):
    """Apply ``--threads`` (None: leave torch's setting)."""
    if threads is None:
        return
    if threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)


def seed_int(text):
    """argparse type of ``--seed``: an integer torch.manual_seed takes (64 bits)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if not -(2**63) <= value < 2**64:
        raise argparse.ArgumentTypeError(f"{value} does not fit in 64 bits")
    return value


def decode_options(args, strategy):
    """The decoding flags (``--max-length``, ``--temperature``, ...) as checked DecodeOptions, before any model loads."""
    return DecodeOptions(strategy, args.max_length, args.temperature, args.top_k, args.top_p, args.beam_size).check()
