"""The Trainer runs the model's own training phases: one optimizer per phase, holding that phase's parameters,
named as the phase (the names checkpoints store)."""

import pytest

import trainer_setup as ts
from fastvae import CVAE, SLCVAE, Seq2Seq, SentenceVAE
from fastvae.train import Trainer


@pytest.mark.parametrize("cls", [SentenceVAE, CVAE, SLCVAE, Seq2Seq])
def test_one_optimizer_per_phase_of_the_model(cls, tmp_path):
    train, valid, vocab = ts.datasets(conditional=cls.is_conditional)
    model = ts.model(cls, vocab)
    trainer = Trainer(model, train, valid, ts.config(epochs=1, max_steps=1, label_lr=1e-2) if cls is SLCVAE
                      else ts.config(epochs=1, max_steps=1), run_dir=tmp_path)
    phases = model.training_phases()
    assert list(trainer.optimizers) == [phase.name for phase in phases]
    for phase in phases:
        held = [p for group in trainer.optimizers[phase.name].param_groups for p in group["params"]]
        assert [id(p) for p in held] == [id(p) for p in phase.parameters()]
    rates = {name: opt.param_groups[0]["lr"] for name, opt in trainer.optimizers.items()}
    assert rates == ({"cvae": 5e-3, "label": 1e-2} if cls is SLCVAE else {"model": 5e-3})
    assert trainer.fit().step == 1
