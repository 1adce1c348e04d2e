"""Training logs: ``metrics.csv`` (one row per logging window and per validation) and TensorBoard events,
and the window of step metrics that a train row averages."""

import csv
import os
import warnings

from fastvae._files import atomic_write
from fastvae.run_layout import METRICS_FILE, TENSORBOARD_DIR, in_run
from fastvae.train import distributed

COLUMNS = (
    "step",
    "epoch",
    "split",
    "loss",
    "nll",
    "kl",
    "label",
    "label_nll",
    "bow",
    "kl_weight",
    "label_weight",
    "lr",
    "grad_norm",
    "seconds",
)


class MetricsLog:
    """Appends rows to ``<run_dir>/metrics.csv`` and, when available, TensorBoard events in ``<run_dir>/tb``.

    Columns are :data:`COLUMNS`; an empty cell means "not applicable" (e.g. no
    KL for Seq2Seq). ``split`` is ``train`` (a mean over the last logging
    window) or ``valid`` (one row per epoch). On resume, ``truncate_after(step)``
    drops rows written after the checkpoint, so the file describes one run.
    """

    def __init__(self, run_dir, tensorboard=True):
        self.path = in_run(run_dir, METRICS_FILE)
        self._writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is a dependency, but keep training if it is broken
                warnings.warn("tensorboard is not importable; writing metrics.csv only", RuntimeWarning, stacklevel=2)
            else:
                self._writer = SummaryWriter(in_run(run_dir, TENSORBOARD_DIR))

    def truncate_after(self, step):
        """Keep the header and the rows with ``step <= step`` (called when resuming from a checkpoint)."""
        if not os.path.isfile(self.path):
            return
        with open(self.path, newline="", encoding="utf-8") as f:
            rows = [r for r in csv.DictReader(f) if r.get("step", "").isdigit() and int(r["step"]) <= step]
        def write(f):
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows({k: r.get(k, "") for k in COLUMNS} for r in rows)

        atomic_write(self.path, write, binary=False)

    def write(self, row):
        unknown = set(row) - set(COLUMNS)
        if unknown:
            raise ValueError(f"unknown metrics columns {sorted(unknown)}")
        new = not os.path.isfile(self.path) or os.path.getsize(self.path) == 0
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            if new:
                writer.writeheader()
            writer.writerow({k: _cell(row.get(k)) for k in COLUMNS})
        if self._writer is not None:
            split = row["split"]
            for key in COLUMNS[3:]:
                value = row.get(key)
                if isinstance(value, (int, float)) and key != "seconds":
                    self._writer.add_scalar(f"{split}/{key}", value, row["step"])
            self._writer.flush()

    def close(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


class MetricsWindow:
    """Running sums of step metrics between two train rows of metrics.csv (checkpointed with the run, so a
    resumed run logs the rows an uninterrupted one would)."""

    KEYS = ("loss", "nll", "kl", "label", "label_nll", "bow", "grad_norm")

    def __init__(self):
        self.reset()

    def reset(self):
        self.count = 0
        self.sums = {}
        self.last = {}

    def state(self):
        return {"count": self.count, "sums": dict(self.sums), "last": dict(self.last)}

    def load(self, state):
        if state:
            self.count, self.sums, self.last = state["count"], dict(state["sums"]), dict(state["last"])

    def add(self, metrics):
        self.count += 1
        for k, v in metrics.items():
            if k in self.KEYS:
                self.sums[k] = self.sums.get(k, 0.0) + v
            else:
                self.last[k] = v

    def means(self, dist, device):
        keys = sorted(self.sums)
        totals = distributed.all_sum(dist, [float(self.count)] + [self.sums[k] for k in keys], device)
        count = totals[0]
        if count == 0:
            return {}
        return {**{k: v / count for k, v in zip(keys, totals[1:])}, **self.last}
