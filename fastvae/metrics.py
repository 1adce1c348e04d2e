"""Diversity and quality metrics of generated text (as in the SLCVAE paper, Zhang et al. 2019).

* ``distinct_n``: distinct n-grams / generated tokens, over all sentences.
* BLEU of one sample against one reference: the mean of BLEU-1, -2 and -3,
  each NLTK ``sentence_bleu`` with uniform weights over its orders and
  ``SmoothingFunction().method7``.
* BLEU-P (precision): mean over samples of the best BLEU against the references.
* BLEU-R (recall): mean over references of the best BLEU against the samples.

Sentences are lists of tokens (no ``<eos>``/``<pad>``).
"""

from functools import lru_cache

BLEU_ORDERS = (1, 2, 3)


def distinct_n(sentences, n):
    """Distinct n-grams across all ``sentences`` divided by their total number of tokens.

    This is the SLCVAE paper's definition (the denominator counts tokens, not
    n-grams). 0.0 when there are no tokens.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    ngrams, tokens = set(), 0
    for s in sentences:
        s = list(s)
        tokens += len(s)
        ngrams.update(tuple(s[i : i + n]) for i in range(len(s) - n + 1))
    return len(ngrams) / tokens if tokens else 0.0


@lru_cache(maxsize=1)
def _nltk():
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    return sentence_bleu, SmoothingFunction().method7


def bleu(sample, reference):
    """Mean of BLEU-1, -2, -3 of token list ``sample`` against one ``reference`` (0.0 if either is empty)."""
    sample, reference = list(sample), list(reference)
    if not sample or not reference:
        return 0.0
    sentence_bleu, smoothing = _nltk()
    scores = [
        sentence_bleu([reference], sample, weights=(1.0 / n,) * n, smoothing_function=smoothing) for n in BLEU_ORDERS
    ]
    return sum(scores) / len(scores)


def bleu_precision_recall(samples, references):
    """``(BLEU-P, BLEU-R)`` of the generated ``samples`` for one input against its ``references``."""
    samples, references = [list(s) for s in samples], [list(r) for r in references]
    if not samples or not references:
        raise ValueError(f"need at least one sample and one reference, got {len(samples)} and {len(references)}")
    scores = [[bleu(s, r) for r in references] for s in samples]
    precision = sum(max(row) for row in scores) / len(samples)
    recall = sum(max(scores[i][j] for i in range(len(samples))) for j in range(len(references))) / len(references)
    return precision, recall


def corpus_bleu_pr(list_of_samples, list_of_references):
    """Mean ``(BLEU-P, BLEU-R)`` over inputs; ``list_of_samples[k]`` are the samples for input k."""
    list_of_samples, list_of_references = list(list_of_samples), list(list_of_references)
    if len(list_of_samples) != len(list_of_references):
        raise ValueError(f"{len(list_of_samples)} sample lists for {len(list_of_references)} reference lists")
    if not list_of_samples:
        raise ValueError("no inputs to score")
    pairs = [bleu_precision_recall(s, r) for s, r in zip(list_of_samples, list_of_references)]
    return sum(p for p, _ in pairs) / len(pairs), sum(r for _, r in pairs) / len(pairs)
