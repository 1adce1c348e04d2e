"""Edge and bad inputs across the public API: empty sizes, extreme values, higher-order
gradients, misused models. Each case once crashed, returned a wrong number silently, or
raised an error that did not name the argument."""

import json
import os

import pytest
import torch

import batches

from fastvae import CVAE, SLCVAE, Seq2Seq, SentenceVAE, ops
from fastvae.models.generation import DecodeOptions, sample_from_logits

V, E, H, Z = 12, 6, 8, 3


def small(cls, **kw):
    args = dict(embed_dim=E, hidden_size=H, num_layers=1)
    if cls is not Seq2Seq:
        args["latent_size"] = Z
    args.update(kw)
    torch.manual_seed(0)
    return cls(V, **args)


# ------------------------------------------------------------------ empty sizes


def test_lstm_with_hidden_size_zero_is_the_reference_result():
    # this shape killed the process (SIGFPE) in the C++ kernel
    x, w_ih, w_hh = torch.randn(2, 3, 5), torch.randn(0, 5), torch.randn(0, 0)
    h0 = c0 = torch.randn(3, 0)
    for got, want in zip(ops.lstm(x, h0, c0, w_ih, w_hh), ops.lstm_ref(x, h0, c0, w_ih, w_hh)):
        assert got.shape == want.shape
    h, c = ops.lstm_cell(x[0], h0, c0, w_ih, w_hh)
    assert h.shape == c.shape == (3, 0)


def test_linear_argmax_with_no_features_scores_the_bias_alone():
    # every row after the kernel's first 48-row block used to count the bias twice
    hidden, weight, bias = torch.randn(100, 0), torch.randn(300, 0), torch.randn(300)
    index, value = ops.linear_argmax(hidden, weight, bias)
    ref_index, ref_value = ops.linear_argmax_ref(hidden, weight, bias)
    torch.testing.assert_close(value, ref_value)
    assert torch.equal(index, ref_index)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_linear_argmax_without_words_names_weight(dtype):
    with pytest.raises(ValueError, match="weight must hold at least one word"):
        ops.linear_argmax(torch.randn(4, 3, dtype=dtype), torch.randn(0, 3, dtype=dtype))


# -------------------------------------------------------------- extreme values


def test_latent_ops_overflow_and_underflow_like_the_reference():
    """Log-variances past float32's exp range give inf / 0 as torch.exp does, not a clamped number."""
    mu = torch.zeros(1, 3)
    logvar = torch.tensor([[89.0, 200.0, -200.0]])
    kl, ref = ops.gaussian_kl(mu, logvar), ops.gaussian_kl_ref(mu, logvar)
    assert torch.isinf(kl).all() and torch.isinf(ref).all()
    eps = torch.ones(1, 3)
    z, z_ref = ops.reparameterize(mu, logvar, eps=eps), ops.reparameterize_ref(mu, logvar, eps=eps)
    assert z[0, 0] == z_ref[0, 0]  # exp(44.5), well inside float32's range
    assert torch.isinf(z[0, 1]) and torch.isinf(z_ref[0, 1])
    assert abs(float(z[0, 2])) <= 1e-38 and abs(float(z_ref[0, 2])) <= 1e-38
    # a prior log-variance of -89 or -100: e^-logvar_p overflows; both give inf (the kernel
    # used to give NaN where the means are equal: 0 * inf), also with kl_label_loss
    for lp in (-89.0, -100.0):
        prior = (mu, torch.zeros(1, 3), mu, torch.full((1, 3), lp))
        assert torch.isinf(ops.gaussian_kl(*prior)).all() and torch.isinf(ops.gaussian_kl_ref(*prior)).all()
        z = torch.zeros(1, 3)
        kl = ops.kl_label_loss(*prior, z, z, 1.0, 1.0)[1]
        assert torch.equal(kl, ops.kl_label_loss_ref(*prior, z, z, 1.0, 1.0)[1])
    shifted = (mu, torch.zeros(1, 3), mu + 1, torch.full((1, 3), -100.0))
    assert torch.isinf(ops.gaussian_kl(*shifted)).all()
    # near the end of the range the values still match the reference
    near = torch.tensor([[88.5, -86.0, 40.0]])
    torch.testing.assert_close(ops.gaussian_kl(mu, near), ops.gaussian_kl_ref(mu, near), rtol=1e-5, atol=0)


# ------------------------------------------------------- higher-order gradients


def _second_order(loss, inputs):
    (grad,) = torch.autograd.grad(loss, inputs, create_graph=True)
    return torch.autograd.grad(grad.pow(2).sum(), inputs)


def test_fused_ops_refuse_double_backward_by_name():
    torch.manual_seed(0)
    h = torch.randn(5, 4, requires_grad=True)
    cases = {
        "linear_cross_entropy": lambda: ops.linear_cross_entropy(h, torch.randn(6, 4), None, torch.randint(0, 6, (5,))),
        "lstm": lambda: ops.lstm(h.unsqueeze(0), torch.zeros(5, 2), torch.zeros(5, 2), torch.randn(8, 4),
                                 torch.randn(8, 2))[0].pow(2).sum(),
        "reparameterize": lambda: ops.reparameterize(h, h, eps=torch.randn(5, 4)).pow(2).sum(),
        "gaussian_kl": lambda: ops.gaussian_kl(h, h).sum(),
        "kl_label_loss": lambda: ops.kl_label_loss(h, h, None, None, h, torch.randn(5, 4), 1.0, 1.0)[0].sum(),
    }
    for name, loss in cases.items():
        with pytest.raises(RuntimeError, match=f"fastvae.ops.{name} is differentiable once"):
            _second_order(loss(), h)
    # first-order gradients are unaffected, and the twins do give second-order ones
    torch.autograd.grad(cases["gaussian_kl"](), h)
    assert _second_order(ops.gaussian_kl_ref(h, h).sum(), h)[0].shape == h.shape


# ------------------------------------------------------------- named arguments


def test_latent_ops_name_a_missing_tensor():
    m = torch.randn(2, 3)
    with pytest.raises(TypeError, match="logvar_q must be a torch.Tensor"):
        ops.gaussian_kl(m, None)
    for missing in ("z", "z_label"):
        args = dict(mu_q=m, logvar_q=m, mu_p=None, logvar_p=None, z=m, z_label=m, kl_weight=1.0, label_weight=1.0)
        args[missing] = None
        with pytest.raises(TypeError, match=f"{missing} must be a torch.Tensor"):
            ops.kl_label_loss(**args)


def test_reference_twins_check_their_numbers_too():
    m = torch.randn(2, 3)
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="free_bits"):
            ops.gaussian_kl_ref(m, m, free_bits=bad)
    with pytest.raises(ValueError, match="kl_weight"):
        ops.kl_label_loss_ref(m, m, None, None, m, m, float("inf"), 1.0)


def test_small_argument_errors():
    with pytest.raises(ValueError, match="ignore_index must fit in int64"):
        ops.linear_cross_entropy(torch.randn(2, 3), torch.randn(4, 3), None, torch.tensor([0, 1]), ignore_index=2**70)
    with pytest.raises(TypeError, match="reverse must be a bool"):
        ops.lstm(torch.randn(2, 1, 3), torch.zeros(1, 2), torch.zeros(1, 2), torch.randn(8, 3), torch.randn(8, 2),
                 reverse=None)
    with pytest.raises(TypeError, match="logits must be a torch.Tensor"):
        sample_from_logits([[0.0, 1.0]])
    with pytest.raises(ValueError, match="V >= 1"):
        sample_from_logits(torch.zeros(3, 0))
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


# ---------------------------------------------------------------------- models


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


# ------------------------------------------------------------ evaluation, metrics, plots


def test_evaluation_refuses_inputs_it_would_misread(tmp_path):
    from fastvae.data import Example, TextDataset, Vocab
    from fastvae.evaluate import evaluate_generation, evaluate_random_responses, split_by_seen

    words = ["in", "the", "beginning", "earth", "was"]
    vocab = Vocab.build([words])
    good = TextDataset([Example(["in"], ["the"], 0), Example(["in"], ["earth"], 0), Example(["was"], ["the"], 1)], vocab)
    model = CVAE(len(vocab), embed_dim=4, hidden_size=4, latent_size=2, num_layers=1)
    # two sources under one group id: the second would vanish from the scores
    merged = TextDataset([Example(["in"], ["the"], 0), Example(["was"], ["earth"], 0)], vocab)
    with pytest.raises(ValueError, match="share group 0 but have different sources"):
        evaluate_generation(model, merged, vocab, num_samples=1)
    # a vocabulary of the same size in another order would decode other words
    shuffled = Vocab(vocab.itos[:4] + vocab.itos[4:][::-1])
    with pytest.raises(ValueError, match="not the vocabulary dataset was encoded with"):
        evaluate_generation(model, good, shuffled, num_samples=1)
    with pytest.raises(TypeError, match="vocab must be a fastvae.data.Vocab"):
        evaluate_generation(model, good, None, num_samples=1)
    with pytest.raises(TypeError, match="responses must hold token-id lists"):
        evaluate_random_responses(good, [["the", "earth"]], vocab)
    with pytest.raises(TypeError, match="responses must hold token-id lists"):
        evaluate_random_responses(good, [[4.7]], vocab)
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match="max_inputs"):
            split_by_seen(good, good.sources, max_inputs=bad)
    assert evaluate_generation(model, good, vocab, num_samples=2)["inputs"] == 2
    from fastvae.evaluate import evaluate_likelihood

    for device, words in (("gpu", "device must name a device"), ("mps", "device must be cpu or cuda")):
        with pytest.raises(ValueError, match=words):
            evaluate_likelihood(model, good, device=device)


def test_metrics_refuse_strings_and_bad_orders():
    from fastvae.metrics import bleu, bleu_precision_recall, corpus_bleu_pr, distinct_n

    with pytest.raises(TypeError, match="expected a list of tokens"):
        bleu("the cat", "the cat")  # scored letter by letter, this gave 1.23
    with pytest.raises(TypeError, match="expected a list of tokens"):
        distinct_n(["the cat sat"], 1)
    with pytest.raises(TypeError, match="samples: expected a list of tokens, got the string 'the'"):
        bleu_precision_recall(["the", "cat"], ["the", "cat"])  # one sample, not two one-word samples
    with pytest.raises(TypeError, match="not strings"):
        bleu_precision_recall("the cat", [["the", "cat"]])
    with pytest.raises(TypeError):
        corpus_bleu_pr([["the", "cat"]], [["the", "cat"]])
    for orders in ((), (0,), (-1,)):
        with pytest.raises(ValueError, match="orders"):
            bleu(["a"], ["a"], orders=orders)
    for n in (0, 1.5, "2", None, True):
        with pytest.raises(ValueError, match="n must be an integer"):
            distinct_n([["a", "b"]], n)
    with pytest.raises(ValueError, match="smoothing"):
        bleu(["a"], ["a"], smoothing=len)
    assert bleu(["good", "morning", "to", "you"], ["good", "morning", "to", "you"]) > 0.99


def test_plots_write_png_files_only_and_take_numpy_labels(tmp_path):
    import numpy as np

    from fastvae.data import TextDataset, Vocab
    from fastvae.plots import plot_latent_projection

    vocab = Vocab.build([["a", "b", "c"]])
    data = TextDataset([["a", "b"], ["b", "c"], ["c"]], vocab)
    model = SentenceVAE(len(vocab), embed_dim=4, hidden_size=4, latent_size=3)
    for bad, words in ((tmp_path / "x.pdf", "must end in .png"), (tmp_path, "is a directory")):
        with pytest.raises(ValueError, match=words):
            plot_latent_projection(model, data, bad)
    labels = np.array([0, 1, 0])
    out = plot_latent_projection(model, data, tmp_path / "z.png", labels=list(labels))
    assert os.path.getsize(out) > 0
