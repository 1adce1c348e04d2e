"""The model registry and the capabilities: one table of the model classes, and what each can do, read by
the layers above instead of an isinstance on a class."""

import pytest
import torch

import batches
from fastvae import CVAE, SLCVAE, Seq2Seq, SentenceVAE
from fastvae.models import LikelihoodTerms, TrainingPhase, registry
from fastvae.models.phases import CVAE_PHASE, LABELING_PHASE, MODEL_PHASE

V = 30
CAPABILITIES = {  # class: (has_latent, is_conditional, has_labeling_phase)
    SentenceVAE: (True, False, False),
    CVAE: (True, True, False),
    SLCVAE: (True, True, True),
    Seq2Seq: (False, True, False),
}


def small(cls, **kw):
    torch.manual_seed(0)
    size = dict(embed_dim=8, hidden_size=10, num_layers=1)
    if cls is not Seq2Seq:
        size["latent_size"] = 3
    return cls(V, **size, **kw)


def test_the_registry_holds_the_four_models_under_their_cli_names():
    assert registry.model_names() == ("sentence-vae", "cvae", "slcvae", "seq2seq")
    assert [registry.model_class(n) for n in registry.model_names()] == [SentenceVAE, CVAE, SLCVAE, Seq2Seq]
    assert registry.model_classes() == {"SentenceVAE": SentenceVAE, "CVAE": CVAE, "SLCVAE": SLCVAE, "Seq2Seq": Seq2Seq}
    for name in registry.model_names():
        cls = registry.model_class(name)
        assert registry.model_class(cls) is cls
        assert registry.model_name(cls) == name == registry.model_name(small(cls))
    assert registry.describe() == "SentenceVAE, CVAE, SLCVAE or Seq2Seq"
    assert registry.describe("is_conditional") == "CVAE, SLCVAE or Seq2Seq"


def test_unknown_models_are_named_errors():
    with pytest.raises(ValueError, match="unknown model 'transformer'; choose one of cvae, sentence-vae, seq2seq, slcvae"):
        registry.model_class("transformer")
    with pytest.raises(ValueError, match="model must be a model name"):
        registry.model_class(torch.nn.LSTM)
    with pytest.raises(TypeError, match=r"model must be a fastvae model \(SentenceVAE, CVAE, SLCVAE or Seq2Seq\), got LSTM"):
        registry.check_model(torch.nn.LSTM(2, 2))
    with pytest.raises(TypeError, match="LSTM is not a fastvae model"):
        registry.model_name(torch.nn.LSTM)
    with pytest.raises(ValueError, match="model name 'cvae' is taken by CVAE"):
        registry.register("cvae")(type("Other", (), {}))


@pytest.mark.parametrize("cls", list(CAPABILITIES))
def test_each_model_says_what_it_can_do(cls):
    has_latent, is_conditional, has_labeling_phase = CAPABILITIES[cls]
    model = small(cls)
    assert (model.has_latent, model.is_conditional, model.has_labeling_phase) == CAPABILITIES[cls]
    assert cls.summary and registry.check_model(model) is model
    # the capabilities are what the model does: a latent has a KL term, a context is required, ...
    batch = batches.make_batch(V)
    terms = model.likelihood_terms(batch)
    assert isinstance(terms, LikelihoodTerms) and terms.lengths.tolist() == batch.target_lengths.tolist()
    assert (terms.mu_q is not None) == has_latent and (terms.mu_p is not None) == has_latent
    z = terms.mu_q if has_latent else None
    assert terms.rec_nll(z).shape == (batch.target.shape[0],)
    if is_conditional:
        with pytest.raises(ValueError, match="needs batch.context"):
            model(type(batch)(batch.target, batch.target_lengths))
    phases = model.training_phases()
    assert len(phases) == (2 if has_labeling_phase else 1)


def test_sentence_vae_terms_have_the_standard_normal_prior():
    terms = small(SentenceVAE).likelihood_terms(batches.make_batch(V))
    assert torch.equal(terms.mu_p, torch.zeros_like(terms.mu_q))
    assert torch.equal(terms.logvar_p, torch.zeros_like(terms.logvar_q))


@pytest.mark.parametrize("cls", [SentenceVAE, CVAE, Seq2Seq])
def test_a_one_phase_model_trains_its_loss_on_every_parameter(cls):
    model = small(cls)
    (phase,) = model.training_phases()
    assert isinstance(phase, TrainingPhase) and phase.name == MODEL_PHASE
    assert list(phase.parameters()) == list(model.parameters())
    batch = batches.make_batch(V)
    options = {"kl_weight": 0.5, "free_bits": 0.0, "label_weight": 3.0, "generator": torch.Generator().manual_seed(1)}
    out = phase.run(batch, **options)  # each phase takes the options its loss has (none for Seq2Seq)
    if cls is Seq2Seq:
        expected = model(batch)
    else:
        expected = model(batch, kl_weight=0.5, free_bits=0.0, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(out.loss, expected.loss, rtol=0, atol=0)


def test_slcvae_phases_split_the_parameters_and_are_what_train_step_runs():
    model = small(SLCVAE)
    cvae_phase, labeling_phase = model.training_phases()
    assert (cvae_phase.name, labeling_phase.name) == (CVAE_PHASE, LABELING_PHASE) == ("cvae", "label")
    cvae_ids = {id(p) for p in cvae_phase.parameters()}
    label_ids = {id(p) for p in labeling_phase.parameters()}
    assert not cvae_ids & label_ids and cvae_ids | label_ids == {id(p) for p in model.parameters()}
    batch = batches.make_batch(V)
    twin = small(SLCVAE)
    stepped = []
    for m in (model, twin):
        optimizers = (torch.optim.SGD(m.cvae_parameters(), lr=0.1), torch.optim.SGD(m.labeling_parameters(), lr=0.1))
        stepped.append((m, optimizers))
    model.train_step(batch, *stepped[0][1], kl_weight=0.5, max_grad_norm=1.0, generator=torch.Generator().manual_seed(3))
    for phase, optimizer in zip(twin.training_phases(), stepped[1][1]):  # the same step, phase by phase
        optimizer.zero_grad(set_to_none=True)
        phase.run(batch, kl_weight=0.5, generator=torch.Generator().manual_seed(3)).loss.backward()
        torch.nn.utils.clip_grad_norm_(phase.parameters(), 1.0)
        optimizer.step()
    for (name, a), b in zip(model.state_dict().items(), twin.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("cls", list(CAPABILITIES))
def test_a_model_for_a_vocabulary_takes_its_size_and_special_ids(cls):
    from fastvae.data import Vocab

    vocab = Vocab.build([["a", "b", "c"], ["d"]])
    model = cls.for_vocab(vocab, embed_dim=8, hidden_size=8, num_layers=1)
    assert set(model.config) == set(cls.config_names()) and "self" not in cls.config_names()
    assert model.config["vocab_size"] == len(vocab)
    assert [model.config[k] for k in ("pad_id", "unk_id", "sos_id", "eos_id")] == [
        vocab.pad_id, vocab.unk_id, vocab.sos_id, vocab.eos_id]
