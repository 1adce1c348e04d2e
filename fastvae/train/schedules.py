"""KL-weight annealing schedules: small callables ``weight(step) -> float``.

Each schedule has ``to_dict()`` (JSON-able, holds its ``name``) so a trainer can
store it in a checkpoint; ``make_schedule(**d)`` / ``schedule_from_dict(d)``
rebuild it.
"""

import math
from typing import Any, Dict, Type, TypeVar

ScheduleT = TypeVar("ScheduleT", bound="_Schedule")

from fastvae.models.checks import check_weight

__all__ = [
    "LogisticSchedule",
    "LinearSchedule",
    "CyclicalSchedule",
    "ConstantSchedule",
    "make_schedule",
    "schedule_from_dict",
]


def _number(name, value, *, min_value=None, positive=False):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    if min_value is not None and value < min_value:
        raise ValueError(f"{name} must be >= {min_value}, got {value!r}")
    return value if isinstance(value, int) else float(value)


def _weight(name, value):
    """A KL weight: a finite number >= 0 that float32 holds (the models' check)."""
    value = _number(name, value, min_value=0)
    check_weight(name, value)
    return value


def _step(step):
    if isinstance(step, bool):
        raise ValueError(f"step must be a number, got {step!r}")
    try:
        step = float(step)
    except (TypeError, ValueError):
        raise ValueError(f"step must be a number, got {step!r}") from None
    if not math.isfinite(step) or step < 0:
        raise ValueError(f"step must be a finite number >= 0, got {step!r}")
    return step


class _Schedule:
    name = None
    _fields = ()

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, **{f: getattr(self, f) for f in self._fields}}

    @classmethod
    def from_dict(cls: Type[ScheduleT], d: Dict[str, Any]) -> ScheduleT:
        d = dict(d)
        name = d.pop("name", cls.name)
        if name != cls.name:
            raise ValueError(f"a {name!r} schedule dict cannot build a {cls.__name__}")
        return cls(**d)

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        args = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._fields)
        return f"{type(self).__name__}({args})"


class LogisticSchedule(_Schedule):
    """``max_weight / (1 + exp(-k * (step - x0)))`` (Bowman et al. 2016).

    The defaults ``k=0.0025, x0=2500`` are those of the widely used PyTorch
    Sentence-VAE. Safe for any ``k * (step - x0)`` (no overflow).
    """

    name = "logistic"
    _fields = ("k", "x0", "max_weight")

    def __init__(self, k: float = 0.0025, x0: float = 2500, max_weight: float = 1.0) -> None:
        self.k = _number("k", k, positive=True)
        self.x0 = _number("x0", x0, min_value=0)
        self.max_weight = _weight("max_weight", max_weight)

    def __call__(self, step: float) -> float:
        t = self.k * (_step(step) - self.x0)
        if t >= 0:
            return self.max_weight / (1.0 + math.exp(-t))
        e = math.exp(t)  # t < 0: e in (0, 1), no overflow
        return self.max_weight * e / (1.0 + e)


class LinearSchedule(_Schedule):
    """Linear from ``start`` (step 0) to ``max_weight`` (step ``warmup_steps``), then constant."""

    name = "linear"
    _fields = ("warmup_steps", "start", "max_weight")

    def __init__(self, warmup_steps: int, start: float = 0.0, max_weight: float = 1.0) -> None:
        self.warmup_steps = _number("warmup_steps", warmup_steps, min_value=0)
        self.start = _weight("start", start)
        self.max_weight = _weight("max_weight", max_weight)

    def __call__(self, step: float) -> float:
        step = _step(step)
        if step >= self.warmup_steps:
            return self.max_weight
        return self.start + (self.max_weight - self.start) * step / self.warmup_steps


class CyclicalSchedule(_Schedule):
    """Cyclical annealing (Fu et al. 2019, arXiv 1903.10145).

    The weight restarts at 0 at every multiple of ``cycle_steps``, rises
    linearly to ``max_weight`` over the first ``ratio * cycle_steps`` steps of
    the cycle, then holds at ``max_weight`` until the cycle ends.
    """

    name = "cyclical"
    _fields = ("cycle_steps", "ratio", "max_weight")

    def __init__(self, cycle_steps: int, ratio: float = 0.5, max_weight: float = 1.0) -> None:
        self.cycle_steps = _number("cycle_steps", cycle_steps, positive=True)
        self.ratio = _number("ratio", ratio)
        if not 0.0 < self.ratio <= 1.0:
            raise ValueError(f"ratio must be in (0, 1], got {ratio!r}")
        self.max_weight = _weight("max_weight", max_weight)

    def __call__(self, step: float) -> float:
        position = math.fmod(_step(step), self.cycle_steps) / self.cycle_steps  # in [0, 1)
        if position >= self.ratio:
            return self.max_weight
        return self.max_weight * position / self.ratio


class ConstantSchedule(_Schedule):
    """Always ``weight``."""

    name = "constant"
    _fields = ("weight",)

    def __init__(self, weight: float = 1.0) -> None:
        self.weight = _weight("weight", weight)

    def __call__(self, step: float) -> float:
        _step(step)
        return self.weight


SCHEDULES = {cls.name: cls for cls in (LogisticSchedule, LinearSchedule, CyclicalSchedule, ConstantSchedule)}


def make_schedule(name: str, **kwargs: Any) -> "_Schedule":
    """Build a schedule by name (``logistic``, ``linear``, ``cyclical``, ``constant``).

    ``make_schedule(**schedule.to_dict())`` rebuilds ``schedule``. Raises
    ``ValueError`` for an unknown name, an unknown argument or a bad value.
    """
    cls = SCHEDULES.get(name)
    if cls is None:
        raise ValueError(f"unknown KL schedule {name!r}; choose one of {sorted(SCHEDULES)}")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValueError(f"bad arguments for the {name!r} schedule: {exc}") from None


def schedule_from_dict(d: Dict[str, Any]) -> "_Schedule":
    """Rebuild a schedule from its ``to_dict()``."""
    if not isinstance(d, dict) or "name" not in d:
        raise ValueError(f"a schedule dict needs a 'name' key, got {d!r}")
    return make_schedule(**d)
