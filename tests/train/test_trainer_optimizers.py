"""The Trainer's optimizers: torch's fused Adam where torch has one for the parameters, the default Adam elsewhere."""

import pytest
import torch

import trainer_setup as ts
from fastvae import SLCVAE, SentenceVAE
from fastvae.train import Trainer
from fastvae.train.trainer import adam


@pytest.mark.parametrize("cls", [SLCVAE, SentenceVAE])
def test_the_trainer_uses_fused_adam_on_cpu_float32(cls, tmp_path):
    train, valid, vocab = ts.datasets(conditional=cls is not SentenceVAE)
    model = ts.model(cls, vocab)
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in model.parameters())
    trainer = Trainer(model, train, valid, ts.config(epochs=1, max_steps=2), run_dir=tmp_path)
    assert set(trainer.optimizers) == ({"cvae", "label"} if cls is SLCVAE else {"model"})
    for optimizer in trainer.optimizers.values():
        assert isinstance(optimizer, torch.optim.Adam)
        assert all(group["fused"] is True for group in optimizer.param_groups)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert trainer.fit().step == 2
    assert any(not torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_fused_adam_makes_the_default_update():
    torch.manual_seed(0)
    weights = [torch.randn(7, 5), torch.randn(5)]
    grads = [[torch.randn_like(w) for w in weights] for _ in range(4)]
    results = []
    for make in (lambda ps: adam(ps, lr=1e-2), lambda ps: torch.optim.Adam(ps, lr=1e-2)):
        params = [torch.nn.Parameter(w.clone()) for w in weights]
        optimizer = make(params)
        for step_grads in grads:
            for p, g in zip(params, step_grads):
                p.grad = g.clone()
            optimizer.step()
        results.append(params)
    assert results[0][0].data_ptr() != results[1][0].data_ptr()
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_parameters_torch_has_no_fused_adam_for_get_the_default_adam():
    integer = torch.zeros(3, dtype=torch.int64)  # a floating-point check fails for it
    assert adam([torch.nn.Parameter(torch.zeros(3))], lr=0.1).param_groups[0]["fused"] is True
    optimizer = adam([torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(integer, requires_grad=False)], lr=0.1)
    assert not optimizer.param_groups[0]["fused"]
    meta = adam([torch.nn.Parameter(torch.zeros(3, device="meta"))], lr=0.1)  # no fused kernel on "meta"
    assert not meta.param_groups[0]["fused"]
