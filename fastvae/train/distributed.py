"""Multi-process data parallelism (``torchrun``): process group set-up and small collectives.

``torchrun --nproc_per_node N ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`setup` reads them
and joins the process group (``gloo`` on CPU, ``nccl`` on CUDA). Without
them (a plain ``python`` run) everything here is a no-op for one process.
"""

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self):
        return self.world_size > 1

    @property
    def is_main(self):
        return self.rank == 0


def _env_int(name, default):
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


def setup(device="cpu"):
    """Join the process group described by torchrun's variables; returns a :class:`DistInfo`.

    A one-process run (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) starts nothing.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    if world_size <= 1:
        return DistInfo()
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if not dist.is_initialized():
        backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank)


def teardown(info):
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_sum(info, values, device="cpu"):
    """Sum a list of floats over all processes (returns the list unchanged for one process)."""
    if not info.enabled:
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def any_true(info, flag, device="cpu"):
    """True if ``flag`` is true on any process (so all processes stop together)."""
    return all_sum(info, [1.0 if flag else 0.0], device)[0] > 0


def gather_objects(info, obj):
    """``[obj of rank 0, obj of rank 1, ...]`` on every process (``[obj]`` for one process)."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info):
    if info.enabled:
        dist.barrier()
