"""Training logs: ``metrics.csv`` (one row per logging window and per validation) and TensorBoard events."""

import csv
import os
import warnings

from fastvae._files import atomic_write

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
        self.path = os.path.join(run_dir, "metrics.csv")
        self._writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is a dependency, but keep training if it is broken
                warnings.warn("tensorboard is not importable; writing metrics.csv only", RuntimeWarning, stacklevel=2)
            else:
                self._writer = SummaryWriter(os.path.join(run_dir, "tb"))

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
