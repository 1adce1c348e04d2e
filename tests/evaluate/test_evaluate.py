"""fastvae.evaluate: likelihood terms, generation metrics and the JSON report."""

import json
import math

import numpy as np
import pytest
import torch

from fastvae import CVAE, SLCVAE, Seq2Seq, SentenceVAE
from fastvae.data import Example, TextDataset, Vocab, batches
from fastvae.evaluate import (
    evaluate_generation,
    evaluate_likelihood,
    evaluate_echo_responses,
    evaluate_random_responses,
    generate_texts,
    posterior_parameters,
    split_by_seen,
    write_report,
)
from fastvae.evaluate.likelihood import _batch_mutual_info
from fastvae.metrics import bleu, corpus_bleu_pr, derangement, distinct_n

WORDS = "the a cat dog sat ran on in mat park big small red blue one two three".split()
SMALL = dict(embed_dim=8, hidden_size=12, num_layers=1, backend="reference")
VAES = (SentenceVAE, CVAE, SLCVAE)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def random_examples(n_groups=12, per_group=2, seed=0):
    g = gen(seed)

    def sentence():
        n = int(torch.randint(1, 6, (1,), generator=g))
        return [WORDS[int(j)] for j in torch.randint(0, len(WORDS), (n,), generator=g)]

    sources = [sentence() for _ in range(n_groups)]  # a group is one source with several references
    return [Example(sources[group], sentence(), group) for group in range(n_groups) for _ in range(per_group)]


@pytest.fixture(scope="module")
def data():
    examples = random_examples()
    vocab = Vocab.build([WORDS])
    return vocab, TextDataset(examples, vocab), TextDataset([e.target for e in examples], vocab)


def build(cls, vocab, **kw):
    args = dict(SMALL, **kw)
    if cls is not Seq2Seq:
        args.setdefault("latent_size", 4)
    return cls(len(vocab), **args)


def dataset_for(cls, data):
    _, conditional, plain = data
    return plain if cls is SentenceVAE else conditional


# ----------------------------------------------------------------- likelihood


@pytest.mark.parametrize("backend", ["reference", "fused"])
@pytest.mark.parametrize("cls", [SentenceVAE, CVAE, SLCVAE, Seq2Seq])
def test_report_keys_and_identities(cls, backend, data):
    vocab, _, _ = data
    dataset = dataset_for(cls, data)
    model = build(cls, vocab, backend=backend)
    model.train()
    report = evaluate_likelihood(model, dataset, batch_size=5, generator=gen())
    assert model.training  # mode restored
    assert report["model"] == cls.__name__
    assert report["sentences"] == len(dataset)
    assert report["tokens"] == sum(len(t) for t in dataset.targets)  # <eos> counted
    assert report["rec_nll_per_token"] == pytest.approx(report["rec_nll"] * report["sentences"] / report["tokens"])
    assert report["ppl_elbo"] == pytest.approx(math.exp(report["elbo"] * report["sentences"] / report["tokens"]))
    assert report["ppl"] == pytest.approx(math.exp(report["nll_per_token"]))
    if cls is Seq2Seq:
        assert evaluate_likelihood(model, dataset, batch_size=5, iw_samples=3) == report  # exact: no IW estimate
        assert "kl" not in report and "active_units" not in report and "mutual_info" not in report
        assert report["nll"] == report["elbo"] == report["rec_nll"] and report["nll_estimate"] == "exact"
    else:
        assert report["elbo"] == pytest.approx(report["rec_nll"] + report["kl"])
        assert report["kl"] >= 0
        assert report["nll"] == report["elbo"] and report["nll_estimate"] == "elbo"
        assert 0 <= report["active_units"] <= report["latent_size"] == 4
        assert report["active_units_threshold"] == 0.01
        assert report["mutual_info"] > -0.5
        assert "nll_iw" not in report


def test_seq2seq_rec_nll_is_the_models_nll(data):
    vocab, dataset, _ = data
    model = build(Seq2Seq, vocab).eval()
    report = evaluate_likelihood(model, dataset, batch_size=len(dataset))
    (batch,) = list(batches(dataset, len(dataset), shuffle=False))
    with torch.no_grad():
        expected = float(model(batch).nll)
    assert report["rec_nll"] == pytest.approx(expected, rel=1e-5)
    # the same over several batches: the mean per sentence does not depend on the batching
    assert evaluate_likelihood(model, dataset, batch_size=7)["rec_nll"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("cls", VAES)
def test_kl_matches_the_model_and_eval_mode_turns_word_dropout_off(cls, data):
    vocab, _, _ = data
    dataset = dataset_for(cls, data)
    model = build(cls, vocab, word_dropout=1.0)  # in training every decoder input would become <unk>
    (batch,) = list(batches(dataset, len(dataset), shuffle=False))
    model.eval()
    with torch.no_grad():
        expected_kl = float(model(batch).kl)
    report = evaluate_likelihood(model.train(), dataset, batch_size=len(dataset), generator=gen())
    assert report["kl"] == pytest.approx(expected_kl, rel=1e-5)
    # a model without word dropout but the same weights gives the same reconstruction term
    twin = build(cls, vocab)
    twin.load_state_dict(model.state_dict())
    again = evaluate_likelihood(twin, dataset, batch_size=len(dataset), generator=gen())
    assert again["rec_nll"] == pytest.approx(report["rec_nll"], rel=1e-6)


@pytest.mark.parametrize("cls", VAES)
def test_reproducible_with_the_same_generator(cls, data):
    vocab, _, _ = data
    dataset = dataset_for(cls, data)
    model = build(cls, vocab)
    first = evaluate_likelihood(model, dataset, batch_size=8, iw_samples=3, generator=gen(5))
    second = evaluate_likelihood(model, dataset, batch_size=8, iw_samples=3, generator=gen(5))
    assert first == second
    other = evaluate_likelihood(model, dataset, batch_size=8, iw_samples=3, generator=gen(6))
    assert other["rec_nll"] != first["rec_nll"]
    assert other["kl"] == pytest.approx(first["kl"])  # analytic: no sampling


@pytest.mark.parametrize("cls", VAES)
def test_importance_weighted_nll_is_tighter_than_the_elbo(cls, data):
    vocab, _, _ = data
    dataset = dataset_for(cls, data)
    model = build(cls, vocab)
    with torch.no_grad():  # a wide, informative posterior, so the bounds differ visibly
        net = model.posterior if cls is SentenceVAE else model.recognition
        net.out.bias[4:].fill_(0.5)
    report = evaluate_likelihood(model, dataset, batch_size=8, iw_samples=20, generator=gen(1))
    assert report["nll_estimate"] == "iw" and report["nll"] == report["nll_iw"]
    assert report["iw_samples"] == 20
    assert report["nll_iw"] <= report["elbo"] + 1e-3
    assert report["nll_iw"] > 0
    assert report["nll_iw_per_token"] == pytest.approx(report["nll_iw"] * report["sentences"] / report["tokens"])
    assert report["ppl_iw"] == pytest.approx(math.exp(report["nll_iw_per_token"]))


def test_importance_weighting_with_an_exact_posterior_is_exact(data):
    """When q(z|x) = p(z) and the decoder ignores z, every weight equals p(x): nll_iw = elbo = rec_nll."""
    vocab, _, plain = data
    model = build(SentenceVAE, vocab)
    with torch.no_grad():
        model.posterior.out.weight.zero_()
        model.posterior.out.bias.zero_()  # q = N(0, I) = p: KL 0
        model.decoder.init_state.weight.zero_()  # the decoder no longer sees z
    report = evaluate_likelihood(model, plain, batch_size=6, iw_samples=5, generator=gen())
    assert report["kl"] == pytest.approx(0.0, abs=1e-7)
    assert report["nll_iw"] == pytest.approx(report["rec_nll"], rel=1e-5)
    assert report["elbo"] == pytest.approx(report["rec_nll"], rel=1e-6)


@pytest.mark.parametrize("cls", VAES)
def test_constant_posterior_has_no_active_units_and_no_information(cls, data):
    vocab, _, _ = data
    dataset = dataset_for(cls, data)
    model = build(cls, vocab)
    with torch.no_grad():
        net = model.posterior if cls is SentenceVAE else model.recognition
        net.out.weight.zero_()  # q(z|x[,c]) = N(bias) for every input
    estimates = [
        evaluate_likelihood(model, dataset, batch_size=len(dataset), generator=gen(seed))
        for seed in range(4)
    ]
    assert all(r["active_units"] == 0 for r in estimates)
    mi = sum(r["mutual_info"] for r in estimates) / len(estimates)
    assert abs(mi) < 0.3  # zero in expectation; Monte-Carlo noise only


def test_separated_posteriors_are_all_active_and_reach_log_batch_size(data):
    """Distinct sentences with far-apart, narrow posteriors: every unit active, MI = log B (the estimator's max).

    Each z_i has density under q(.|x_i) only, so log q(z_i) = log q(z_i|x_i) - log B and the estimate is
    log B - H(q) - log q(z_i|x_i) = log B + 0.5 * sum_u (eps_iu^2 - 1), with the eps the generator drew.
    """
    vocab, _, _ = data
    sentences = [[w] for w in WORDS[:8]]
    dataset = TextDataset(sentences, vocab)
    model = build(SentenceVAE, vocab)
    with torch.no_grad():
        model.posterior.out.weight[:4].mul_(100.0)  # mu spread far apart
        model.posterior.out.weight[4:].zero_()
        model.posterior.out.bias[4:].fill_(-12.0)  # sigma ~ 0.0025
    for batch_size in (8, 4):  # one batch of 8, or two of 4 whose estimates are averaged
        report = evaluate_likelihood(model, dataset, batch_size=batch_size, generator=gen())
        assert report["active_units"] == 4
        g = gen()
        eps = torch.cat([torch.randn(batch_size, 4, generator=g) for _ in range(8 // batch_size)])
        expected = math.log(batch_size) + float(0.5 * (eps**2 - 1).sum(1).mean())
        assert report["mutual_info"] == pytest.approx(expected, abs=1e-3)


def test_batch_mutual_info_by_hand():
    mu = torch.tensor([[0.0], [1.0]])
    logvar = torch.zeros(2, 1)
    z = torch.tensor([[0.5], [0.0]])

    def log_n(x, m):
        return -0.5 * math.log(2 * math.pi) - 0.5 * (x - m) ** 2

    neg_entropy = -0.5 * (math.log(2 * math.pi) + 1)
    log_qz = [math.log((math.exp(log_n(zi, 0.0)) + math.exp(log_n(zi, 1.0))) / 2) for zi in (0.5, 0.0)]
    expected = neg_entropy - sum(log_qz) / 2
    assert _batch_mutual_info(mu, logvar, z) == pytest.approx(expected, rel=1e-6)


def test_posterior_parameters(data):
    vocab, conditional, plain = data
    (batch,) = list(batches(plain, 5, shuffle=False, bucket=False))[:1]
    model = build(SentenceVAE, vocab).eval()
    with torch.no_grad():
        mu, logvar = posterior_parameters(model, batch)
        expected = model.encode(batch.target, batch.target_lengths)
    assert mu.shape == logvar.shape == (5, 4)
    torch.testing.assert_close(mu, expected[0])
    torch.testing.assert_close(logvar, expected[1])
    with pytest.raises(TypeError, match="Seq2Seq"):
        posterior_parameters(build(Seq2Seq, vocab), next(batches(conditional, 5)))


def test_likelihood_errors(data):
    vocab, conditional, plain = data
    with pytest.raises(ValueError, match="dataset"):
        evaluate_likelihood(build(CVAE, vocab), plain)
    with pytest.raises(ValueError, match="batch_size"):
        evaluate_likelihood(build(SentenceVAE, vocab), plain, batch_size=0)
    with pytest.raises(ValueError, match="iw_samples"):
        evaluate_likelihood(build(SentenceVAE, vocab), plain, iw_samples=-1)
    with pytest.raises(TypeError, match="model"):
        evaluate_likelihood(torch.nn.Linear(2, 2), plain)
    with pytest.raises(ValueError, match="dataset"):
        evaluate_likelihood(SentenceVAE(len(vocab) + 1, **SMALL, latent_size=4), plain)


# ----------------------------------------------------------------- generation


def test_generation_metrics_equal_the_metrics_of_the_decoded_samples(data):
    vocab, dataset, _ = data
    model = build(CVAE, vocab)
    report, texts = evaluate_generation(
        model, dataset, vocab, num_samples=3, strategy="sample", max_length=8, batch_size=5, generator=gen(2),
        return_texts=True,
    )
    assert report["inputs"] == 12 == len(texts) and report["num_samples"] == 3 and report["strategy"] == "sample"
    assert evaluate_generation(model, dataset, vocab, num_samples=2, max_inputs=2)["strategy"] == "greedy"
    samples = [[s.split() for s in t["samples"]] for t in texts]
    references = [[r.split() for r in t["references"]] for t in texts]
    precision, recall = corpus_bleu_pr(samples, references)
    assert report["bleu_precision"] == pytest.approx(precision)
    assert report["bleu_recall"] == pytest.approx(recall)
    flat = [s for per_input in samples for s in per_input]
    assert len(flat) == 36
    assert report["distinct_1"] == pytest.approx(distinct_n(flat, 1))
    assert report["distinct_2"] == pytest.approx(distinct_n(flat, 2))
    for n in (1, 2):
        intra = sum(distinct_n(per_input, n) for per_input in samples) / len(samples)
        assert report[f"intra_distinct_{n}"] == pytest.approx(intra)
    assert report["avg_length"] == pytest.approx(sum(map(len, flat)) / 36)
    assert all(len(s) <= 8 for s in flat)
    for text in texts:
        for sentence in text["samples"] + text["references"]:
            assert "<eos>" not in sentence and "<pad>" not in sentence and "<sos>" not in sentence
    # sources and references come from the groups (two targets per source here)
    first = dataset.groups.index(0)
    assert texts[0]["source"] == " ".join(vocab.decode(dataset.sources[first]))
    assert texts[0]["references"] == [" ".join(vocab.decode(dataset.targets[i])) for i in (0, 1)]
    # the same generator state gives the same samples; generate_texts gives the same texts
    again = generate_texts(model, dataset, vocab, num_samples=3, max_length=8, batch_size=5, generator=gen(2))
    assert again == texts


def test_generation_on_identical_examples_by_hand():
    """One input seen three times: one group, three equal references; greedy decoding repeats one sample."""
    vocab = Vocab.build([["hello", "there", "friend"]])
    dataset = TextDataset([Example(["hello", "there"], ["hello", "there"], 0)] * 3, vocab)
    model = build(Seq2Seq, vocab)
    report, texts = evaluate_generation(
        model, dataset, vocab, num_samples=4, strategy="greedy", max_length=5, return_texts=True
    )
    assert report["inputs"] == 1 and texts[0]["references"] == ["hello there"] * 3
    (samples,) = [t["samples"] for t in texts]
    assert len(samples) == 4 and len(set(samples)) == 1  # greedy: the same every time
    tokens = samples[0].split()
    n = len(tokens)
    assert report["avg_length"] == n
    if n:
        assert report["distinct_1"] == pytest.approx(len(set(tokens)) / (4 * n))
        assert report["distinct_2"] == pytest.approx(len(set(zip(tokens, tokens[1:]))) / (4 * n))


def test_generation_perfect_samples_score_like_identical_sentences(monkeypatch):
    """A model that always answers the reference: BLEU-P = BLEU-R = BLEU(ref, ref); distinct by hand."""
    vocab = Vocab.build([["hello", "there", "my", "friend"]])
    target = ["hello", "there", "my", "friend"]
    dataset = TextDataset([Example(["hi"], target, 0), Example(["yo"], target, 1)], vocab)
    model = build(Seq2Seq, vocab)
    ids = torch.tensor(vocab.encode(target) + [vocab.eos_id, vocab.pad_id])

    def fake_generate(context, context_lengths, num_samples=1, **kw):
        B = context.shape[0]
        return ids.expand(B, num_samples, -1).clone(), torch.full((B, num_samples), 5)

    monkeypatch.setattr(model, "generate", fake_generate)
    report = evaluate_generation(model, dataset, vocab, num_samples=3, strategy="sample")
    p, r = corpus_bleu_pr([[target]], [[target]])
    assert report["bleu_precision"] == pytest.approx(p) and report["bleu_recall"] == pytest.approx(r)
    assert report["distinct_1"] == pytest.approx(4 / 24)  # 4 distinct words over 2 inputs x 3 samples x 4 tokens
    assert report["distinct_2"] == pytest.approx(3 / 24)
    assert report["intra_distinct_1"] == pytest.approx(4 / 12)  # per input: 4 distinct words in 3 x 4 tokens
    assert report["intra_distinct_2"] == pytest.approx(3 / 12)
    assert report["avg_length"] == 4
    assert evaluate_generation(model, dataset, vocab, num_samples=1, max_inputs=1)["inputs"] == 1
    # the report says how the samples were decoded, with the settings that apply to the strategy only
    assert report["decoding"] == {"strategy": "sample", "max_length": 30, "temperature": 1.0, "top_k": 0, "top_p": 1.0}
    hot = evaluate_generation(model, dataset, vocab, num_samples=1, strategy="sample", temperature=0.5, top_p=0.9,
                              max_length=12)
    assert hot["decoding"] == {"strategy": "sample", "max_length": 12, "temperature": 0.5, "top_k": 0, "top_p": 0.9}
    beam = evaluate_generation(model, dataset, vocab, num_samples=2, strategy="beam", beam_size=3, temperature=0.5)
    assert beam["decoding"] == {"strategy": "beam", "max_length": 30, "beam_size": 3}
    # a Seq2Seq's n-best list widens the beam to num_samples: the report says the beam that ran
    wide = evaluate_generation(model, dataset, vocab, num_samples=6, strategy="beam", beam_size=3)
    assert wide["decoding"]["beam_size"] == 6
    assert evaluate_generation(model, dataset, vocab, strategy="greedy")["decoding"] == {
        "strategy": "greedy", "max_length": 30}
    # no strategy: the paper's protocol, as fastvae evaluate decodes (Seq2Seq: beam; VAEs: greedy per z)
    assert evaluate_generation(model, dataset, vocab, num_samples=2)["decoding"] == {
        "strategy": "beam", "max_length": 30, "beam_size": 4}


def test_generation_errors(data):
    vocab, conditional, plain = data
    with pytest.raises(TypeError, match="model"):
        evaluate_generation(build(SentenceVAE, vocab), plain, vocab)
    with pytest.raises(ValueError, match="dataset"):
        evaluate_generation(build(CVAE, vocab), plain, vocab)
    with pytest.raises(ValueError, match="num_samples"):
        evaluate_generation(build(CVAE, vocab), conditional, vocab, num_samples=0)
    with pytest.raises(ValueError, match="batch_size"):
        evaluate_generation(build(Seq2Seq, vocab), conditional, vocab, batch_size=0)
    with pytest.raises(ValueError, match="max_inputs"):
        generate_texts(build(Seq2Seq, vocab), conditional, vocab, max_inputs=0)
    with pytest.raises(ValueError, match="strategy"):
        evaluate_generation(build(Seq2Seq, vocab), conditional, vocab, strategy="nope")


def test_random_responses_baseline_scores_the_drawn_responses(data):
    vocab, dataset, plain = data
    pool = plain.targets[:5]
    report = evaluate_random_responses(dataset, pool, vocab, num_samples=4, generator=gen(3))
    assert report["inputs"] == 12 and report["num_samples"] == 4 and report["strategy"] == "random-response"
    # redo the draws by hand: one randint call of shape (inputs, num_samples) on the same generator
    picks = torch.randint(5, (12, 4), generator=gen(3)).tolist()
    decoded = [vocab.decode(r) for r in pool]
    order = list(dict.fromkeys(dataset.groups))
    references = [[vocab.decode(dataset.targets[i]) for i, g in enumerate(dataset.groups) if g == group] for group in order]
    samples = [[decoded[i] for i in row] for row in picks]
    precision, recall = corpus_bleu_pr(samples, references)
    assert report["bleu_precision"] == pytest.approx(precision) and report["bleu_recall"] == pytest.approx(recall)
    flat = [s for row in samples for s in row]
    assert report["distinct_1"] == pytest.approx(distinct_n(flat, 1))
    assert report["distinct_2"] == pytest.approx(distinct_n(flat, 2))
    assert report == evaluate_random_responses(dataset, pool, vocab, num_samples=4, generator=gen(3))
    assert evaluate_random_responses(dataset, pool, vocab, num_samples=2, max_inputs=3)["inputs"] == 3


def test_random_responses_that_are_the_references_score_perfectly():
    vocab = Vocab.build([["good", "morning", "to", "you"]])
    target = ["good", "morning", "to", "you"]
    dataset = TextDataset([Example(["hi"], target, 0), Example(["hey"], target, 1)], vocab)
    report = evaluate_random_responses(dataset, [vocab.encode(target) + [vocab.eos_id]], vocab, num_samples=2)
    # smoothing method 7 scores a sentence against itself a little above 1 (NLTK's method 5 part)
    perfect = bleu(target, target)
    assert perfect > 0.99
    assert report["bleu_precision"] == pytest.approx(perfect) and report["bleu_recall"] == pytest.approx(perfect)
    assert report["distinct_1"] == pytest.approx(4 / 16) and report["avg_length"] == 4


def test_random_responses_errors(data):
    vocab, conditional, plain = data
    with pytest.raises(ValueError, match="dataset"):
        evaluate_random_responses(plain, plain.targets, vocab)
    with pytest.raises(ValueError, match="responses"):
        evaluate_random_responses(conditional, [[vocab.eos_id]], vocab)
    with pytest.raises(ValueError, match="responses"):
        evaluate_random_responses(conditional, [], vocab)
    with pytest.raises(ValueError, match="num_samples"):
        evaluate_random_responses(conditional, plain.targets, vocab, num_samples=0)
    with pytest.raises(ValueError, match="max_inputs"):
        evaluate_random_responses(conditional, plain.targets, vocab, max_inputs=0)


def test_echo_baseline_answers_with_the_last_utterance_of_the_context():
    from fastvae.data import EOU

    words = ["how", "are", "you", "fine", "thanks", "and", "good", "bye", "?"]
    vocab = Vocab.build([words + [EOU]])
    examples = [
        Example(["how", "are", "you", EOU, "fine", "thanks", "and", "you", "?"], ["fine", "thanks", "bye"], 0),
        Example(["good", "bye"], ["bye"], 1),  # no separator: the whole source is echoed
    ]
    report = evaluate_echo_responses(TextDataset(examples, vocab), vocab)
    p, r = corpus_bleu_pr([[["fine", "thanks", "and", "you", "?"]], [["good", "bye"]]],
                          [[["fine", "thanks", "bye"]], [["bye"]]])
    assert report["strategy"] == "echo-context" and report["num_samples"] == 1 and report["inputs"] == 2
    assert report["bleu_precision"] == pytest.approx(p) and report["bleu_recall"] == pytest.approx(r)
    assert report["avg_length"] == pytest.approx(3.5)
    seen_sources = [vocab.encode(["good", "bye"]) + [vocab.eos_id]]  # as TextDataset stores sources
    seen = evaluate_echo_responses(TextDataset(examples, vocab), vocab, seen_sources=seen_sources)
    assert seen["seen"]["inputs"] == 1 and seen["unseen"]["inputs"] == 1
    with pytest.raises(ValueError, match="dataset must be conditional"):
        evaluate_echo_responses(TextDataset([["good"]], vocab), vocab)
    with pytest.raises(ValueError, match="max_inputs"):
        evaluate_echo_responses(TextDataset(examples, vocab), vocab, max_inputs=0)


def test_bleu_smoothing_is_chosen_and_recorded(data):
    vocab, dataset, plain = data
    model = build(CVAE, vocab)
    reports = {}
    for smoothing in ("method7", "method7-legacy"):
        reports[smoothing], texts = evaluate_generation(model, dataset, vocab, num_samples=3, max_length=8,
                                                        generator=gen(2), return_texts=True,
                                                        bleu_smoothing=smoothing)
        assert reports[smoothing]["bleu_smoothing"] == smoothing
        samples = [[s.split() for s in t["samples"]] for t in texts]
        references = [[r.split() for r in t["references"]] for t in texts]
        assert reports[smoothing]["bleu_precision"] == pytest.approx(corpus_bleu_pr(samples, references, smoothing)[0])
    assert reports["method7-legacy"]["bleu_recall"] > reports["method7"]["bleu_recall"]
    assert reports["method7"] == evaluate_generation(model, dataset, vocab, num_samples=3, max_length=8,
                                                     generator=gen(2))  # the default
    baselines = (
        lambda **kw: evaluate_random_responses(dataset, plain.targets[:5], vocab, generator=gen(3), **kw),
        lambda **kw: evaluate_echo_responses(dataset, vocab, **kw),
    )
    for make in baselines:
        legacy = make(bleu_smoothing="method7-legacy")
        assert legacy["bleu_smoothing"] == "method7-legacy" and make()["bleu_smoothing"] == "method7"
        assert legacy["bleu_precision"] > make()["bleu_precision"]
        with pytest.raises(ValueError, match="smoothing must be None"):
            make(bleu_smoothing="legacy")
    with pytest.raises(ValueError, match="smoothing must be None"):  # before any generation
        evaluate_generation(model, dataset, vocab, bleu_smoothing="method8")


# ------------------------------------------------------- seen / unseen inputs


def test_split_by_seen_marks_inputs_whose_source_is_in_training(data):
    vocab, dataset, plain = data
    order = list(dict.fromkeys(dataset.groups))  # inputs in scoring order
    first = [dataset.sources[dataset.groups.index(g)] for g in order]
    known = [first[1], first[4], first[4], vocab.encode(["park", "park", "park"]) + [vocab.eos_id]]
    expected = [i in (1, 4) for i in range(len(order))]
    assert split_by_seen(dataset, known) == expected
    assert split_by_seen(dataset, known, max_inputs=3) == expected[:3]
    assert split_by_seen(dataset, [torch.tensor(s) for s in known]) == expected  # id tensors compare as ids
    train = TextDataset(random_examples(seed=5)[:2] + [Example(vocab.decode(first[4]), ["a"], 0)], vocab)
    assert split_by_seen(dataset, train) == [i == 4 for i in range(len(order))]  # a TextDataset: its sources
    assert split_by_seen(dataset, []) == [False] * len(order)
    # a source that is a prefix of a seen one is not seen
    assert split_by_seen(dataset, [first[2][:-1]])[2] is False


def test_split_by_seen_errors(data):
    vocab, dataset, plain = data
    with pytest.raises(ValueError, match="dataset"):
        split_by_seen(plain, dataset.sources)
    with pytest.raises(ValueError, match="seen_sources"):
        split_by_seen(dataset, plain)
    with pytest.raises(TypeError, match="seen_sources"):
        split_by_seen(dataset, "the cat")
    with pytest.raises(TypeError, match="seen_sources"):
        split_by_seen(dataset, [1, 2, 3])
    other = Vocab.build([WORDS + ["extra"]])
    with pytest.raises(ValueError, match="seen_sources.*vocabulary"):
        split_by_seen(dataset, TextDataset(random_examples(), other))


def test_generation_reports_seen_and_unseen_inputs_apart(monkeypatch):
    """A model that always answers one sentence: each part scores exactly its own inputs."""
    words = ["hello", "there", "my", "friend", "good", "bye", "hi", "yo", "hey"]
    vocab = Vocab.build([words])
    answer = ["hello", "there", "my", "friend"]
    examples = [Example(["hi"], answer, 0), Example(["yo"], ["good", "bye"], 1), Example(["hey"], ["my", "friend"], 2),
                Example(["yo"], ["bye"], 1)]
    dataset = TextDataset(examples, vocab)
    model = build(Seq2Seq, vocab)
    ids = torch.tensor(vocab.encode(answer) + [vocab.eos_id])

    def fake_generate(context, context_lengths, num_samples=1, **kw):
        return ids.expand(context.shape[0], num_samples, -1).clone(), torch.full((context.shape[0], num_samples), 4)

    monkeypatch.setattr(model, "generate", fake_generate)
    seen_sources = [vocab.encode(["hi"]) + [vocab.eos_id], vocab.encode(["hey"]) + [vocab.eos_id]]
    report = evaluate_generation(model, dataset, vocab, num_samples=2, seen_sources=seen_sources)
    plain_report = evaluate_generation(model, dataset, vocab, num_samples=2)
    assert {k: v for k, v in report.items() if k not in ("seen", "unseen")} == plain_report
    seen, unseen = report["seen"], report["unseen"]
    assert seen["inputs"] == 2 and unseen["inputs"] == 1
    p, r = corpus_bleu_pr([[answer] * 2] * 2, [[answer], [["my", "friend"]]])
    assert seen["bleu_precision"] == pytest.approx(p) and seen["bleu_recall"] == pytest.approx(r)
    p, r = corpus_bleu_pr([[answer] * 2], [[["good", "bye"], ["bye"]]])
    assert unseen["bleu_precision"] == pytest.approx(p) and unseen["bleu_recall"] == pytest.approx(r)
    assert seen["bleu_recall"] > 0.5 > unseen["bleu_recall"]
    assert seen["distinct_1"] == pytest.approx(4 / 16) and unseen["distinct_2"] == pytest.approx(3 / 8)
    # nothing seen: the unseen part is the whole report, the seen part only a count
    report = evaluate_generation(model, dataset, vocab, num_samples=2, seen_sources=[])
    assert report["seen"] == {"inputs": 0.0}
    top_only = ("decoding", "bleu_smoothing", "bleu_formula", "shuffle_seed")  # said once, at the top
    assert report["unseen"] == {k: v for k, v in plain_report.items() if k not in top_only}
    with pytest.raises(ValueError, match="dataset"):
        evaluate_generation(model, TextDataset([e.target for e in examples], vocab), vocab, seen_sources=[])


def test_random_responses_report_seen_and_unseen_inputs(data):
    vocab, dataset, plain = data
    order = list(dict.fromkeys(dataset.groups))
    seen_sources = [dataset.sources[dataset.groups.index(g)] for g in order[:5]]
    report = evaluate_random_responses(dataset, plain.targets, vocab, num_samples=3, generator=gen(4),
                                       seen_sources=seen_sources)
    assert report["seen"]["inputs"] == 5 and report["unseen"]["inputs"] == 7
    # the parts average to the whole, weighted by their inputs
    for key in ("bleu_precision", "bleu_recall", "intra_distinct_2"):
        whole = (5 * report["seen"][key] + 7 * report["unseen"][key]) / 12
        assert report[key] == pytest.approx(whole), key


# --------------------------------------------------------------------- report


def test_write_report_round_trip(tmp_path, data):
    vocab, dataset, _ = data
    report = evaluate_likelihood(build(CVAE, vocab), dataset, iw_samples=2, generator=gen())
    report["tensor"] = torch.tensor(1.5)
    report["nested"] = {"b": torch.tensor(2), "a": [1, 2.5], "c": np.float32(0.5), "d": np.bool_(True)}
    path = tmp_path / "sub" / "report.json"
    assert write_report(path, report) == str(path)
    text = path.read_text()
    loaded = json.loads(text)
    assert loaded["tensor"] == 1.5 and isinstance(loaded["tensor"], float)
    assert loaded["nested"] == {"a": [1, 2.5], "b": 2, "c": 0.5, "d": True}
    del report["tensor"], report["nested"]
    for key, value in report.items():
        assert loaded[key] == value
    assert list(loaded) == sorted(loaded) and text.startswith('{\n  "')
    # overwriting leaves no temporary file behind
    write_report(path, {"x": 1.0})
    assert json.loads(path.read_text()) == {"x": 1.0}
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.json"]
    # NaN and infinities are not JSON numbers: written as null, with a warning naming them
    with pytest.warns(UserWarning, match=r"written as null .*: nll, parts\[1\]\.kl$"):
        write_report(path, {"nll": float("nan"), "ok": 1.0, "parts": [{"kl": 0.5}, {"kl": torch.tensor(float("inf"))}]})
    assert json.loads(path.read_text()) == {"nll": None, "ok": 1.0, "parts": [{"kl": 0.5}, {"kl": None}]}
    assert "NaN" not in path.read_text()
    with pytest.raises(TypeError, match="report"):
        write_report(path, [1, 2])
    with pytest.raises(TypeError, match="object"):
        write_report(tmp_path / "bad.json", {"x": object()})
    assert not (tmp_path / "bad.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub"]


# ------------------------------------------------------------------ context gain


def _answering(model, vocab, reply_of):
    """Make ``model.generate`` answer each context with ``reply_of(context tokens)`` (a token list)."""
    def fake_generate(context, context_lengths, num_samples=1, **kw):
        rows = []
        for b in range(context.shape[0]):
            words = vocab.decode(context[b, : int(context_lengths[b])])
            rows.append(vocab.encode(reply_of(words)) + [vocab.eos_id])
        T = max(len(r) for r in rows)
        tokens = torch.full((len(rows), num_samples, T), vocab.pad_id)
        for b, r in enumerate(rows):
            tokens[b, :, : len(r)] = torch.tensor(r)
        return tokens, torch.tensor([[len(r)] * num_samples for r in rows])

    model.generate = fake_generate
    return model


def _dialogue_dataset(n=30, seed=0):
    """``n`` contexts ``"ctx<i>"``, each with one reference of 3 to 7 random words."""
    import random

    rng = random.Random(seed)
    examples = [Example([f"ctx{i}"], [rng.choice(WORDS) for _ in range(rng.randint(3, 7))], i) for i in range(n)]
    vocab = Vocab.build([WORDS, [f"ctx{i}" for i in range(n)]])
    return vocab, TextDataset(examples, vocab), examples


@pytest.mark.parametrize("formula", ["mean-1-3", "cumulative-3"])
def test_context_gain_of_a_model_that_ignores_its_context_is_zero(formula):
    vocab, dataset, _ = _dialogue_dataset()
    model = _answering(build(Seq2Seq, vocab), vocab, lambda context: ["the", "cat", "sat", "on", "the", "mat"])
    report = evaluate_generation(model, dataset, vocab, num_samples=2, bleu_smoothing="method7-legacy",
                                 bleu_formula=formula)
    assert report["bleu_formula"] == formula and report["shuffle_seed"] == 0
    assert report["bleu_precision"] > 0.05  # some overlap with the references, but none of it from the context
    assert report["context_gain_precision"] == pytest.approx(0.0, abs=1e-12)
    assert report["context_gain_recall"] == pytest.approx(0.0, abs=1e-12)
    assert report["shuffled_bleu_recall"] == pytest.approx(report["bleu_recall"])
    # per input, own and shuffled scores differ (other references); only their means agree: the interval holds 0
    low, high = report["context_gain_spread"]["recall_ci95"]
    assert low < 0.0 < high and report["context_gain_spread"]["recall_std"] > 0.0


def test_context_gain_of_a_model_that_answers_the_reference_is_large():
    vocab, dataset, examples = _dialogue_dataset()
    reply = {tuple(ex.source): ex.target for ex in examples}
    model = _answering(build(Seq2Seq, vocab), vocab, lambda context: reply[tuple(context)])
    report, texts = evaluate_generation(model, dataset, vocab, num_samples=2, bleu_smoothing="method7-legacy",
                                        bleu_formula="cumulative-3", return_texts=True, shuffle_seed=3)
    for which in ("precision", "recall"):
        gain = report[f"context_gain_{which}"]
        assert gain == pytest.approx(report[f"bleu_{which}"] - report[f"shuffled_bleu_{which}"])
        assert gain > 0.5 and report["context_gain_spread"][f"{which}_ci95"][0] > 0.3
    # the shuffled score: input i's replies against the references of input derangement(n, 3)[i]
    perm = derangement(len(texts), 3)
    samples = [[s.split() for s in t["samples"]] for t in texts]
    references = [[r.split() for r in texts[j]["references"]] for j in perm]
    expected = corpus_bleu_pr(samples, references, "method7-legacy", "cumulative-3")
    assert (report["shuffled_bleu_precision"], report["shuffled_bleu_recall"]) == pytest.approx(expected)
    assert report["shuffle_seed"] == 3


def test_context_gain_of_the_baselines():
    vocab, dataset, examples = _dialogue_dataset(60)
    pool = [vocab.encode(ex.target) + [vocab.eos_id] for ex in _dialogue_dataset(60, seed=1)[2]]
    random_report = evaluate_random_responses(dataset, pool, vocab, num_samples=5, generator=gen(4),
                                              bleu_formula="cumulative-3", bleu_smoothing="method7-legacy")
    spread = random_report["context_gain_spread"]
    for which in ("precision", "recall"):  # noise only: within the bootstrap's spread
        assert abs(random_report[f"context_gain_{which}"]) < 4 * spread[f"{which}_std"]
    assert random_report["bleu_formula"] == "cumulative-3"
    # the echo baseline answers with the context ("ctx<i>"), which no reference holds: no gain either
    echo = evaluate_echo_responses(dataset, vocab, bleu_formula="cumulative-3")
    assert echo["context_gain_precision"] == pytest.approx(0.0, abs=1e-12) and echo["bleu_formula"] == "cumulative-3"


def test_context_gain_needs_two_inputs_and_checks_its_seed():
    vocab, dataset, examples = _dialogue_dataset(2)
    model = _answering(build(Seq2Seq, vocab), vocab, lambda context: ["a", "cat"])
    one = evaluate_generation(model, dataset, vocab, num_samples=2, max_inputs=1)
    assert one["inputs"] == 1 and one["context_gain_precision"] is None and one["shuffled_bleu_recall"] is None
    assert one["context_gain_spread"] is None
    two = evaluate_generation(model, dataset, vocab, num_samples=2)
    assert two["context_gain_precision"] == pytest.approx(0.0, abs=1e-12)
    for bad in ("0", 1.5, None):
        with pytest.raises(ValueError, match="shuffle_seed must be an integer"):
            evaluate_generation(model, dataset, vocab, shuffle_seed=bad)
    with pytest.raises(ValueError, match="formula must be one of"):
        evaluate_generation(model, dataset, vocab, bleu_formula="bleu-4")
    with pytest.raises(ValueError, match="formula must be one of"):
        evaluate_echo_responses(dataset, vocab, bleu_formula="mean")


def test_seen_and_unseen_parts_carry_their_own_context_gain():
    vocab, dataset, examples = _dialogue_dataset(20)
    reply = {tuple(ex.source): ex.target for ex in examples}
    model = _answering(build(Seq2Seq, vocab), vocab, lambda context: reply[tuple(context)])
    seen_sources = [dataset.sources[i] for i in range(0, 20, 2)]
    report = evaluate_generation(model, dataset, vocab, num_samples=1, seen_sources=seen_sources)
    for part in ("seen", "unseen"):
        g = report[part]
        assert g["inputs"] == 10 and g["context_gain_recall"] > 0.3
        assert g["context_gain_precision"] == pytest.approx(g["bleu_precision"] - g["shuffled_bleu_precision"])
    both = (report["seen"]["context_gain_recall"] + report["unseen"]["context_gain_recall"]) / 2
    assert report["context_gain_recall"] == pytest.approx(both)
