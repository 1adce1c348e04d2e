"""Diversity and quality metrics of generated text (as in the SLCVAE paper, Zhang et al. 2019).

* ``distinct_n``: distinct n-grams / generated tokens, over all sentences.
* BLEU of one sample against one reference: the mean of BLEU-1, -2 and -3,
  each NLTK ``sentence_bleu`` with uniform weights over its orders and
  ``SmoothingFunction().method7``.
  NLTK's method7 includes method5, which averages each n-gram precision with
  its neighbour orders, so a sample identical to its reference can score
  *above* 1 (1.018 for BLEU-2 of "how are you today", 1.23 for the
  BLEU-1..3 mean of "the cat sat on the mat"); the scores
  are kept as NLTK gives them, to stay comparable with the paper.
  ``smoothing=None`` gives plain, unsmoothed BLEU (1.0 for identical
  sentences).
* ``smoothing="method7-legacy"``: method7 as NLTK 3.2.2 to 3.4.5 computed
  it (January 2017 to April 2020, the years of the CVAE and SLCVAE papers).
  Its method4 part gave an n-gram order without a match the precision
  ``1 / (i + k / ln(len))`` (i = order - 1, k = 5, len = the sample's
  length), whatever the number of n-grams; NLTK 3.5 gave
  ``(i + k / ln(len)) / count`` and 3.6 and later give
  ``ln(len) / (2^j k) / count`` (count = the sample's n-grams of that order,
  j = 1 for the first unmatched order, 2 for the next, ...). The legacy
  value is far larger, so the same samples score far higher BLEU (see the
  README's DailyDialog section). NLTK 3.2.2-3.4.5 raised ZeroDivisionError
  for a one-token sample with an unmatched order (ln 1 = 0); here that
  BLEU-n is 0.
* BLEU-P (precision): mean over samples of the best BLEU against the references.
* BLEU-R (recall): mean over references of the best BLEU against the samples.

Sentences are lists of tokens (no ``<eos>``/``<pad>``).
"""

import math
from functools import lru_cache

BLEU_ORDERS = (1, 2, 3)


def _tokens(name, value):
    """A token list (a string would be scored character by character: refused)."""
    if isinstance(value, str):
        raise TypeError(f"{name}: expected a list of tokens, got the string {value[:40]!r}; split it into tokens first")
    return list(value)


def distinct_n(sentences, n):
    """Distinct n-grams across all ``sentences`` divided by their total number of tokens.

    This is the SLCVAE paper's definition (the denominator counts tokens, not
    n-grams). 0.0 when there are no tokens.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if isinstance(sentences, str):
        raise TypeError("sentences must be a list of token lists, got a string")
    ngrams, tokens = set(), 0
    for s in sentences:
        s = _tokens("sentences", s)
        tokens += len(s)
        ngrams.update(tuple(s[i : i + n]) for i in range(len(s) - n + 1))
    return len(ngrams) / tokens if tokens else 0.0


LEGACY_METHOD7 = "method7-legacy"


@lru_cache(maxsize=None)
def _nltk(smoothing):
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    if smoothing is None:
        return sentence_bleu, None
    if smoothing == LEGACY_METHOD7:
        return sentence_bleu, _legacy_smoothing(SmoothingFunction).method7
    method = getattr(SmoothingFunction(), smoothing, None)
    if method is None or not smoothing.startswith("method"):
        raise _bad_smoothing(smoothing)
    return sentence_bleu, method


def _bad_smoothing(smoothing):
    return ValueError(f"smoothing must be None, an NLTK SmoothingFunction method name such as 'method7', "
                      f"or {LEGACY_METHOD7!r}, got {smoothing!r}")


def _legacy_smoothing(base):
    """NLTK's SmoothingFunction with the method4 of NLTK 3.2.2-3.4.5 (method7 = this method4, then method5)."""

    class Legacy(base):
        def method4(self, p_n, references, hypothesis, hyp_len=None, *args, **kwargs):
            hyp_len = hyp_len if hyp_len else len(hypothesis)
            for i, p_i in enumerate(p_n):
                if p_i.numerator == 0 and hyp_len != 0:
                    p_n[i] = 1 / (i + self.k / math.log(hyp_len))  # ln(1) = 0 raises, as it did
            return p_n

    return Legacy()


def check_smoothing(smoothing):
    """``smoothing`` names a BLEU smoothing :func:`bleu` knows (ValueError otherwise); returns it."""
    if smoothing is not None and not isinstance(smoothing, str):  # also keeps unhashables from the cache
        raise _bad_smoothing(smoothing)
    _nltk(smoothing)
    return smoothing


def bleu(sample, reference, orders=BLEU_ORDERS, smoothing="method7"):
    """Mean of BLEU-1, -2, -3 of token list ``sample`` against one ``reference`` (0.0 if either is empty).

    orders: the BLEU-n averaged (BLEU-n weighs the 1..n-gram precisions uniformly).
    smoothing: the ``nltk.translate.bleu_score.SmoothingFunction`` method
        (the paper's ``"method7"``), ``"method7-legacy"`` (method7 as NLTK
        3.2.2-3.4.5 computed it), or ``None`` for none.
    """
    sample, reference = _tokens("sample", sample), _tokens("reference", reference)
    orders = tuple(orders)
    if not orders or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in orders):
        raise ValueError(f"orders must be BLEU orders n >= 1 (at least one), got {orders!r}")
    if not sample or not reference:
        return 0.0
    sentence_bleu, smoothing = _nltk(check_smoothing(smoothing))
    scores = []
    for n in orders:
        try:
            scores.append(sentence_bleu([reference], sample, weights=(1.0 / n,) * n, smoothing_function=smoothing))
        except ZeroDivisionError:  # legacy method4 on a one-token sample (ln 1 = 0)
            if len(sample) != 1:
                raise
            scores.append(0.0)
    return sum(scores) / len(scores)


def bleu_precision_recall(samples, references, smoothing="method7"):
    """``(BLEU-P, BLEU-R)`` of the generated ``samples`` for one input against its ``references``."""
    if isinstance(samples, str) or isinstance(references, str):
        raise TypeError("samples and references must be lists of token lists, not strings")
    samples, references = [_tokens("samples", s) for s in samples], [_tokens("references", r) for r in references]
    if not samples or not references:
        raise ValueError(f"need at least one sample and one reference, got {len(samples)} and {len(references)}")
    scores = [[bleu(s, r, smoothing=smoothing) for r in references] for s in samples]
    precision = sum(max(row) for row in scores) / len(samples)
    recall = sum(max(scores[i][j] for i in range(len(samples))) for j in range(len(references))) / len(references)
    return precision, recall


def corpus_bleu_pr(list_of_samples, list_of_references, smoothing="method7"):
    """Mean ``(BLEU-P, BLEU-R)`` over inputs; ``list_of_samples[k]`` are the samples for input k."""
    list_of_samples, list_of_references = list(list_of_samples), list(list_of_references)
    if len(list_of_samples) != len(list_of_references):
        raise ValueError(f"{len(list_of_samples)} sample lists for {len(list_of_references)} reference lists")
    return mean_precision_recall(  # raises for no inputs
        [bleu_precision_recall(s, r, smoothing) for s, r in zip(list_of_samples, list_of_references)]
    )


def mean_precision_recall(pairs):
    """Mean ``(BLEU-P, BLEU-R)`` of per-input ``(precision, recall)`` pairs (at least one)."""
    pairs = list(pairs)
    if not pairs:
        raise ValueError("no inputs to score")
    return sum(p for p, _ in pairs) / len(pairs), sum(r for _, r in pairs) / len(pairs)
