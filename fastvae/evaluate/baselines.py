"""Baselines that ignore the model: random training responses (:func:`evaluate_random_responses`) and the
input's own last utterance (:func:`evaluate_echo_responses`), scored as :func:`evaluate_generation` scores a
model's responses."""

import torch

from fastvae.data.corpora import EOU
from fastvae.evaluate.checks import check_generator, check_positive_int, check_scoring, check_vocab
from fastvae.evaluate.scoring import generation_report, input_groups, seen_mask
from fastvae.metrics import MEAN_1_3, SHUFFLE_SEED


def evaluate_random_responses(dataset, responses, vocab, num_samples=10, max_inputs=None, generator=None,
                              seen_sources=None, bleu_smoothing="method7", bleu_formula=MEAN_1_3,
                              shuffle_seed=SHUFFLE_SEED):
    """The same report as :func:`evaluate_generation` for a baseline that ignores the input.

    Every distinct input of the conditional ``dataset`` gets ``num_samples``
    responses drawn uniformly at random (with replacement) from
    ``responses`` -- typically the training targets, ``train.targets`` of a
    :class:`TextDataset` built with the same ``vocab``. It shows which BLEU
    and distinct-n a model reaches without looking at its context at all.

    responses: lists of token ids (a trailing ``<eos>`` is dropped), at least one non-empty.
    vocab: the Vocab that decodes ids (``<unk>`` stays ``<unk>``, as in model outputs).
    generator: a ``torch.Generator`` for the draws (None: the global RNG).

    seen_sources, bleu_smoothing, bleu_formula, shuffle_seed: as in
    :func:`evaluate_generation` (the context gain of this baseline is 0 up
    to the draws' noise: a measure of that noise).

    The report's ``strategy`` is ``"random-response"``.
    """
    check_scoring(bleu_smoothing, bleu_formula, shuffle_seed)
    if not getattr(dataset, "conditional", False):
        raise ValueError("dataset must be conditional (examples with a source): the baseline answers sources")
    check_positive_int("num_samples", num_samples)
    check_positive_int("max_inputs", max_inputs, optional=True)
    check_generator(generator)
    check_vocab(vocab, dataset)
    responses = [] if isinstance(responses, (str, bytes)) else [r.tolist() if hasattr(r, "tolist") else r for r in responses]
    for r in responses:
        if isinstance(r, (str, bytes)) or not all(isinstance(i, int) and not isinstance(i, bool) for i in r):
            raise TypeError(f"responses must hold token-id lists (e.g. train.targets), got {r!r:.60}")
    pool = [vocab.decode(r) for r in responses]
    pool = [r for r in pool if r]
    if not pool:
        raise ValueError("responses must hold at least one non-empty response")
    seen = seen_mask(dataset, max_inputs, seen_sources)
    groups = input_groups(dataset, max_inputs)
    picks = torch.randint(len(pool), (len(groups), num_samples), generator=generator).tolist()
    triples = [
        (vocab.decode(source), [vocab.decode(t) for t in targets], [pool[i] for i in row])
        for (source, targets), row in zip(groups, picks)
    ]
    return generation_report(triples, num_samples, "random-response", seen, bleu_smoothing, bleu_formula,
                              shuffle_seed)


def evaluate_echo_responses(dataset, vocab, separator=EOU, max_inputs=None, seen_sources=None,
                            bleu_smoothing="method7", bleu_formula=MEAN_1_3, shuffle_seed=SHUFFLE_SEED):
    """The same report for a baseline that answers every input with its own last segment.

    The reply is the part of the input's source after its last ``separator``
    token (DailyDialog: the utterance just before the response; the whole
    source when it holds no separator). No model, no randomness: one
    response per input, so BLEU-precision equals BLEU-recall. It shows how
    much BLEU mere overlap with the context earns.

    dataset: a conditional TextDataset; vocab: the Vocab that decodes ids.
    seen_sources, bleu_smoothing, bleu_formula, shuffle_seed: as in
    :func:`evaluate_generation`. The report's ``strategy`` is ``"echo-context"``.
    """
    check_scoring(bleu_smoothing, bleu_formula, shuffle_seed)
    if not getattr(dataset, "conditional", False):
        raise ValueError("dataset must be conditional (examples with a source): the baseline echoes sources")
    check_positive_int("max_inputs", max_inputs, optional=True)
    if not isinstance(separator, str):
        raise TypeError(f"separator must be a token (str), got {type(separator).__name__}")
    check_vocab(vocab, dataset)
    seen = seen_mask(dataset, max_inputs, seen_sources)
    triples = []
    for source, targets in input_groups(dataset, max_inputs):
        words = vocab.decode(source)
        cut = len(words) - words[::-1].index(separator) if separator in words else 0
        triples.append((words, [vocab.decode(t) for t in targets], [words[cut:]]))
    return generation_report(triples, 1, "echo-context", seen, bleu_smoothing, bleu_formula, shuffle_seed)
