"""Edge and bad inputs of the models: misused models, sizes and special ids, loss weights,
decoding options, saved folders. Each case once crashed, returned a wrong number silently, or
raised an error that did not name the argument."""

import json
import os

import pytest
import torch

import batches

from fastvae import CVAE, SLCVAE, Seq2Seq, SentenceVAE
from fastvae.models.generation import DecodeOptions

V, E, H, Z = 12, 6, 8, 3


def small(cls, **kw):
    args = dict(embed_dim=E, hidden_size=H, num_layers=1)
    if cls is not Seq2Seq:
        args["latent_size"] = Z
    args.update(kw)
    torch.manual_seed(0)
    return cls(V, **args)


def test_decode_options_name_bad_values():
    with pytest.raises(TypeError, match="top_k must be an int"):
        DecodeOptions("sample", top_k=2.5).check()
    with pytest.raises(ValueError, match="max_length"):
        DecodeOptions("greedy", max_length=True).check()
    with pytest.raises(TypeError, match="temperature must be a number"):
        DecodeOptions("sample", temperature="1").check()


def test_a_temperature_too_small_for_the_logits_is_named():
    # logits / 1e-40 overflow to inf: the error used to speak of non-finite logits only
    model, batch = small(CVAE), batches.make_batch(V, B=2, Tc=4, Tx=5)
    with pytest.raises(ValueError, match="temperature 1e-40 is too small"):
        model.generate(batch.context, batch.context_lengths, strategy="sample", temperature=1e-40)
    tokens, _ = model.generate(batch.context, batch.context_lengths, strategy="sample", temperature=1e-3)
    assert tokens.shape[0] == 2


@pytest.mark.parametrize("kw, name", [
    ({"eos_id": V}, "eos_id"),
    ({"pad_id": -1}, "pad_id"),
    ({"sos_id": 2.0}, "sos_id"),
    ({"unk_id": 99}, "unk_id"),
    ({"latent_size": 0}, "latent_size"),
    ({"latent_size": -1}, "latent_size"),
    ({"hidden_size": 0}, "hidden_size"),
])
def test_model_constructors_check_sizes_and_special_ids(kw, name):
    for cls in (SentenceVAE, CVAE, SLCVAE):
        with pytest.raises(ValueError, match=name):
            small(cls, **kw)
    with pytest.raises(ValueError, match="vocab_size must be a positive integer"):
        CVAE(0)


def test_loss_weights_are_checked_by_every_model():
    batch = batches.make_batch(V, B=3, Tc=4, Tx=5)
    for cls in (SentenceVAE, CVAE, SLCVAE):
        model = small(cls)
        with pytest.raises(ValueError, match="kl_weight must be a finite number >= 0"):
            model(batch, kl_weight=float("nan"))
        with pytest.raises(TypeError, match="kl_weight must be a number"):
            model(batch, kl_weight="1")
        # finite as a Python float, inf in float32 (the loss used to be NaN)
        with pytest.raises(ValueError, match="kl_weight must be at most 3.403e\\+38"):
            model(batch, kl_weight=1e300)
        assert torch.isfinite(model(batch, kl_weight=torch.tensor(0.5)).loss)
    with pytest.raises(ValueError, match="label_weight"):
        small(SLCVAE)(batch, label_weight=-1.0)
    for name, bad in (("label_prior_weight", float("inf")), ("label_loss_weight", -0.5)):
        with pytest.raises(ValueError, match=name):
            small(SLCVAE, **{name: bad})


def test_slcvae_refuses_swapped_optimizers_before_updating_anything():
    model = small(SLCVAE)
    batch = batches.make_batch(V, B=3, Tc=4, Tx=5)
    cvae_opt = torch.optim.Adam(model.cvae_parameters(), lr=1e-2)
    label_opt = torch.optim.Adam(model.labeling_parameters(), lr=1e-2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="cvae_optimizer must hold only"):
        model.train_step(batch, label_opt, cvae_opt)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.train_step(batch, cvae_opt, label_opt)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_slcvae_label_with_target_lengths_only_uses_the_context_lengths():
    model = small(SLCVAE).eval()
    batch = batches.make_batch(V, B=4, Tc=6, Tx=5)
    torch.testing.assert_close(model.label(batch, batch.target_lengths), model.label(batch))


def test_beam_search_wider_than_the_vocabulary_is_an_error():
    model = small(Seq2Seq)
    batch = batches.make_batch(V, B=2, Tc=4, Tx=3)
    # 20 beams over 12 words returned 8 hypotheses that were never real (and a huge beam ran out of memory)
    with pytest.raises(ValueError, match=f"beam_size must be at most the vocabulary size \\({V}\\), got 20"):
        model.generate(batch.context, batch.context_lengths, num_samples=20, strategy="beam", max_length=1)
    with pytest.raises(ValueError, match="beam_size must be at most"):
        small(CVAE).generate(batch.context, batch.context_lengths, strategy="beam", beam_size=V + 1)
    tokens, _ = model.generate(batch.context, batch.context_lengths, num_samples=V, strategy="beam", max_length=1)
    assert sorted(tokens[0, :, 0].tolist()) == list(range(V))  # every word once, no duplicate hypotheses


def _edit_config(directory, change):
    path = os.path.join(directory, "config.json")
    with open(path) as f:
        saved = json.load(f)
    change(saved)
    with open(path, "w") as f:
        json.dump(saved, f)


def test_from_pretrained_checks_version_config_and_device(tmp_path):
    model = small(CVAE)
    model.save_pretrained(tmp_path / "m")
    loaded = CVAE.from_pretrained(tmp_path / "m", map_location=torch.device("cpu"))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    if torch.cuda.is_available():  # the model comes back on the device asked for (it used to stay on the CPU)
        assert next(CVAE.from_pretrained(tmp_path / "m", map_location="cuda").parameters()).is_cuda
    else:
        with pytest.raises(ValueError, match="map_location is 'cuda', but .* sees no CUDA device"):
            CVAE.from_pretrained(tmp_path / "m", map_location="cuda")
    with pytest.raises(ValueError, match="map_location must name a device"):
        CVAE.from_pretrained(tmp_path / "m", map_location="gpu7")
    with pytest.raises(ValueError, match="map_location must be cpu or cuda"):
        CVAE.from_pretrained(tmp_path / "m", map_location="meta")
    _edit_config(tmp_path / "m", lambda saved: saved["config"].update(colour="blue"))
    with pytest.raises(ValueError, match="does not fit CVAE"):
        CVAE.from_pretrained(tmp_path / "m")
    _edit_config(tmp_path / "m", lambda saved: saved.update(format_version=99))
    with pytest.raises(ValueError, match="format_version 99"):
        CVAE.from_pretrained(tmp_path / "m")
