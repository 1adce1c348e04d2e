"""Figures: training curves from the trainer's ``metrics.csv`` and a 2-D view of the latent space.

matplotlib is imported inside the functions (with the non-interactive
``Agg`` backend), so ``import fastvae.plots`` costs nothing and needs no display.
"""

import csv
import numbers
import math
import os

import torch

from fastvae._files import check_regular_file
from fastvae.data.dataset import collate
from fastvae.evaluate import posterior_parameters
from fastvae.evaluate.checks import check_dataset, check_model
from fastvae.models.base import evaluating
from fastvae.models.registry import describe
from fastvae.run_layout import CURVES_PLOT

REQUIRED_COLUMNS = ("step", "split", "loss")
PER_SENTENCE = "nats per sentence"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ------------------------------------------------------------ training curves


def _read_metrics(path):
    """``metrics.csv`` -> list of row dicts with floats (None for an empty cell) and ``split`` as str."""
    check_regular_file(path, f"no metrics file at {path}")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames
            if not header:
                raise ValueError(f"{path} is empty: expected a metrics CSV with columns {', '.join(REQUIRED_COLUMNS)}, ...")
            missing = [c for c in REQUIRED_COLUMNS if c not in header]
            if missing:
                raise ValueError(
                    f"{path} is not a metrics CSV: missing column(s) {', '.join(missing)} (header: {','.join(header)})"
                )
            rows = []
            for row in reader:
                line = reader.line_num
                if None in row or any(v is None for v in row.values()):
                    raise ValueError(f"{path}, line {line}: expected {len(header)} fields, got a different number")
                parsed = {}
                for key, value in row.items():
                    value = value.strip()
                    if key == "split":
                        parsed[key] = value
                    elif value == "":
                        parsed[key] = None
                    else:
                        try:
                            parsed[key] = float(value)
                        except ValueError:
                            raise ValueError(f"{path}, line {line}: column {key!r} holds {value!r}, not a number") from None
                if parsed["step"] is None or not parsed["split"]:
                    raise ValueError(f"{path}, line {line}: 'step' and 'split' must not be empty")
                rows.append(parsed)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not valid UTF-8 text: {exc}") from None
    except csv.Error as exc:
        raise ValueError(f"{path} is not a valid CSV file: {exc}") from None
    if not rows:
        raise ValueError(f"{path} has a header but no rows")
    return rows


def _series(rows, column, split=None):
    """``(steps, values)`` of the rows (of ``split``) where ``column`` is set."""
    points = [
        (r["step"], r[column])
        for r in rows
        if r.get(column) is not None and math.isfinite(r[column]) and (split is None or r["split"] == split)
    ]
    return [p[0] for p in points], [p[1] for p in points]


def _elbo_series(rows, split):
    """``(steps, NLL + KL)`` of the rows of ``split`` that hold both: the negative ELBO at KL weight 1."""
    points = [
        (r["step"], r["nll"] + r["kl"])
        for r in rows
        if r["split"] == split and r.get("nll") is not None and r.get("kl") is not None
        and math.isfinite(r["nll"] + r["kl"])
    ]
    return [p[0] for p in points], [p[1] for p in points]


def _split_label(split):
    return {"train": "train", "valid": "validation"}.get(split, split)


def _style(split):
    return "-" if split == "train" else "o-"


def has_metrics(csv_path):
    """Whether ``csv_path`` exists and holds a data row below its header (a run stopped before its first
    logged step has none): what :func:`plot_training_curves` needs."""
    try:
        with open(csv_path, newline="", encoding="utf-8") as f:
            return sum(1 for line in f if line.strip()) > 1
    except (OSError, UnicodeDecodeError):
        return False


def curve_panels(rows, free_bits=0.0):
    """The panels of ``training_curves.png``: ``[(title, y label, [(label, steps, values, style)])]``.

    One quantity per panel, so that what shares an axis can be compared:

    * NLL (reconstruction, nats per sentence): train and validation, and
      SLCVAE's labeling-phase NLL (z = z_label) when logged;
    * KL(q || p), unweighted: train and validation;
    * -ELBO = NLL + KL (KL weight 1): train and validation (a validation
      row's ``loss`` column is this number);
    * the training objective (the train rows' ``loss``: NLL + weighted KL,
      plus the bag-of-words and label terms when the model has them): train
      only, since no validation number is that sum;
    * the bag-of-words NLL and the label loss ``||z - z_label||^2``, each
      on its own panel, when logged;
    * the loss weights (KL weight, label weight).

    A panel without any value is left out; a CSV without ``nll`` (the three
    required columns only) gets the ``loss`` panel per split. ``free_bits``
    (the run's, > 0): the train KL is logged with its per-dimension floor,
    and its curves say so.
    """
    splits = sorted({r["split"] for r in rows}, key=lambda s: (s != "train", s != "valid", s))

    def per_split(column):
        curves = []
        for split in splits:
            steps, values = _series(rows, column, split)
            if steps:
                curves.append((_split_label(split), steps, values, _style(split)))
        return curves

    panels = []
    nll = per_split("nll")
    steps, values = _series(rows, "label_nll", "train")
    if steps:
        nll.append(("train, z = z_label (labeling phase)", steps, values, ":"))
    if nll:
        panels.append(("reconstruction NLL", PER_SENTENCE, nll))
    floor = f"train (KL with the free-bits floor, {free_bits:g} nat per dimension)" if free_bits > 0 else "train"
    relabel = lambda label: floor if label == "train" else label  # noqa: E731
    kl = [(relabel(label), *rest) for label, *rest in per_split("kl")]
    if kl:
        panels.append(("KL(q || p), unweighted", PER_SENTENCE, kl))
        elbo = []
        for split in splits:
            steps, values = _elbo_series(rows, split)
            if steps:
                elbo.append((relabel(_split_label(split)), steps, values, _style(split)))
        if elbo:
            panels.append(("-ELBO = NLL + KL", PER_SENTENCE, elbo))
    if nll:  # a fastvae log: the train loss is the objective, a validation loss another number
        steps, values = _series(rows, "loss", "train")
        if steps:
            terms = ["NLL"] + [term for column, term in (("kl", "KL weight x KL"), ("bow", "bag-of-words NLL"),
                                                         ("label", "label weight x label loss"))
                               if _series(rows, column, "train")[0]]
            panels.append((f"training objective ({' + '.join(terms)})", PER_SENTENCE,
                           [("train", steps, values, "-")]))
    else:  # only the required columns: the loss per split
        loss = per_split("loss")
        if loss:
            panels.append(("loss", "loss", loss))
    for column, title, unit in (("bow", "bag-of-words NLL", PER_SENTENCE),
                                ("label", "label loss ||z - z_label||^2", "per sentence")):
        curves = per_split(column)
        if curves:
            panels.append((title, unit, curves))
    weights = []
    for column, label in (("kl_weight", "KL weight"), ("label_weight", "label weight")):
        steps, values = _series(rows, column, "train")
        if not steps:
            steps, values = _series(rows, column)
        if steps:
            weights.append((label, steps, values, "-"))
    if weights:
        panels.append(("loss weights", "weight", weights))
    return panels


def plot_training_curves(csv_path, out_path=None, free_bits=0.0):
    """Plot the trainer's ``metrics.csv`` to a PNG; returns the PNG's path.

    csv_path: the CSV (columns ``step, epoch, split, loss, nll, kl, label,
        label_nll, bow, kl_weight, label_weight, lr, grad_norm, seconds``;
        ``split`` is "train" or "valid"; an empty cell means "not
        applicable"). ``step``, ``split`` and ``loss`` are required.
    out_path: where to write (default: ``training_curves.png`` next to the CSV).
    free_bits: the run's free-bits floor (labels the train KL curves, see :func:`curve_panels`).

    One panel per quantity against the step (:func:`curve_panels`), train as
    a line and validation as markers, each curve labelled; a panel whose
    columns are empty (or absent) everywhere is left out. ValueError naming
    the file for an empty or malformed CSV.
    """
    csv_path = os.fspath(csv_path)
    rows = _read_metrics(csv_path)
    if out_path is None:
        out_path = os.path.join(os.path.dirname(os.path.abspath(csv_path)), CURVES_PLOT)
    out_path = os.fspath(out_path)
    _check_out_path(out_path)
    panels = curve_panels(rows, free_bits)
    if not panels:
        raise ValueError(f"{csv_path} has no values to plot (the loss column is empty in every row)")

    plt = _pyplot()
    fig, axes = plt.subplots(len(panels), 1, figsize=(7.5, 2.4 * len(panels)), sharex=True, squeeze=False)
    try:
        for ax, (title, unit, curves) in zip(axes[:, 0], panels):
            for label, steps, values, style in curves:
                ax.plot(steps, values, style, label=label, markersize=3)
            ax.set_title(title, fontsize="medium")
            ax.set_ylabel(unit)
            ax.grid(alpha=0.3)
            ax.legend(loc="best", fontsize="small")
        axes[-1, 0].set_xlabel("step")
        fig.tight_layout()
        _save(fig, out_path)
    finally:
        plt.close(fig)
    return out_path


def _save(fig, out_path):
    _check_out_path(out_path)
    directory = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(directory, exist_ok=True)
    fig.savefig(out_path, format="png", dpi=100)


def _check_out_path(out_path):
    """PNG files only; a folder or another extension is refused rather than given PNG bytes."""
    if os.path.isdir(out_path):
        raise ValueError(f"out_path {out_path!r} is a directory; give a .png file path")
    if not out_path.lower().endswith(".png"):
        raise ValueError(f"out_path must end in .png (the plots are PNG images), got {out_path!r}")


# ---------------------------------------------------------- latent projection


def _project_2d(means):
    """``means [N, Z]`` -> ``([N, 2], axis labels)``: identity for Z = 2, zeros as y for Z = 1, else PCA."""
    N, Z = means.shape
    if Z == 1:
        return torch.cat([means, torch.zeros_like(means)], dim=1), ("z_1", "(none)")
    if Z == 2:
        return means, ("z_1", "z_2")
    centred = means - means.mean(dim=0, keepdim=True)
    _, S, Vh = torch.linalg.svd(centred, full_matrices=False)  # min(N, Z) components: one for a single point
    total = float((S**2).sum())
    S = torch.cat([S, S.new_zeros(2)])[:2]
    share = [float(S[i] ** 2) / total if total > 0 else 0.0 for i in range(2)]
    points = centred @ Vh[:2].T
    points = torch.cat([points, points.new_zeros(N, 2 - points.shape[1])], dim=1)
    return points, (f"PC 1 ({share[0]:.0%} of variance)", f"PC 2 ({share[1]:.0%})")


def plot_latent_projection(model, dataset, out_path, max_points=2000, batch_size=128, labels=None):
    """Scatter of posterior means, projected to 2-D, saved as a PNG; returns ``out_path``.

    model: SentenceVAE (means of q(z|x)) or CVAE/SLCVAE (means of q(z|x,c));
        TypeError naming ``model`` for a Seq2Seq (no latent). Run in eval
        mode without gradients (its mode is restored after).
    dataset: a TextDataset; its first ``max_points`` examples are plotted.
    labels: optional, one int per example of ``dataset`` (e.g. DailyDialog
        dialogue acts) colouring the points.

    The means ``[N, Z]`` are shown directly for Z = 2, against zeros for
    Z = 1, and otherwise projected on their first two principal components
    (SVD of the centred means).
    """
    check_model(model)
    if not model.has_latent:
        raise TypeError(f"model is a {type(model).__name__}, which has no latent code to plot; "
                        f"pass a {describe('has_latent')}")
    check_dataset(model, dataset)
    _check_out_path(os.fspath(out_path))  # before the model runs over the data
    for name, value in (("max_points", max_points), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if labels is not None:
        labels = list(labels)
        if len(labels) != len(dataset):
            raise ValueError(f"labels must hold one entry per example of dataset ({len(dataset)}), got {len(labels)}")
        for i, label in enumerate(labels):
            if isinstance(label, bool) or not isinstance(label, numbers.Integral):
                raise ValueError(f"labels must be integers, got {label!r} at position {i}")

    n = min(max_points, len(dataset))
    device = next(model.parameters()).device
    means = []
    with evaluating(model):
        for start in range(0, n, batch_size):
            batch = collate(dataset, list(range(start, min(start + batch_size, n)))).to(device)
            mu, _ = posterior_parameters(model, batch)
            means.append(mu.double().cpu())
    points, (xlabel, ylabel) = _project_2d(torch.cat(means))

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 5))
    try:
        x, y = points[:, 0].tolist(), points[:, 1].tolist()
        if labels is None:
            ax.scatter(x, y, s=6, alpha=0.6)
        else:
            shown = labels[:n]
            values = sorted(set(shown))
            if len(values) <= 20:  # one colour per label value, with a legend
                cmap = plt.get_cmap("tab10" if len(values) <= 10 else "tab20")
                for k, value in enumerate(values):
                    rows = [i for i, label in enumerate(shown) if label == value]
                    ax.scatter([x[i] for i in rows], [y[i] for i in rows], s=6, alpha=0.7, color=cmap(k), label=str(value))
                ax.legend(title="label", fontsize="small", loc="best", markerscale=2)
            else:
                scatter = ax.scatter(x, y, c=shown, s=6, alpha=0.7, cmap="viridis")
                fig.colorbar(scatter, ax=ax, label="label")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{type(model).__name__} posterior means ({n} examples)")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        _save(fig, os.fspath(out_path))
    finally:
        plt.close(fig)
    return os.fspath(out_path)
