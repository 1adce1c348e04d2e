"""Diversity and quality metrics of generated text (as in the SLCVAE paper, Zhang et al. 2019).

* ``distinct_n``: distinct n-grams / generated tokens, over all sentences.
* BLEU of one sample against one reference, NLTK ``sentence_bleu`` with
  ``SmoothingFunction().method7``, in one of two formulas (``formula``):

  - ``"mean-1-3"`` (the default): the mean of BLEU-1, -2 and -3, each with
    uniform weights over its orders;
  - ``"cumulative-3"``: one cumulative BLEU-3, weights (1/3, 1/3, 1/3) over
    the 1-, 2- and 3-gram precisions -- the per-pair score of the SLCVAE
    and kgCVAE authors' code (``utils.get_bleu_stats``).

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
  BLEU-n is 0 (the authors' code, which caught every error, scored the
  whole pair 0: the same for ``"cumulative-3"``).
  The SLCVAE authors' scoring is ``formula="cumulative-3",
  smoothing="method7-legacy"``.
* BLEU-P (precision): mean over samples of the best BLEU against the references.
* BLEU-R (recall): mean over references of the best BLEU against the samples.
  With one reference per input (DailyDialog), BLEU-P is the mean and BLEU-R
  the max of the samples' scores, as the authors' code computes them.
* Context gain (:func:`context_gain`, :func:`corpus_context_gain`): BLEU-P/R
  against each input's own references minus BLEU-P/R of the same samples
  against the references of another input (a fixed derangement of the
  inputs, :func:`derangement`, seed :data:`SHUFFLE_SEED`), with its spread
  over a bootstrap of the inputs (:data:`BOOTSTRAP_RESAMPLES` resamples,
  seed :data:`BOOTSTRAP_SEED`). Replies that ignore the input have a gain
  of about 0 (exactly 0 when every input gets the same replies).

Sentences are lists of tokens (no ``<eos>``/``<pad>``).
"""

import math
import random
from functools import lru_cache

BLEU_ORDERS = (1, 2, 3)
MEAN_1_3 = "mean-1-3"
CUMULATIVE_3 = "cumulative-3"
BLEU_FORMULAS = (MEAN_1_3, CUMULATIVE_3)
_FORMULA_ORDERS = {MEAN_1_3: BLEU_ORDERS, CUMULATIVE_3: (3,)}
SHUFFLE_SEED = 0
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0


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


def check_bleu_formula(formula):
    """``formula`` is one of :data:`BLEU_FORMULAS` (ValueError otherwise); returns it."""
    if not isinstance(formula, str) or formula not in BLEU_FORMULAS:
        raise ValueError(f"formula must be one of {', '.join(map(repr, BLEU_FORMULAS))}, got {formula!r}")
    return formula


def _orders(orders, formula):
    check_bleu_formula(formula)
    if orders is None:
        return _FORMULA_ORDERS[formula]
    orders = tuple(orders)
    if not orders or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in orders):
        raise ValueError(f"orders must be BLEU orders n >= 1 (at least one), got {orders!r}")
    if formula != MEAN_1_3:
        raise ValueError(f"orders chooses the BLEU-n of a mean: it goes with formula={MEAN_1_3!r}, not {formula!r}")
    return orders


def bleu(sample, reference, orders=None, smoothing="method7", formula=MEAN_1_3):
    """BLEU of token list ``sample`` against one ``reference`` (0.0 if either is empty).

    formula: ``"mean-1-3"`` (the mean of BLEU-1, -2, -3) or ``"cumulative-3"``
        (one BLEU-3 with weights (1/3, 1/3, 1/3): the SLCVAE/kgCVAE code's).
    orders: with ``"mean-1-3"`` only, the BLEU-n averaged instead of 1, 2, 3
        (BLEU-n weighs the 1..n-gram precisions uniformly; ``orders=(3,)``
        is ``"cumulative-3"``).
    smoothing: the ``nltk.translate.bleu_score.SmoothingFunction`` method
        (the paper's ``"method7"``), ``"method7-legacy"`` (method7 as NLTK
        3.2.2-3.4.5 computed it), or ``None`` for none.
    """
    sample, reference = _tokens("sample", sample), _tokens("reference", reference)
    orders = _orders(orders, formula)
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


def bleu_precision_recall(samples, references, smoothing="method7", formula=MEAN_1_3):
    """``(BLEU-P, BLEU-R)`` of the generated ``samples`` for one input against its ``references``."""
    if isinstance(samples, str) or isinstance(references, str):
        raise TypeError("samples and references must be lists of token lists, not strings")
    samples, references = [_tokens("samples", s) for s in samples], [_tokens("references", r) for r in references]
    if not samples or not references:
        raise ValueError(f"need at least one sample and one reference, got {len(samples)} and {len(references)}")
    scores = [[bleu(s, r, smoothing=smoothing, formula=formula) for r in references] for s in samples]
    precision = sum(max(row) for row in scores) / len(samples)
    recall = sum(max(scores[i][j] for i in range(len(samples))) for j in range(len(references))) / len(references)
    return precision, recall


def corpus_bleu_pr(list_of_samples, list_of_references, smoothing="method7", formula=MEAN_1_3):
    """Mean ``(BLEU-P, BLEU-R)`` over inputs; ``list_of_samples[k]`` are the samples for input k."""
    list_of_samples, list_of_references = _paired(list_of_samples, list_of_references)
    return mean_precision_recall(  # raises for no inputs
        [bleu_precision_recall(s, r, smoothing, formula) for s, r in zip(list_of_samples, list_of_references)]
    )


def _paired(list_of_samples, list_of_references):
    list_of_samples, list_of_references = list(list_of_samples), list(list_of_references)
    if len(list_of_samples) != len(list_of_references):
        raise ValueError(f"{len(list_of_samples)} sample lists for {len(list_of_references)} reference lists")
    return list_of_samples, list_of_references


def mean_precision_recall(pairs):
    """Mean ``(BLEU-P, BLEU-R)`` of per-input ``(precision, recall)`` pairs (at least one)."""
    pairs = list(pairs)
    if not pairs:
        raise ValueError("no inputs to score")
    return sum(p for p, _ in pairs) / len(pairs), sum(r for _, r in pairs) / len(pairs)


# ------------------------------------------------------------ context gain


def _check_count(name, value, low):
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def derangement(n, seed=SHUFFLE_SEED):
    """A permutation ``perm`` of ``range(n)`` with ``perm[i] != i`` for every i (n >= 2), fixed by ``seed``.

    Drawn uniformly among the derangements: ``random.Random(seed)`` shuffles
    ``range(n)`` until no element stays in place (about e = 2.7 shuffles on
    average). Python's ``random`` gives the same permutation for the same
    ``(n, seed)`` on every platform and Python 3 release.
    """
    _check_count("n", n, 2)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    rng = random.Random(seed)
    perm = list(range(n))
    while True:
        rng.shuffle(perm)
        if all(p != i for i, p in enumerate(perm)):
            return perm


def _percentile(sorted_values, q):
    """The ``q``-quantile (0..1) of sorted values, linear between ranks (NumPy's default)."""
    position = q * (len(sorted_values) - 1)
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def bootstrap_means(columns, resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED):
    """The spread of the means of paired per-input values, by a bootstrap over the inputs.

    columns: equally long lists of numbers (one value per input in each);
    every resample draws ``len`` inputs with replacement
    (``random.Random(seed)``) and takes each column's mean over the same
    draws. Returns one ``{"std": .., "ci95": [low, high]}`` per column: the
    standard deviation of the resampled means (the standard error of the
    mean) and their 2.5 % and 97.5 % percentiles.
    """
    columns = [list(map(float, c)) for c in columns]
    if not columns or not columns[0] or any(len(c) != len(columns[0]) for c in columns):
        raise ValueError("columns must be one or more equally long, non-empty lists of per-input values")
    _check_count("resamples", resamples, 2)
    rng = random.Random(seed)
    n = len(columns[0])
    inputs = range(n)
    means = [[] for _ in columns]
    for _ in range(resamples):
        draw = rng.choices(inputs, k=n)
        for column, out in zip(columns, means):
            out.append(math.fsum(column[i] for i in draw) / n)
    spread = []
    for values in means:
        centre = math.fsum(values) / resamples
        std = math.sqrt(math.fsum((v - centre) ** 2 for v in values) / (resamples - 1))
        values.sort()
        spread.append({"std": std, "ci95": [_percentile(values, 0.025), _percentile(values, 0.975)]})
    return spread


def context_gain(own, shuffled, resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED):
    """How much of the BLEU comes from the input: own-reference minus shuffled-reference BLEU-P/R.

    own: per-input ``(BLEU-P, BLEU-R)`` of the samples against their own
        input's references; shuffled: of the same samples against another
        input's references (see :func:`corpus_context_gain`).
    Returns ``shuffled_bleu_precision``/``shuffled_bleu_recall`` (the means
    of ``shuffled``), ``context_gain_precision``/``context_gain_recall``
    (the mean per-input differences, i.e. BLEU-P/R minus shuffled BLEU-P/R)
    and ``context_gain_spread``: :func:`bootstrap_means` of the per-input
    differences (``precision_std``, ``precision_ci95``, ``recall_std``,
    ``recall_ci95``, with ``resamples`` and ``seed``).
    """
    own, shuffled = list(own), list(shuffled)
    if len(own) != len(shuffled) or not own:
        raise ValueError(f"own and shuffled must hold one (precision, recall) pair per input, "
                         f"got {len(own)} and {len(shuffled)}")
    gain_p = [o[0] - s[0] for o, s in zip(own, shuffled)]
    gain_r = [o[1] - s[1] for o, s in zip(own, shuffled)]
    shuffled_p, shuffled_r = mean_precision_recall(shuffled)
    spread_p, spread_r = bootstrap_means([gain_p, gain_r], resamples, seed)
    return {
        "shuffled_bleu_precision": shuffled_p,
        "shuffled_bleu_recall": shuffled_r,
        "context_gain_precision": math.fsum(gain_p) / len(gain_p),
        "context_gain_recall": math.fsum(gain_r) / len(gain_r),
        "context_gain_spread": {
            "method": "bootstrap over inputs",
            "resamples": resamples,
            "seed": seed,
            "precision_std": spread_p["std"],
            "precision_ci95": spread_p["ci95"],
            "recall_std": spread_r["std"],
            "recall_ci95": spread_r["ci95"],
        },
    }


def shuffled_pairs(list_of_samples, list_of_references, smoothing="method7", formula=MEAN_1_3, seed=SHUFFLE_SEED):
    """Per-input ``(BLEU-P, BLEU-R)`` of ``list_of_samples[i]`` against ``list_of_references[perm[i]]``.

    perm: :func:`derangement` ``(len, seed)``, so no input keeps its own
    references (at least two inputs).
    """
    list_of_samples, list_of_references = _paired(list_of_samples, list_of_references)
    perm = derangement(len(list_of_samples), seed)
    return [bleu_precision_recall(s, list_of_references[j], smoothing, formula)
            for s, j in zip(list_of_samples, perm)]


def corpus_context_gain(list_of_samples, list_of_references, smoothing="method7", formula=MEAN_1_3,
                        shuffle_seed=SHUFFLE_SEED, resamples=BOOTSTRAP_RESAMPLES, bootstrap_seed=BOOTSTRAP_SEED):
    """BLEU-P/R, shuffled BLEU-P/R and the context gain of samples for at least two inputs.

    ``bleu_precision``/``bleu_recall`` as :func:`corpus_bleu_pr`, plus
    :func:`context_gain` of the same samples scored against the references
    of input ``derangement(n, shuffle_seed)[i]`` (``shuffle_seed`` recorded).
    """
    list_of_samples, list_of_references = _paired(list_of_samples, list_of_references)
    own = [bleu_precision_recall(s, r, smoothing, formula) for s, r in zip(list_of_samples, list_of_references)]
    shuffled = shuffled_pairs(list_of_samples, list_of_references, smoothing, formula, shuffle_seed)
    precision, recall = mean_precision_recall(own)
    return {"bleu_precision": precision, "bleu_recall": recall, "shuffle_seed": shuffle_seed,
            **context_gain(own, shuffled, resamples, bootstrap_seed)}
