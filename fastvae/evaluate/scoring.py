"""The generation report's scores, shared by the models' outputs and the baselines: the inputs of a
conditional dataset (its groups), BLEU-P/R, the context gain, distinct-n, and the split into the inputs
seen in training and the rest."""

from fastvae.evaluate.checks import check_positive_int
from fastvae.metrics import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    bleu_precision_recall,
    context_gain,
    derangement,
    distinct_n,
    mean_precision_recall,
)


def input_groups(dataset, max_inputs):
    """``[(source ids, [target ids, ...]), ...]`` per group (one input each), in order of first appearance."""
    order, members = [], {}
    for i, group in enumerate(dataset.groups):
        if group not in members:
            order.append(group)
            members[group] = []
        members[group].append(i)
    if max_inputs is not None:
        order = order[:max_inputs]
    for g in order:  # one group is one input: a second source under the same id would vanish from the scores
        first = members[g][0]
        for i in members[g][1:]:
            if dataset.sources[i] != dataset.sources[first]:
                raise ValueError(f"examples {first} and {i} share group {g!r} but have different sources; "
                                 "a group is one source with all its references (give each source its own group)")
    return [(dataset.sources[members[g][0]], [dataset.targets[i] for i in members[g]]) for g in order]


def split_by_seen(dataset, seen_sources, max_inputs=None):
    """Which inputs of the conditional ``dataset`` have a source that occurs in ``seen_sources``.

    One bool per distinct input, in the order :func:`evaluate_generation`
    scores them (groups in order of first appearance, the first
    ``max_inputs`` with it set). Sources are compared as id sequences, as
    the model sees them (after the vocabulary and ``max_length``), so both
    sides must come from the same vocabulary and ``max_length``.

    seen_sources: an iterable of id lists (e.g. ``train.sources``); a
        TextDataset is taken to mean its ``sources``.
    """
    if not getattr(dataset, "conditional", False):
        raise ValueError("dataset must be conditional (examples with a source) to compare its sources")
    check_positive_int("max_inputs", max_inputs, optional=True)
    if isinstance(seen_sources, (str, bytes)):
        raise TypeError("seen_sources must hold id lists, not a string")
    if hasattr(seen_sources, "sources"):
        if seen_sources.sources is None:
            raise ValueError("seen_sources is a dataset without sources (sentence-only data)")
        if len(seen_sources.vocab) != len(dataset.vocab):
            raise ValueError(f"seen_sources was encoded with a {len(seen_sources.vocab)}-token vocabulary, "
                             f"dataset with {len(dataset.vocab)} tokens: ids would not compare")
        seen_sources = seen_sources.sources
    try:
        known = {tuple(int(i) for i in source) for source in seen_sources}
    except TypeError as err:
        raise TypeError(f"seen_sources must be an iterable of id lists: {err}") from None
    return [tuple(source) in known for source, _ in input_groups(dataset, max_inputs)]


def seen_mask(dataset, max_inputs, seen_sources):
    """:func:`split_by_seen`, or None without ``seen_sources``."""
    return None if seen_sources is None else split_by_seen(dataset, seen_sources, max_inputs)


def generation_report(triples, num_samples, strategy, seen, smoothing, formula, shuffle_seed):
    """The report of ``[(source tokens, [reference tokens], [sample tokens])]`` per input (``seen``: one bool per
    input, or None for no seen/unseen parts)."""
    # BLEU (NLTK, the costly part) once per input, against its own references and against those of input
    # perm[i]; the seen/unseen parts average the same per-input scores
    bleu = [bleu_precision_recall(samples, references, smoothing, formula) for _, references, samples in triples]
    shuffled = None
    if len(triples) > 1:
        perm = derangement(len(triples), shuffle_seed)
        shuffled = [bleu_precision_recall(samples, triples[j][1], smoothing, formula)
                    for (_, _, samples), j in zip(triples, perm)]
    report = _scores(triples, bleu, shuffled, num_samples, strategy)
    report.update(bleu_smoothing=smoothing, bleu_formula=formula, shuffle_seed=shuffle_seed)
    if seen is not None:
        for name, keep in (("seen", True), ("unseen", False)):
            kept = [i for i, s in enumerate(seen) if s == keep]
            # an empty part has nothing to score: only its count
            report[name] = (_scores([triples[i] for i in kept], [bleu[i] for i in kept],
                                    None if shuffled is None else [shuffled[i] for i in kept], num_samples, strategy)
                            if kept else {"inputs": 0.0})
    return report


_NO_GAIN = dict.fromkeys(("shuffled_bleu_precision", "shuffled_bleu_recall", "context_gain_precision",
                          "context_gain_recall", "context_gain_spread"))


def _scores(triples, bleu, shuffled, num_samples, strategy):
    """The report's metrics over ``triples``; ``bleu``/``shuffled`` hold their (BLEU-P, BLEU-R) per input
    against their own / the shuffled references (``shuffled`` None: a single input, no context gain)."""
    all_samples = [s for _, _, samples in triples for s in samples]
    precision, recall = mean_precision_recall(bleu)
    return {
        "inputs": float(len(triples)),
        "num_samples": float(num_samples),
        "bleu_precision": precision,
        "bleu_recall": recall,
        "distinct_1": float(distinct_n(all_samples, 1)),
        "distinct_2": float(distinct_n(all_samples, 2)),
        "intra_distinct_1": sum(distinct_n(t[2], 1) for t in triples) / len(triples),
        "intra_distinct_2": sum(distinct_n(t[2], 2) for t in triples) / len(triples),
        "avg_length": sum(len(s) for s in all_samples) / max(len(all_samples), 1),
        "strategy": strategy,
        **(_NO_GAIN if shuffled is None else context_gain(bleu, shuffled, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED)),
    }
