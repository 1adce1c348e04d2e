"""One call that makes a training run repeatable: :func:`seed_everything`."""

import random
import sys

import torch

MAX_SEED = 2**63 - 1


def seed_everything(seed: int) -> int:
    """Seed every random number generator a fastvae run draws from; returns ``seed``.

    torch's default generators (CPU and every CUDA device: model
    initialisation, word dropout, the seeds of the fused ``reparameterize``
    kernels), Python's ``random`` and, when it is imported, numpy's global
    generator (seeded with ``seed mod 2**32``, the most it takes). Call it
    before building the model: the same seed then gives the same initial
    weights, and :class:`fastvae.train.Trainer` (which reseeds torch with
    ``TrainConfig.seed`` when training starts) the same losses step by step
    on one machine with one thread count. ``fastvae train --seed`` does both.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be an integer in [0, 2**63 - 1], got {seed!r}")
    torch.manual_seed(seed)  # also seeds every CUDA device's generator
    random.seed(seed)
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed(seed % 2**32)
    return seed
