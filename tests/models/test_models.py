"""The models: fused vs reference backends, SLCVAE phases, generation, save/load, bad input."""

import copy
import json
import os

import pytest
import torch

import batches
from batches import EOS, PAD, SOS, UNK

import fastvae
from fastvae import CVAE, SLCVAE, Batch, Seq2Seq, SentenceVAE
from fastvae.models.generation import DecodeOptions, decode

V, E, H, Z = 40, 12, 16, 4


def make_batch(B=5, Tc=7, Tx=6, seed=0):
    return batches.make_batch(V, B=B, Tc=Tc, Tx=Tx, seed=seed)


def build(cls, backend="fused", **kw):
    args = dict(embed_dim=E, hidden_size=H, num_layers=2, backend=backend)
    if cls is not Seq2Seq:
        args["latent_size"] = Z
    if cls is SentenceVAE:
        args["num_layers"] = 1
    args.update(kw)
    torch.manual_seed(1)
    return cls(V, **args)


def twin(model):
    """The same model (same weights) on the other backend."""
    other = "reference" if model.backend == "fused" else "fused"
    clone = type(model)(**{**model.config, "backend": other})
    clone.load_state_dict(model.state_dict())
    return clone


def run_loss(model, batch, **kw):
    if isinstance(model, Seq2Seq):
        return model(batch)
    return model(batch, generator=torch.Generator().manual_seed(7), **kw)


MODELS = [
    pytest.param(SentenceVAE, {}, id="SentenceVAE"),
    pytest.param(SentenceVAE, {"num_layers": 2}, id="SentenceVAE-L2"),
    pytest.param(SentenceVAE, {"bidirectional": True, "num_layers": 2}, id="SentenceVAE-bi2"),
    pytest.param(CVAE, {}, id="CVAE"),
    pytest.param(CVAE, {"bow": True}, id="CVAE-bow"),
    pytest.param(CVAE, {"bidirectional": True, "num_layers": 1}, id="CVAE-bi1"),
    pytest.param(SLCVAE, {}, id="SLCVAE"),
    pytest.param(SLCVAE, {"bidirectional": True}, id="SLCVAE-bi2"),
    pytest.param(Seq2Seq, {}, id="Seq2Seq"),
    pytest.param(Seq2Seq, {"bidirectional": True, "num_layers": 3}, id="Seq2Seq-bi3"),
]


@pytest.mark.parametrize("cls,kw", MODELS)
def test_fused_and_reference_give_the_same_loss_and_gradients(cls, kw):
    fused = build(cls, **kw)
    ref = twin(fused)
    batch = make_batch()
    extra = {} if cls is Seq2Seq else {"kl_weight": 0.7}
    out_f, out_r = run_loss(fused, batch, **extra), run_loss(ref, batch, **extra)
    for name in ("loss", "nll", "kl", "label", "bow"):
        a, b = getattr(out_f, name), getattr(out_r, name)
        assert (a is None) == (b is None), name
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=name)
    out_f.loss.backward()
    out_r.loss.backward()
    assert_same_grads(fused, ref)


def assert_same_grads(a, b):
    grads_b = dict(b.named_parameters())
    for name, p in a.named_parameters():
        q = grads_b[name]
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_fused_and_reference_give_the_same_labeling_loss_and_gradients(bidirectional):
    fused = build(SLCVAE, bidirectional=bidirectional)
    ref = twin(fused)
    batch = make_batch(B=6, Tc=9, Tx=8, seed=4)
    out_f, out_r = fused.labeling_loss(batch), ref.labeling_loss(batch)
    torch.testing.assert_close(out_f.loss, out_r.loss, rtol=1e-5, atol=1e-5)
    out_f.loss.backward()
    out_r.loss.backward()
    assert_same_grads(fused, ref)


@pytest.mark.parametrize("cls,kw", [p for p in MODELS if p.id in ("SentenceVAE-L2", "CVAE", "Seq2Seq-bi3")])
def test_per_sentence_nll_is_the_same_on_both_backends(cls, kw):
    # evaluation's reduction="none": each sentence's sum over its own tokens, whatever lies past its length
    fused = build(cls, **kw).eval()
    ref = twin(fused).eval()
    batch = make_batch(B=7, Tx=9, seed=5)
    inputs, targets = fused._decoder_io(batch)
    cond_size = fused.decoder.init_state.in_features
    cond = torch.randn(7, cond_size, generator=torch.Generator().manual_seed(0))
    per_sentence = [
        m.decoder.nll(m.embedding(inputs), targets, batch.target_lengths, cond, reduction="none") for m in (fused, ref)
    ]
    assert per_sentence[0].shape == (7,)
    torch.testing.assert_close(per_sentence[0], per_sentence[1], rtol=1e-5, atol=1e-5)
    summed = ref.decoder.nll(ref.embedding(inputs), targets, batch.target_lengths, cond)
    torch.testing.assert_close(summed, per_sentence[1].sum(), rtol=1e-5, atol=1e-5)
    # a sentence's NLL ignores the padding: garbage tokens past its length change nothing
    noisy = inputs.clone()
    for b, n in enumerate(batch.target_lengths.tolist()):
        noisy[b, n:] = V - 1
    again = ref.decoder.nll(ref.embedding(noisy), targets, batch.target_lengths, cond, reduction="none")
    torch.testing.assert_close(again, per_sentence[1], rtol=1e-6, atol=1e-6)


def lstm_inputs(model):
    """Every LSTM call of the model's nn.LSTMs: ``(module name, packed?)``."""
    seen = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.LSTM):
            module.register_forward_pre_hook(
                lambda _m, args, _n=name: seen.append((_n, isinstance(args[0], torch.nn.utils.rnn.PackedSequence)))
            )
    return seen


def test_reference_backend_packs_only_bidirectional_encoders(monkeypatch):
    # nn.LSTM reaches oneDNN only with a plain tensor: the unidirectional reference model never packs
    def no_packing(*args, **kwargs):
        raise AssertionError("a unidirectional reference model packed its batch")

    uni = build(SLCVAE, backend="reference")
    seen = lstm_inputs(uni)
    with monkeypatch.context() as m:
        m.setattr(fastvae.nn.rnn, "pack_padded_sequence", no_packing)
        batch = make_batch()
        uni(batch, kl_weight=0.5).loss.backward()
        uni.labeling_loss(batch).loss.backward()
        uni.generate(batch.context, batch.context_lengths, max_length=3)
    names = {name for name, _ in seen}
    assert names == {
        "context_encoder.lstm", "target_encoder.lstm", "label_context_encoder.lstm",
        "label_target_encoder.lstm", "decoder.lstm",
    }
    assert not any(packed for _, packed in seen)

    bi = build(SLCVAE, backend="reference", bidirectional=True)
    seen = lstm_inputs(bi)
    bi(make_batch(), kl_weight=0.5)
    assert {name for name, packed in seen if packed} == names - {"decoder.lstm"}
    assert not any(packed for name, packed in seen if name == "decoder.lstm")


def test_word_dropout_replaces_decoder_inputs_with_unk_but_never_sos_or_pad():
    model = build(SentenceVAE, word_dropout=1.0)
    tokens = torch.tensor([[SOS, 5, 6, PAD, PAD]])
    dropped = model.embedding.drop_words(tokens)
    assert dropped.tolist() == [[SOS, UNK, UNK, PAD, PAD]]
    model.eval()
    assert torch.equal(model.embedding.drop_words(tokens), tokens)


def test_fused_backend_runs_the_fused_ops(monkeypatch):
    calls = []
    for name in ("lstm_stack", "lstm_cell", "linear_cross_entropy", "kl_label_loss", "reparameterize"):
        original = getattr(fastvae.ops, name)
        monkeypatch.setattr(fastvae.ops, name, lambda *a, _o=original, _n=name, **k: calls.append(_n) or _o(*a, **k))
    model = build(SLCVAE)
    model(make_batch()).loss.backward()
    assert {"lstm_stack", "linear_cross_entropy", "kl_label_loss", "reparameterize"} <= set(calls)
    batch = make_batch(B=2)
    model.generate(batch.context, batch.context_lengths, max_length=3)
    assert "lstm_cell" in calls


def test_kl_is_exactly_zero_when_posterior_equals_prior():
    model = build(CVAE)
    with torch.no_grad():
        for net in (model.prior, model.recognition):
            net.out.weight.zero_()
            net.out.bias.zero_()
    out = model(make_batch(), kl_weight=1.0)
    assert out.kl.item() == 0.0


# ------------------------------------------------------------------ SLCVAE


def snapshot(params):
    return [p.detach().clone() for p in params]


def test_slcvae_phases_update_only_their_own_parameters():
    model = build(SLCVAE)
    cvae_opt = torch.optim.Adam(model.cvae_parameters(), lr=1e-2)
    label_opt = torch.optim.Adam(model.labeling_parameters(), lr=1e-2)
    batch = make_batch()

    # labeling phase alone: the decoder (and every CVAE parameter) gets no gradient and does not move
    before_cvae = snapshot(model.cvae_parameters())
    before_label = snapshot(model.labeling_parameters())
    label_opt.zero_grad()
    model.labeling_loss(batch).loss.backward()
    assert all(p.grad is None for p in model.cvae_parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.labeling_parameters())
    label_opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before_cvae, model.cvae_parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(before_label, model.labeling_parameters()))

    # CVAE phase alone: the labeling network gets no gradient and does not move
    before_label = snapshot(model.labeling_parameters())
    cvae_opt.zero_grad()
    label_opt.zero_grad()
    model(batch, kl_weight=0.5).loss.backward()
    assert all(p.grad is None for p in model.labeling_parameters())
    cvae_opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before_label, model.labeling_parameters()))

    # parameters stay trainable after the labeling phase froze them
    assert all(p.requires_grad for p in model.parameters())


def test_slcvae_train_step_runs_both_phases_and_lowers_the_loss():
    model = build(SLCVAE)
    cvae_opt = torch.optim.Adam(model.cvae_parameters(), lr=1e-2)
    label_opt = torch.optim.Adam(model.labeling_parameters(), lr=1e-2)
    batch = make_batch()
    first = model.train_step(batch, cvae_opt, label_opt, kl_weight=0.1)
    assert set(first) == {"loss", "nll", "kl", "label", "label_nll"}
    for _ in range(30):
        last = model.train_step(batch, cvae_opt, label_opt, kl_weight=0.1, max_grad_norm=5.0)
    assert last["nll"] < first["nll"]
    assert last["label_nll"] < first["label_nll"]


def test_slcvae_label_weight_is_annealed_with_the_kl_weight():
    model = build(SLCVAE, label_loss_weight=2.0)
    batch = make_batch()
    zero = model(batch, kl_weight=0.0, generator=torch.Generator().manual_seed(3))
    assert zero.loss.item() == pytest.approx(zero.nll.item(), rel=1e-6)
    explicit = model(batch, kl_weight=0.5, label_weight=1.0, generator=torch.Generator().manual_seed(3))
    default = model(batch, kl_weight=0.5, generator=torch.Generator().manual_seed(3))
    assert default.loss.item() == pytest.approx(explicit.loss.item(), rel=1e-6)


def test_label_prior_weight_adds_the_prior_log_density_of_z_label():
    plain, regular = build(SLCVAE), build(SLCVAE, label_prior_weight=0.5)
    regular.load_state_dict(plain.state_dict())
    batch = make_batch()
    base = plain.labeling_loss(batch)
    out = regular.labeling_loss(batch)
    with torch.no_grad():
        h_c = regular.encode_context(batch.context, batch.context_lengths)
        mu_p, logvar_p = regular.prior(h_c)
        z_label = regular.label(batch)
        penalty = 0.5 * ((z_label - mu_p) ** 2 / logvar_p.exp()).sum(1).mean()
    assert base.label is None
    assert out.nll.item() == pytest.approx(base.nll.item(), rel=1e-6)
    assert out.label.item() == pytest.approx(penalty.item(), rel=1e-5)
    assert out.loss.item() == pytest.approx(base.loss.item() + 0.5 * penalty.item(), rel=1e-5)
    out.loss.backward()  # the prior net stays frozen in the labeling phase
    assert all(p.grad is None for p in regular.cvae_parameters())
    with pytest.raises(ValueError, match="label_prior_weight"):
        build(SLCVAE, label_prior_weight=-1.0)


def test_z_label_gets_no_gradient_in_the_cvae_phase():
    model = build(SLCVAE)
    model(make_batch()).loss.backward()
    assert all(p.grad is None for p in model.labeling_parameters())


# -------------------------------------------------------------- generation


@pytest.mark.parametrize("cls", [CVAE, SLCVAE, Seq2Seq])
@pytest.mark.parametrize("strategy", ["greedy", "sample", "beam"])
def test_generate_shapes_and_eos(cls, strategy):
    model = build(cls)
    batch = make_batch(B=3)
    tokens, lengths = model.generate(
        batch.context, batch.context_lengths, num_samples=4, strategy=strategy, max_length=9, beam_size=3,
        generator=torch.Generator().manual_seed(0),
    )
    assert tokens.shape == (3, 4, 9) and lengths.shape == (3, 4)
    assert tokens.dtype == torch.int64 and lengths.dtype == torch.int64
    assert ((lengths >= 1) & (lengths <= 9)).all()
    for row, n in zip(tokens.view(-1, 9), lengths.view(-1)):
        n = int(n)
        assert (row[n:] == PAD).all()
        eos = (row[:n] == EOS).nonzero().flatten().tolist()
        assert eos in ([n - 1], []) and (eos or n == 9)


def test_generation_stops_each_row_at_eos():
    model = build(CVAE)
    with torch.no_grad():  # make <eos> the certain first token
        model.decoder.out.weight.zero_()
        model.decoder.out.bias.zero_()
        model.decoder.out.bias[EOS] = 10.0
    batch = make_batch(B=2)
    tokens, lengths = model.generate(batch.context, batch.context_lengths, num_samples=2, max_length=6)
    assert (lengths == 1).all()
    assert (tokens[..., 0] == EOS).all() and (tokens[..., 1:] == PAD).all()


@pytest.mark.parametrize("strategy", ["greedy", "sample"])
def test_generation_is_reproducible_for_a_seed(strategy):
    model = build(SLCVAE)
    batch = make_batch(B=3)
    run = lambda seed: model.generate(  # noqa: E731
        batch.context, batch.context_lengths, num_samples=5, strategy=strategy, max_length=8,
        generator=torch.Generator().manual_seed(seed),
    )
    a, b, c = run(11), run(11), run(12)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


class _CountdownOut:
    """``hidden[:, 0]``: steps left; ``hidden[:, 1]``: the row's word. <eos> when the count reaches 0."""

    def greedy(self, hidden):
        return torch.where(hidden[:, 0] <= 0, torch.full_like(hidden[:, 1], EOS), hidden[:, 1]).long()

    def logits(self, hidden):  # all the mass on the greedy token, so sampling draws it too
        return torch.full((hidden.shape[0], V), float("-inf")).scatter(1, self.greedy(hidden).unsqueeze(1), 0.0)


class _CountdownDecoder:
    out = _CountdownOut()

    def step(self, embedded, state):
        h, c = state
        assert embedded.shape[0] == h.shape[1]  # the embedded previous tokens of the same rows
        h = h.clone()
        h[..., 0] -= 1
        return h[-1], (h, c)


@pytest.mark.parametrize("strategy", ["greedy", "sample"])
def test_finished_rows_leave_the_batch_without_changing_the_others(strategy):
    steps = torch.tensor([3.0, 1.0, 6.0, 2.0, 9.0])  # row r says its word steps[r] - 1 times, then <eos>
    words = torch.tensor([5.0, 6.0, 7.0, 8.0, 9.0])
    h = torch.stack([steps, words], dim=1).unsqueeze(0).repeat(2, 1, 1)  # [L=2, R=5, 2]
    embed = lambda tokens: torch.nn.functional.one_hot(tokens, V).float()  # noqa: E731
    tokens, lengths = decode(
        _CountdownDecoder(), embed, (h, torch.zeros_like(h)), sos_id=SOS, eos_id=EOS, pad_id=PAD,
        options=DecodeOptions(strategy, max_length=7), generator=torch.Generator().manual_seed(0),
    )
    assert lengths.tolist() == [3, 1, 6, 2, 7]  # the last row never ends within 7 tokens
    for r in range(5):
        n = int(lengths[r])
        said = [int(words[r])] * (n if r == 4 else n - 1) + ([] if r == 4 else [EOS])
        assert tokens[r].tolist() == said + [PAD] * (7 - n)


def test_samples_differ_across_z_draws():
    model = build(CVAE)
    with torch.no_grad():  # a strong latent so different z give different words
        model.decoder.init_state.weight.mul_(20)
    batch = make_batch(B=2)
    tokens, _ = model.generate(batch.context, batch.context_lengths, num_samples=8, max_length=6,
                               generator=torch.Generator().manual_seed(0))
    assert len({tuple(t.tolist()) for t in tokens[0]}) > 1


@pytest.mark.parametrize("cls", [CVAE, Seq2Seq])
def test_beam_size_one_equals_greedy(cls):
    model = build(cls)
    batch = make_batch(B=4)
    kw = dict(num_samples=2 if cls is CVAE else 1, max_length=8)
    greedy = model.generate(batch.context, batch.context_lengths, strategy="greedy",
                            generator=torch.Generator().manual_seed(5), **kw)
    beam = model.generate(batch.context, batch.context_lengths, strategy="beam", beam_size=1,
                          generator=torch.Generator().manual_seed(5), **kw)
    assert torch.equal(greedy[0], beam[0]) and torch.equal(greedy[1], beam[1])


def test_seq2seq_beam_returns_the_n_best_hypotheses():
    model = build(Seq2Seq)
    batch = make_batch(B=3)
    one = model.generate(batch.context, batch.context_lengths, num_samples=1, strategy="beam", beam_size=4, max_length=8)
    many, lengths = model.generate(batch.context, batch.context_lengths, num_samples=4, strategy="beam", beam_size=4,
                                   max_length=8)
    assert many.shape == (3, 4, 8) and lengths.shape == (3, 4)
    assert torch.equal(many[:, 0], one[0][:, 0])  # best first
    for b in range(3):  # four different hypotheses per input, not four copies
        assert len({tuple(t.tolist()) for t in many[b]}) == 4
    # a beam narrower than num_samples widens to it
    wide, _ = model.generate(batch.context, batch.context_lengths, num_samples=4, strategy="beam", beam_size=2, max_length=8)
    assert torch.equal(wide, many)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_generation_fused_equals_reference(bidirectional):
    fused = build(SLCVAE, bidirectional=bidirectional)
    ref = twin(fused)
    batch = make_batch(B=3)
    kw = dict(num_samples=3, max_length=8)
    a = fused.generate(batch.context, batch.context_lengths, generator=torch.Generator().manual_seed(2), **kw)
    b = ref.generate(batch.context, batch.context_lengths, generator=torch.Generator().manual_seed(2), **kw)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("kw", [{}, {"num_layers": 2, "bidirectional": True}], ids=["uni", "bi2"])
def test_sentence_vae_codes_and_reconstructions_fused_equal_reference(kw):
    fused = build(SentenceVAE, **kw)
    ref = twin(fused)
    batch = make_batch(B=6, Tx=9, seed=6)
    mu_f, logvar_f = fused.encode(batch.target, batch.target_lengths)
    mu_r, logvar_r = ref.encode(batch.target, batch.target_lengths)
    torch.testing.assert_close(mu_f, mu_r, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logvar_f, logvar_r, rtol=1e-5, atol=1e-6)
    rec_f = fused.reconstruct(batch.target, batch.target_lengths, max_length=9)
    rec_r = ref.reconstruct(batch.target, batch.target_lengths, max_length=9)
    assert torch.equal(rec_f[0], rec_r[0]) and torch.equal(rec_f[1], rec_r[1])


def test_sentence_vae_sample_reconstruct_interpolate():
    model = build(SentenceVAE)
    tokens, lengths = model.sample(6, max_length=7, generator=torch.Generator().manual_seed(0))
    assert tokens.shape == (6, 7) and lengths.shape == (6,)
    again = model.sample(6, max_length=7, generator=torch.Generator().manual_seed(0))
    assert torch.equal(tokens, again[0])
    batch = make_batch(B=3)
    rec, rec_len = model.reconstruct(batch.target, batch.target_lengths, max_length=7)
    assert rec.shape == (3, 7)
    a = batch.target[0, : batch.target_lengths[0]]
    b = batch.target[1, : batch.target_lengths[1]]
    path, path_len = model.interpolate(a, b, steps=4, max_length=7)
    assert path.shape == (4, 7)
    mu_a, _ = model.encode(a.unsqueeze(0), torch.tensor([a.numel()]))
    ends, _ = model._decode_from(mu_a, fastvae.models.generation.DecodeOptions(max_length=7))
    assert torch.equal(path[0], ends[0])


def test_sentence_vae_decodes_without_dropout_in_train_mode():
    # from_pretrained used to return a model in train mode, and these methods decoded with its dropout on
    model = build(SentenceVAE, embed_dropout=0.5, word_dropout=0.5)
    batch = make_batch(B=3)
    a, b = (batch.target[i, : batch.target_lengths[i]] for i in (0, 1))
    calls = {
        "sample": lambda: model.sample(4, max_length=7, generator=torch.Generator().manual_seed(0))[0],
        "reconstruct": lambda: model.reconstruct(batch.target, batch.target_lengths, max_length=7)[0],
        "interpolate": lambda: model.interpolate(a, b, steps=3, max_length=7)[0],
    }
    for name, call in calls.items():
        model.eval()
        want = call()
        model.train()
        torch.manual_seed(1)
        first = call()
        torch.manual_seed(2)
        assert torch.equal(first, want) and torch.equal(call(), want), name
        assert model.training, name  # the caller's mode is restored


# --------------------------------------------------------------- save/load


@pytest.mark.parametrize("cls,kw", MODELS)
def test_save_load_round_trip(cls, kw, tmp_path):
    model = build(cls, **kw)
    model.save_pretrained(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["model"] == cls.__name__
    loaded = cls.from_pretrained(tmp_path / "m")
    assert not loaded.training  # ready for inference, as the Trainer's .train() undoes
    for (n, p), (_, q) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(p, q), n
    batch = make_batch()
    assert torch.equal(run_loss(model, batch).loss, run_loss(loaded, batch).loss)
    other = cls.from_pretrained(tmp_path / "m", backend="reference")
    assert other.backend == "reference"
    torch.testing.assert_close(run_loss(other, batch).loss, run_loss(model, batch).loss, rtol=1e-5, atol=1e-5)


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model directory"):
        CVAE.from_pretrained(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        CVAE.from_pretrained(tmp_path / "empty")
    model = build(CVAE)
    model.save_pretrained(tmp_path / "m")
    with pytest.raises(ValueError, match="holds a CVAE, not a SLCVAE"):
        SLCVAE.from_pretrained(tmp_path / "m")
    corrupt = tmp_path / "corrupt"
    model.save_pretrained(corrupt)
    (corrupt / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="corrupt"):
        CVAE.from_pretrained(corrupt)
    (corrupt / "config.json").write_text("{broken")
    with pytest.raises(ValueError, match="corrupt"):
        CVAE.from_pretrained(corrupt)
    mismatch = tmp_path / "mismatch"
    model.save_pretrained(mismatch)
    cfg = json.loads((mismatch / "config.json").read_text())
    cfg["config"]["hidden_size"] = H + 1
    (mismatch / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="does not match"):
        CVAE.from_pretrained(mismatch)
    a_file = tmp_path / "weights.bin"
    a_file.write_bytes(b"x")
    with pytest.raises(ValueError, match="is a file"):
        model.save_pretrained(a_file)
    assert a_file.read_bytes() == b"x"


def test_save_overwrites_atomically(tmp_path):
    model = build(Seq2Seq)
    model.save_pretrained(tmp_path)
    model.save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]


# --------------------------------------------------------------- bad input


def test_bad_input_gives_clear_errors():
    model = build(CVAE)
    batch = make_batch()
    bad = copy.deepcopy(batch)
    bad.target[0, 0] = V
    with pytest.raises(ValueError, match=f"target holds token id {V}"):
        model(bad)
    bad = copy.deepcopy(batch)
    bad.context[1, 0] = -1
    with pytest.raises(ValueError, match="context holds token id -1"):
        model(bad)
    bad = copy.deepcopy(batch)
    bad.target_lengths = batch.target_lengths[:-1]
    with pytest.raises(ValueError, match="target_lengths must have shape"):
        model(bad)
    bad = copy.deepcopy(batch)
    bad.target_lengths = batch.target_lengths.clone()
    bad.target_lengths[0] = 0
    with pytest.raises(ValueError, match="target_lengths must lie in"):
        model(bad)
    with pytest.raises(ValueError, match="empty"):
        model(Batch(batch.target[:0], batch.target_lengths[:0], batch.context[:0], batch.context_lengths[:0]))
    with pytest.raises(TypeError, match="int64"):
        model(Batch(batch.target.float(), batch.target_lengths, batch.context, batch.context_lengths))
    with pytest.raises(ValueError, match="needs batch.context"):
        model(Batch(batch.target, batch.target_lengths))
    with pytest.raises(ValueError, match="same batch size"):
        model(Batch(batch.target, batch.target_lengths, batch.context[:2], batch.context_lengths[:2]))
    with pytest.raises(TypeError, match="Batch"):
        model((batch.target, batch.target_lengths))
    with pytest.raises(ValueError, match="backend"):
        CVAE(V, backend="cuda")
    with pytest.raises(ValueError, match="strategy"):
        model.generate(batch.context, batch.context_lengths, strategy="nucleus")
    with pytest.raises(ValueError, match="num_samples"):
        model.generate(batch.context, batch.context_lengths, num_samples=0)
