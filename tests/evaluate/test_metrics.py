"""fastvae.metrics: distinct-n, BLEU-P/R in both formulas and the context gain against hand-computed values and NLTK."""

import math

import pytest

from fastvae.metrics import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    LEGACY_METHOD7,
    SHUFFLE_SEED,
    bleu,
    bleu_precision_recall,
    bootstrap_means,
    context_gain,
    corpus_bleu_pr,
    corpus_context_gain,
    derangement,
    distinct_n,
)


def test_distinct_n_hand_computed():
    sentences = [["a", "b", "c"], ["a", "b", "d"]]  # 6 generated tokens
    assert distinct_n(sentences, 1) == pytest.approx(4 / 6)  # a b c d
    assert distinct_n(sentences, 2) == pytest.approx(3 / 6)  # ab bc bd
    assert distinct_n(sentences, 3) == pytest.approx(2 / 6)  # abc abd
    assert distinct_n([["a", "b", "a"], ["a", "b"]], 2) == pytest.approx(2 / 5)  # ab ba over 5 tokens
    assert distinct_n([["x", "y"]], 3) == 0.0  # no trigram, still 2 tokens in the denominator
    assert distinct_n([["x"]] * 10, 1) == pytest.approx(0.1)
    assert distinct_n([], 1) == 0.0 and distinct_n([[]], 2) == 0.0
    with pytest.raises(ValueError, match="n must"):
        distinct_n(sentences, 0)


def test_bleu_identical_is_one_and_disjoint_is_small():
    s = "the cat sat on the mat".split()
    assert bleu(s, s, smoothing=None) == pytest.approx(1.0)
    assert bleu_precision_recall([s], [s], smoothing=None) == pytest.approx((1.0, 1.0))
    # NLTK's method7 (method5 inside) lifts identical sentences above 1 (1.23 here); kept as NLTK gives it
    assert bleu(s, s) > 1.0
    assert bleu(s, "a dog ran far away now".split()) < 0.1
    assert bleu([], s) == 0.0 and bleu(s, []) == 0.0
    with pytest.raises(ValueError, match="smoothing"):
        bleu(s, s, smoothing="method99")


def test_bleu1_brevity_penalty_by_hand():
    # unigram precision 1, hypothesis 1 token vs reference 2: BP = exp(1 - 2/1)
    assert bleu(["a"], ["a", "b"], orders=(1,), smoothing=None) == pytest.approx(math.exp(-1))
    # two of four unigrams match, same length: BLEU-1 = 1/2; one of three bigrams: BLEU-2 = sqrt(1/2 * 1/3)
    sample, reference = ["a", "b", "x", "y"], ["a", "b", "c", "d"]
    assert bleu(sample, reference, orders=(1,), smoothing=None) == pytest.approx(0.5)
    assert bleu(sample, reference, orders=(2,), smoothing=None) == pytest.approx(math.sqrt(0.5 / 3))
    assert bleu(sample, reference, orders=(1, 2), smoothing=None) == pytest.approx((0.5 + math.sqrt(0.5 / 3)) / 2)


def test_bleu_matches_nltk_directly():
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    sample = "i would like a cup of tea please".split()
    reference = "i would like some tea please".split()
    smooth = SmoothingFunction().method7
    expected = (
        sentence_bleu([reference], sample, weights=(1.0,), smoothing_function=smooth)
        + sentence_bleu([reference], sample, weights=(0.5, 0.5), smoothing_function=smooth)
        + sentence_bleu([reference], sample, weights=(1 / 3, 1 / 3, 1 / 3), smoothing_function=smooth)
    ) / 3
    assert 0.0 < expected < 1.0
    assert bleu(sample, reference) == pytest.approx(expected)


def test_legacy_method7_by_hand():
    """method7 as NLTK 3.2.2-3.4.5 computed it (checked against those releases' bleu_score.py on 90,000 scores)."""
    sample, reference = "the cat sat".split(), "the dog sat down".split()
    bp = math.exp(1 - 4 / 3)  # 3 tokens against 4
    p1, p2 = 2 / 3, 1 / (1 + 5 / math.log(3))  # "the", "sat"; no bigram matches: 1 / (i + k / ln len), i = 1
    # method5: each precision averaged with its neighbours (the one below starts at p1 + 1; 5-grams: 0)
    m1 = (p1 + 1 + p1 + p2) / 3
    m2 = (m1 + p2 + 0) / 3
    assert bleu(sample, reference, orders=(2,), smoothing=LEGACY_METHOD7) == pytest.approx(bp * math.sqrt(m1 * m2))
    # today's method4 gives the unmatched bigrams ln(3) / (2 * 5) / 2 instead: far less
    p2_now = math.log(3) / (2 * 5) / 2
    m1_now = (p1 + 1 + p1 + p2_now) / 3
    expected_now = bp * math.sqrt(m1_now * (m1_now + p2_now) / 3)
    assert bleu(sample, reference, orders=(2,)) == pytest.approx(expected_now)
    assert bleu(sample, reference, smoothing=LEGACY_METHOD7) > bleu(sample, reference) + 0.03
    # every order matched: method4 changes nothing, both agree
    same = "how are you today".split()
    assert bleu(same, same, smoothing=LEGACY_METHOD7) == pytest.approx(bleu(same, same))
    # one token: ln(1) = 0 made NLTK 3.2.2-3.4.5 raise for an unmatched order; that BLEU-n counts 0
    assert bleu(["the"], reference, orders=(2,), smoothing=LEGACY_METHOD7) == 0.0
    assert bleu(["the"], reference, orders=(1, 2), smoothing=LEGACY_METHOD7) == pytest.approx(
        bleu(["the"], reference, orders=(1,)) / 2)
    p, r = bleu_precision_recall([sample], [reference], smoothing=LEGACY_METHOD7)
    assert p == r == pytest.approx(bleu(sample, reference, smoothing=LEGACY_METHOD7))
    for bad in (["method7"], "method7-old", 7):
        with pytest.raises(ValueError, match="smoothing must be None, an NLTK SmoothingFunction method name"):
            bleu(sample, reference, smoothing=bad)


def test_precision_recall_one_of_two_references():
    r1 = "how are you today".split()
    r2 = "the weather is terrible outside".split()
    p, r = bleu_precision_recall([r1], [r1, r2], smoothing=None)
    assert p == pytest.approx(1.0)  # the one sample matches a reference exactly
    assert r == pytest.approx(0.5)  # r1 covered (1), r2 shares nothing (0)
    p7, r7 = bleu_precision_recall([r1], [r1, r2])  # the paper's smoothing: same structure
    assert p7 == pytest.approx(bleu(r1, r1)) and r7 == pytest.approx((bleu(r1, r1) + bleu(r1, r2)) / 2) and r7 < p7
    # two samples covering both references: recall 1; one poor sample lowers precision only
    poor = "zzz qqq".split()
    p2, r2_ = bleu_precision_recall([r1, r2, poor], [r1, r2], smoothing=None)
    assert r2_ == pytest.approx(1.0)
    assert p2 == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="at least one"):
        bleu_precision_recall([], [r1])


def test_corpus_bleu_pr_averages_inputs():
    a, b = "yes i can".split(), "no thanks".split()
    per_input = [bleu_precision_recall([a], [a, b]), bleu_precision_recall([a, b], [b])]
    p, r = corpus_bleu_pr([[a], [a, b]], [[a, b], [b]])
    assert p == pytest.approx((per_input[0][0] + per_input[1][0]) / 2)
    assert r == pytest.approx((per_input[0][1] + per_input[1][1]) / 2)
    with pytest.raises(ValueError, match="reference lists"):
        corpus_bleu_pr([[a]], [[a], [b]])
    with pytest.raises(ValueError, match="no inputs"):
        corpus_bleu_pr([], [])


# ----------------------------------------------------------------- BLEU formula


def test_cumulative_3_by_hand_and_next_to_the_mean():
    # 3 of 4 unigrams, 2 of 3 bigrams, 1 of 2 trigrams match, equal lengths (no brevity penalty)
    sample, reference = "a b c d".split(), "a b c e".split()
    cumulative = (3 / 4 * 2 / 3 * 1 / 2) ** (1 / 3)
    assert bleu(sample, reference, smoothing=None, formula="cumulative-3") == pytest.approx(cumulative)
    mean = (3 / 4 + math.sqrt(3 / 4 * 2 / 3) + cumulative) / 3
    assert bleu(sample, reference, smoothing=None) == pytest.approx(mean)
    assert bleu(sample, reference, smoothing=None, formula="mean-1-3") == pytest.approx(mean)
    # cumulative-3 is the BLEU-3 term of the mean: orders=(3,)
    for smoothing in (None, "method7", LEGACY_METHOD7):
        assert bleu(sample, reference, smoothing=smoothing, formula="cumulative-3") == \
            bleu(sample, reference, orders=(3,), smoothing=smoothing)


def test_cumulative_3_with_legacy_smoothing_by_hand():
    """The authors' per-pair score: NLTK 3.2.2-3.4.5 sentence_bleu, weights (1/3, 1/3, 1/3), method7."""
    sample, reference = "the cat sat".split(), "the dog sat down".split()
    bp = math.exp(1 - 4 / 3)
    p1 = 2 / 3
    p2 = 1 / (1 + 5 / math.log(3))  # no bigram matches: 1 / (i + k / ln len), i = 1
    p3 = 1 / (2 + 5 / math.log(3))  # no trigram matches: i = 2
    m1 = (p1 + 1 + p1 + p2) / 3  # method5: neighbours averaged, the one below order 1 is p1 + 1
    m2 = (m1 + p2 + p3) / 3
    m3 = (m2 + p3 + 0) / 3  # NLTK's method5 appends the 5-gram precision (0 here) above the last order
    expected = bp * (m1 * m2 * m3) ** (1 / 3)
    assert bleu(sample, reference, smoothing=LEGACY_METHOD7, formula="cumulative-3") == pytest.approx(expected)
    # the SLCVAE code: one reference per context; BLEU-P = mean of the samples' scores, BLEU-R = their max
    other = "the cat sat down".split()
    scores = [bleu(s, reference, smoothing=LEGACY_METHOD7, formula="cumulative-3") for s in (sample, other)]
    p, r = bleu_precision_recall([sample, other], [reference], smoothing=LEGACY_METHOD7, formula="cumulative-3")
    assert p == pytest.approx(sum(scores) / 2) and r == pytest.approx(max(scores))
    # a one-token sample: NLTK 3.2.2-3.4.5 raised (ln 1 = 0); the authors' code scored it 0, so does fastvae
    assert bleu(["the"], reference, smoothing=LEGACY_METHOD7, formula="cumulative-3") == 0.0


def test_bleu_formula_is_checked():
    s = "a b c".split()
    for bad in ("cumulative-4", None, ("mean-1-3",)):
        with pytest.raises(ValueError, match="formula must be one of 'mean-1-3', 'cumulative-3'"):
            bleu(s, s, formula=bad)
    with pytest.raises(ValueError, match="orders chooses the BLEU-n of a mean"):
        bleu(s, s, orders=(1, 2), formula="cumulative-3")
    with pytest.raises(ValueError, match="formula must be"):
        bleu_precision_recall([s], [s], formula="bleu-3")
    a, b = "yes i can".split(), "no thanks".split()
    p, r = corpus_bleu_pr([[a], [a, b]], [[a, b], [b]], formula="cumulative-3")
    per_input = [bleu_precision_recall([a], [a, b], formula="cumulative-3"),
                 bleu_precision_recall([a, b], [b], formula="cumulative-3")]
    assert (p, r) == pytest.approx(tuple(sum(x) / 2 for x in zip(*per_input)))


# ------------------------------------------------------------------ context gain


def test_derangement_moves_every_input_and_is_fixed_by_its_seed():
    for n in (2, 3, 7, 100):
        for seed in range(5):
            perm = derangement(n, seed)
            assert sorted(perm) == list(range(n)) and all(p != i for i, p in enumerate(perm))
            assert perm == derangement(n, seed)
    assert derangement(2) == [1, 0]
    assert derangement(50, 0) != derangement(50, 1)
    assert derangement(6740, SHUFFLE_SEED) == derangement(6740)  # the documented default seed
    for bad in (1, 0, 2.0, True):
        with pytest.raises(ValueError, match="n must be an integer >= 2"):
            derangement(bad)
    with pytest.raises(ValueError, match="seed must be an integer"):
        derangement(3, seed="0")


def test_bootstrap_means_by_hand():
    (constant,) = bootstrap_means([[0.25] * 7], resamples=50, seed=3)
    assert constant["std"] == 0.0 and constant["ci95"] == [0.25, 0.25]
    values = [float(i % 5) for i in range(200)]  # mean 2, standard deviation sqrt(2)
    first, second = bootstrap_means([values, [2 * v for v in values]], resamples=400, seed=0)
    assert first["std"] == pytest.approx(math.sqrt(2 / 200), rel=0.2)  # the standard error of the mean
    assert first["ci95"][0] < 2.0 < first["ci95"][1]
    # the columns share their draws: a column twice the other has twice its spread, exactly
    assert second["std"] == pytest.approx(2 * first["std"]) and second["ci95"] == pytest.approx(
        [2 * x for x in first["ci95"]])
    assert bootstrap_means([values], resamples=400, seed=0) == [first]  # repeatable
    assert bootstrap_means([values], resamples=400, seed=1) != [first]
    with pytest.raises(ValueError, match="equally long"):
        bootstrap_means([[1.0], [1.0, 2.0]])
    with pytest.raises(ValueError, match="resamples must be an integer >= 2"):
        bootstrap_means([[1.0]], resamples=1)


REPLY_WORDS = "yes no thanks sure what why i you the a is it good fine see go".split()


def _dialogue(n, seed):
    """``n`` inputs, each with one reference of 3 to 8 words."""
    import random

    rng = random.Random(seed)
    return [[[rng.choice(REPLY_WORDS) for _ in range(rng.randint(3, 8))]] for _ in range(n)]


def test_context_gain_is_zero_for_replies_that_ignore_the_input():
    references = _dialogue(40, seed=0)
    same = [["i", "see", "it", "is", "good"], ["no", "thanks"]]
    for formula in ("mean-1-3", "cumulative-3"):
        out = corpus_context_gain([same] * 40, references, smoothing=LEGACY_METHOD7, formula=formula)
        # the same replies everywhere: the shuffled references are the same references in another order
        assert out["context_gain_precision"] == pytest.approx(0.0, abs=1e-12)
        assert out["context_gain_recall"] == pytest.approx(0.0, abs=1e-12)
        assert out["shuffled_bleu_precision"] == pytest.approx(out["bleu_precision"])
        spread = out["context_gain_spread"]
        assert spread["method"] == "bootstrap over inputs" and spread["resamples"] == BOOTSTRAP_RESAMPLES
        assert spread["seed"] == BOOTSTRAP_SEED and out["shuffle_seed"] == SHUFFLE_SEED
        assert spread["precision_ci95"][0] <= 0.0 <= spread["precision_ci95"][1] or spread["precision_std"] < 1e-9


def test_context_gain_of_random_replies_is_noise_and_of_the_references_is_large():
    references = _dialogue(200, seed=1)
    randoms = _dialogue(200, seed=2)  # a reply drawn without looking at the input
    replies = [[r[0] for r in randoms[i : i + 3]] for i in range(200)]
    noise = corpus_context_gain(replies, references, smoothing=LEGACY_METHOD7, formula="cumulative-3")
    for which in ("precision", "recall"):
        gain, spread = noise[f"context_gain_{which}"], noise["context_gain_spread"]
        assert abs(gain) < 4 * spread[f"{which}_std"] + 1e-9 and spread[f"{which}_std"] < 0.02
    echo = corpus_context_gain(references, references, smoothing=LEGACY_METHOD7, formula="cumulative-3")
    assert echo["context_gain_precision"] > 0.5 and echo["context_gain_recall"] > 0.5
    assert echo["context_gain_spread"]["precision_ci95"][0] > 0.4  # clearly positive
    assert echo["bleu_precision"] - echo["shuffled_bleu_precision"] == pytest.approx(echo["context_gain_precision"])
    # the shuffled score pairs input i with the references of input derangement(n, seed)[i]
    perm = derangement(200, 5)
    moved = corpus_context_gain(replies, references, shuffle_seed=5)
    expected = corpus_bleu_pr(replies, [references[j] for j in perm])
    assert (moved["shuffled_bleu_precision"], moved["shuffled_bleu_recall"]) == pytest.approx(expected)
    assert moved["shuffle_seed"] == 5


def test_context_gain_arguments_are_checked():
    with pytest.raises(ValueError, match="one \\(precision, recall\\) pair per input"):
        context_gain([(0.1, 0.2)], [])
    with pytest.raises(ValueError, match="n must be an integer >= 2"):
        corpus_context_gain([[["a"]]], [[["a"]]])
    with pytest.raises(ValueError, match="reference lists"):
        corpus_context_gain([[["a"]], [["b"]]], [[["a"]]])
