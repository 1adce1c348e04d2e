"""SLCVAE's label term as the authors' code has it (sigmoid cross-entropy) and the trainer's label-weight
schedule (annealed with the KL weight, the paper's, or constant, the code's)."""

import csv
import math
import os

import pytest
import torch

import trainer_setup as ts
from fastvae import SLCVAE
from fastvae.data import batches
from fastvae.models.conditional import sigmoid_label_loss
from fastvae.ops import gaussian_kl_ref, reparameterize_ref
from fastvae.train import Trainer, TrainConfig


def test_sigmoid_label_loss_by_hand():
    z = torch.tensor([[0.5, -2.0], [3.0, 0.0]], dtype=torch.float64)
    logits = torch.tensor([[1.0, -1.0], [0.0, 4.0]], dtype=torch.float64)
    # max(l, 0) - l z + log(1 + exp(-|l|)), averaged over the latent dimensions
    by_hand = [[max(l, 0) - l * v + math.log1p(math.exp(-abs(l))) for l, v in zip(lr, zr)]
               for lr, zr in zip(logits.tolist(), z.tolist())]
    expected = torch.tensor([sum(row) / 2 for row in by_hand], dtype=torch.float64)
    assert torch.allclose(sigmoid_label_loss(z, logits), expected)
    z.requires_grad_(True)
    sigmoid_label_loss(z, logits.requires_grad_(True)).sum().backward()
    assert torch.allclose(z.grad, -logits.detach() / 2)  # the pull on z: along z_label, linear
    assert logits.grad is None  # z_label is a fixed target in the CVAE phase


@pytest.mark.parametrize("backend", ["reference", "fused"])
def test_slcvae_sigmoid_ce_loss_is_the_codes_objective(backend):
    train, _, vocab = ts.datasets()
    model = ts.model(SLCVAE, vocab, backend=backend, label_loss="sigmoid-ce", label_loss_weight=0.1).eval()
    batch = next(batches(train, 8, shuffle=False))
    kl_weight, label_weight = 0.3, 0.1
    out = model(batch, kl_weight=kl_weight, label_weight=label_weight, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        _, _, (mu_q, logvar_q), (mu_p, logvar_p) = model._posterior_and_prior(batch)
        z = reparameterize_ref(mu_q, logvar_q, generator=torch.Generator().manual_seed(5))  # the same draw
        label = sigmoid_label_loss(z, model.label(batch))
        kl = gaussian_kl_ref(mu_q, logvar_q, mu_p, logvar_p)
    assert float(out.label) == pytest.approx(float(label.mean()), rel=1e-5, abs=1e-6)
    assert float(out.kl) == pytest.approx(float(kl.mean()), rel=1e-5)
    expected = float(out.nll) + kl_weight * float(kl.mean()) + label_weight * float(label.mean())
    assert float(out.loss.detach()) == pytest.approx(expected, rel=1e-5)
    # the paper's L2 term on the same draw
    model.config["label_loss"] = "l2"
    l2 = model(batch, kl_weight=kl_weight, label_weight=label_weight, generator=torch.Generator().manual_seed(5))
    assert float(l2.label) == pytest.approx(float(((z - model.label(batch)) ** 2).sum(-1).mean()), rel=1e-4)


def test_label_loss_is_checked_and_saved(tmp_path):
    _, _, vocab = ts.datasets()
    with pytest.raises(ValueError, match="label_loss must be one of 'l2', 'sigmoid-ce', got 'bce'"):
        ts.model(SLCVAE, vocab, label_loss="bce")
    model = ts.model(SLCVAE, vocab, label_loss="sigmoid-ce")
    model.save_pretrained(tmp_path / "m")
    assert SLCVAE.from_pretrained(tmp_path / "m").config["label_loss"] == "sigmoid-ce"
    assert ts.model(SLCVAE, vocab).config["label_loss"] == "l2"  # the paper's by default


def _rows(run_dir):
    with open(os.path.join(run_dir, "metrics.csv"), newline="") as f:
        return [r for r in csv.DictReader(f) if r["split"] == "train"]


@pytest.mark.parametrize("schedule", ["kl", "constant"])
def test_label_weight_schedule(schedule, tmp_path):
    train, valid, vocab = ts.datasets()
    model = ts.model(SLCVAE, vocab, label_loss="sigmoid-ce", label_loss_weight=0.1)
    config = ts.config(epochs=1, log_every=1, label_weight_schedule=schedule,
                       kl_schedule={"name": "linear", "warmup_steps": 4})
    Trainer(model, train, valid, config, run_dir=str(tmp_path)).fit()
    rows = _rows(tmp_path)
    assert len(rows) == 6  # 48 examples / 8
    for row in rows:
        kl_weight = float(row["kl_weight"])
        expected = 0.1 if schedule == "constant" else 0.1 * kl_weight
        assert float(row["label_weight"]) == pytest.approx(expected)
    assert float(rows[0]["kl_weight"]) == 0.0 and float(rows[-1]["kl_weight"]) == 1.0


def test_a_constant_label_weight_reaches_the_model(tmp_path, monkeypatch):
    """The weight the CVAE phase receives: label_weight itself, at every step, even while the KL weight is 0."""
    train, valid, vocab = ts.datasets()
    model = ts.model(SLCVAE, vocab)
    seen = []
    forward = SLCVAE.forward

    def spy(self, batch, kl_weight=1.0, label_weight=None, **kw):
        seen.append((kl_weight, label_weight))
        return forward(self, batch, kl_weight=kl_weight, label_weight=label_weight, **kw)

    monkeypatch.setattr(SLCVAE, "forward", spy)
    config = ts.config(epochs=1, label_weight=0.25, label_weight_schedule="constant", valid_batch_size=64,
                       kl_schedule={"name": "linear", "warmup_steps": 100})
    Trainer(model, train, valid, config, run_dir=str(tmp_path)).fit()
    training = seen[:6]  # then validation, at kl_weight 1 and the model's own label weight (unused there)
    assert training[0][0] == 0.0 and all(w == 0.25 for _, w in training)


def test_label_weight_schedule_is_checked():
    with pytest.raises(ValueError, match="label_weight_schedule must be one of 'kl', 'constant', got 'linear'"):
        TrainConfig(label_weight_schedule="linear").check()
    old = TrainConfig().to_dict()
    del old["label_weight_schedule"]  # a run.json / checkpoint of an earlier version
    assert TrainConfig.from_dict(old).check().label_weight_schedule == "kl"
