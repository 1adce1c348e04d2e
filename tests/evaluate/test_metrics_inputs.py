"""Edge and bad inputs of fastvae.metrics: strings where token lists belong, bad n-gram orders."""

import pytest


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
