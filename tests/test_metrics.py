"""fastvae.metrics: distinct-n and BLEU-P/R against hand-computed values and NLTK itself."""

import math

import pytest

from fastvae.metrics import LEGACY_METHOD7, bleu, bleu_precision_recall, corpus_bleu_pr, distinct_n


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
