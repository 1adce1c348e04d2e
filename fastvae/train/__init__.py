"""fastvae.train: the Trainer, KL-weight schedules, atomic, exactly-resumable checkpoints, model folders, seeding."""

from fastvae.devices import usable_device
from fastvae.train.checkpoint import load_checkpoint, save_checkpoint
from fastvae.train.config import TrainConfig
from fastvae.train.model_folder import load_model_folder, save_model_folder
from fastvae.train.seeding import seed_everything
from fastvae.train.schedules import (
    ConstantSchedule,
    CyclicalSchedule,
    LinearSchedule,
    LogisticSchedule,
    make_schedule,
    schedule_from_dict,
)
from fastvae.train.trainer import NonFiniteLossError, Trainer, TrainResult

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
    "save_model_folder",
    "load_model_folder",
]
