"""Plots a person can read: one quantity per panel (train and validation NLL, KL and -ELBO labelled apart; the
train objective with its bag-of-words/label terms never drawn against a validation number), and a
training_curves.png at every stop of a run: its epochs, --max-steps, --max-time, Ctrl-C and a divergence."""

import csv
import os
import signal

import pytest

import trainer_setup as ts
from fastvae import SLCVAE, Seq2Seq
from fastvae.plots import _read_metrics, curve_panels, plot_training_curves
from fastvae.train import NonFiniteLossError, Trainer

COLUMNS = "step,epoch,split,loss,nll,kl,label,label_nll,bow,kl_weight,label_weight,lr,grad_norm,seconds".split(",")


def slcvae_log(path):
    """An SLCVAE+BOW log: the train loss (NLL + w KL + BOW + label) is about twice the validation loss."""
    rows = []
    for step in range(10, 110, 10):
        rows.append(dict(step=step, epoch=1 + step // 50, split="train", loss=90 - step / 5, nll=45 - step / 10,
                         kl=2 + step / 100, label=0.5, label_nll=44 - step / 10, bow=40 - step / 10,
                         kl_weight=step / 100, label_weight=step / 1000, lr=1e-3, grad_norm=3, seconds=step))
        if step % 50 == 0:
            rows.append(dict(step=step, epoch=step // 50, split="valid", loss=46 - step / 10 + 2.5, nll=46 - step / 10,
                             kl=2.5))
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: row.get(k, "") for k in COLUMNS} for row in rows)
    return path


def test_each_panel_holds_one_quantity(tmp_path):
    rows = _read_metrics(slcvae_log(tmp_path / "metrics.csv"))
    panels = {title: curves for title, _, curves in curve_panels(rows)}
    titles = list(panels)
    assert titles[:3] == ["reconstruction NLL", "KL(q || p), unweighted", "-ELBO = NLL + KL"]
    objective = [t for t in titles if t.startswith("training objective")]
    assert objective == ["training objective (NLL + KL weight x KL + bag-of-words NLL + label weight x label loss)"]
    # the train loss (with its bag-of-words and label terms) is drawn alone, never next to a validation curve
    assert [label for label, *_ in panels[objective[0]]] == ["train"]
    train_loss = [r["loss"] for r in rows if r["split"] == "train"]
    for title, curves in panels.items():
        if title != objective[0]:
            assert all(values != train_loss for _, _, values, _ in curves), title
    # train and validation side by side where they measure the same thing, labelled apart
    for title in titles[:3]:
        assert {"train", "validation"} <= {label for label, *_ in panels[title]}, title
    valid_elbo = [values for label, _, values, _ in panels["-ELBO = NLL + KL"] if label == "validation"][0]
    assert valid_elbo == [r["loss"] for r in rows if r["split"] == "valid"]  # the validation 'loss' is NLL + KL
    train_elbo = [values for label, _, values, _ in panels["-ELBO = NLL + KL"] if label == "train"][0]
    assert train_elbo == [r["nll"] + r["kl"] for r in rows if r["split"] == "train"]
    assert "bag-of-words NLL" in panels and "label loss ||z - z_label||^2" in panels
    assert [label for label, *_ in panels["loss weights"]] == ["KL weight", "label weight"]
    assert "train, z = z_label (labeling phase)" in [label for label, *_ in panels["reconstruction NLL"]]


def test_the_train_kl_says_when_it_carries_the_free_bits_floor(tmp_path):
    rows = _read_metrics(slcvae_log(tmp_path / "metrics.csv"))
    panels = {title: curves for title, _, curves in curve_panels(rows, free_bits=0.25)}
    for title in ("KL(q || p), unweighted", "-ELBO = NLL + KL"):
        labels = [label for label, *_ in panels[title]]
        assert labels == ["train (KL with the free-bits floor, 0.25 nat per dimension)", "validation"], labels
    assert [label for label, *_ in panels["reconstruction NLL"]][:2] == ["train", "validation"]


def test_a_seq2seq_log_has_no_latent_panels(tmp_path):
    path = tmp_path / "metrics.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        f.write("step,epoch,split,loss,nll\n10,1,train,5,5\n20,1,train,4,4\n20,1,valid,4.5,4.5\n")
    titles = [title for title, _, _ in curve_panels(_read_metrics(path))]
    assert titles == ["reconstruction NLL", "training objective (NLL)"]
    assert os.path.isfile(plot_training_curves(path))


def _trainer(tmp_path, cls=SLCVAE, **cfg):
    train, valid, vocab = ts.datasets(conditional=True)
    cfg = {"plots": True, "log_every": 1, **cfg}
    return Trainer(ts.model(cls, vocab), train, valid, ts.config(**cfg), run_dir=tmp_path)


@pytest.mark.parametrize("limit", [{"max_steps": 2}, {"max_time": 1e-9}])
def test_curves_are_written_when_a_limit_stops_the_run(tmp_path, limit):
    result = _trainer(tmp_path, **limit).fit()
    assert result.status in ("max_steps", "time_limit")
    assert os.path.getsize(tmp_path / "training_curves.png") > 2000
    assert os.path.isfile(tmp_path / "latent.png")


def test_curves_are_written_when_ctrl_c_stops_the_run(tmp_path):
    trainer = _trainer(tmp_path, cls=Seq2Seq)
    step = trainer._train_step

    def step_then_ctrl_c(batch):
        out = step(batch)
        if trainer.step == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    trainer._train_step = step_then_ctrl_c
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        result = trainer.fit()
    finally:
        signal.signal(signal.SIGINT, before)
    assert result.status == "interrupted"
    assert os.path.getsize(tmp_path / "training_curves.png") > 2000


def test_curves_are_written_when_training_diverges(tmp_path):
    trainer = _trainer(tmp_path)
    forward, calls = trainer.model.forward, [0]

    def diverging(*args, **kwargs):
        out = forward(*args, **kwargs)
        calls[0] += 1
        if calls[0] == 3:
            out.loss = out.loss * float("nan")
        return out

    trainer.model.forward = diverging
    with pytest.raises(NonFiniteLossError):
        trainer.fit()
    assert os.path.getsize(tmp_path / "training_curves.png") > 2000
    assert not os.path.exists(tmp_path / "latent.png")  # the weights are broken: no projection of them


def test_a_run_stopped_before_its_first_log_row_writes_no_plot_and_no_error(tmp_path):
    result = _trainer(tmp_path, max_steps=1, log_every=50).fit()
    assert result.status == "max_steps"
    assert not os.path.exists(tmp_path / "training_curves.png")
    assert os.path.isfile(tmp_path / "latent.png")


def test_no_plots_means_none(tmp_path):
    train, valid, vocab = ts.datasets(conditional=True)
    Trainer(ts.model(SLCVAE, vocab), train, valid, ts.config(plots=False, max_steps=2), run_dir=tmp_path).fit()
    assert not os.path.exists(tmp_path / "training_curves.png")
