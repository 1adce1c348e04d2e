"""What the Trainer does: :class:`TrainConfig`, every field of which is also a ``fastvae train`` option."""

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, Optional

from fastvae.devices import usable_device
from fastvae.models.checks import check_weight
from fastvae.train.schedules import schedule_from_dict

LABEL_WEIGHT_SCHEDULES = ("kl", "constant")
# the data order's generator is seeded with seed * 1_000_003 + epoch (64 bits)
MAX_SEED = (2**63 - 1 - 10**6) // 1_000_003


@dataclass
class TrainConfig:
    """What :class:`Trainer` does (every field is also a ``fastvae train`` option).

    epochs: passes over the training data. batch_size: examples per step *per
    process* (with torchrun, the global batch is ``batch_size * world_size``).
    lr / label_lr: Adam learning rates (``label_lr``: SLCVAE's labeling network;
    ``None`` = ``lr``). kl_schedule: a schedule dict (``fastvae.train.make_schedule``
    arguments), the KL weight at each step. free_bits: per-dimension KL floor
    (``gaussian_kl``'s ``free_bits``). label_weight: SLCVAE's lambda multiplier
    (``None``: the model's ``label_loss_weight``); label_weight_schedule: how
    lambda follows the training: ``"kl"`` (default, the paper's) anneals it
    with the KL weight, lambda = label_weight * kl_weight; ``"constant"``
    keeps lambda = label_weight at every step (the SLCVAE authors' code:
    0.1). max_grad_norm: clip the gradient norm
    (``None``: no clipping). patience: stop after this many epochs without a
    better validation loss (``None``: never). log_every: steps per train row in
    metrics.csv. max_steps / max_time (seconds): stop early, saving a
    checkpoint (resume continues). save_every: also checkpoint every this many
    steps. plots: write training_curves.png and latent.png at the end.
    """

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    label_lr: Optional[float] = None
    kl_schedule: dict = field(default_factory=lambda: {"name": "logistic", "k": 0.0025, "x0": 2500})
    free_bits: float = 0.0
    label_weight: Optional[float] = None
    label_weight_schedule: str = "kl"
    max_grad_norm: Optional[float] = 5.0
    patience: Optional[int] = 3
    log_every: int = 50
    valid_batch_size: int = 128
    seed: int = 0
    max_steps: Optional[int] = None
    max_time: Optional[float] = None
    save_every: Optional[int] = None
    progress: bool = True
    tensorboard: bool = True
    plots: bool = True
    device: str = "cpu"

    def check(self) -> "TrainConfig":
        def integer(name, low, optional=False):
            v = getattr(self, name)
            if optional and v is None:
                return
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{name} must be an integer >= {low}{' or None' if optional else ''}, got {v!r}")

        def number(name, low, optional=False, strict=False):
            v = getattr(self, name)
            if optional and v is None:
                return
            ok = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
            if not ok or v < low or (strict and v == low):
                raise ValueError(f"{name} must be a finite number {'>' if strict else '>='} {low}, got {v!r}")

        integer("epochs", 1)
        integer("batch_size", 1)
        integer("valid_batch_size", 1)
        integer("log_every", 1)
        integer("seed", 0)
        if self.seed > MAX_SEED:
            raise ValueError(f"seed must be at most {MAX_SEED}, got {self.seed}")
        for name in ("progress", "tensorboard", "plots"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        integer("patience", 1, optional=True)
        integer("max_steps", 1, optional=True)
        integer("save_every", 1, optional=True)
        number("lr", 0, strict=True)
        number("label_lr", 0, optional=True, strict=True)
        number("free_bits", 0)
        number("label_weight", 0, optional=True)
        if self.label_weight is not None:
            check_weight("label_weight", self.label_weight)  # no larger than float32 holds
        if self.label_weight_schedule not in LABEL_WEIGHT_SCHEDULES:
            raise ValueError(f"label_weight_schedule must be one of {', '.join(map(repr, LABEL_WEIGHT_SCHEDULES))}, "
                             f"got {self.label_weight_schedule!r}")
        number("max_grad_norm", 0, optional=True, strict=True)
        number("max_time", 0, optional=True, strict=True)
        schedule_from_dict(self.kl_schedule)  # raises a ValueError naming the bad argument
        usable_device(self.device)
        return self

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TrainConfig":
        if not isinstance(d, dict):
            raise TypeError(f"a TrainConfig is built from a dict of its fields, got {type(d).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {sorted(unknown)}")
        return cls(**d)
