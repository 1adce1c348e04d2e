"""fastvae.train: the Trainer, KL-weight schedules and atomic, exactly-resumable checkpoints."""

from fastvae.train.checkpoint import load_checkpoint, save_checkpoint
from fastvae.train.seeding import seed_everything
from fastvae.train.schedules import (
    ConstantSchedule,
    CyclicalSchedule,
    LinearSchedule,
    LogisticSchedule,
    make_schedule,
    schedule_from_dict,
)
from fastvae.train.trainer import NonFiniteLossError, Trainer, TrainConfig, TrainResult, usable_device

__all__ = [
    "Trainer",
    "TrainConfig",
    "TrainResult",
    "NonFiniteLossError",
    "ConstantSchedule",
    "CyclicalSchedule",
    "LinearSchedule",
    "LogisticSchedule",
    "make_schedule",
    "schedule_from_dict",
    "save_checkpoint",
    "load_checkpoint",
    "usable_device",
    "seed_everything",
]
