"""The corpus of a run: which one (``CorpusSpec`` from run.json), its examples in the form the model reads,
and what a model card says about it."""

import dataclasses
import os

from fastvae.data import TextDataset
from fastvae.data.sources import CorpusSpec, load_corpus, target_sentences
from fastvae.models.registry import model_class


def corpus_spec(run, data_dir=None):
    """The run's corpus; ``data_dir`` (e.g. ``--data-dir``), when given, replaces the folder it was read from.

    ``fastvae train`` stores the absolute data root of dailydialog/ptb runs; run.json files of older
    versions hold ``data_dir: null``, read as today: ``$FASTVAE_DATA``, else ``../shared/data``.
    ``run`` comes from :func:`fastvae.cli.runs.read_run`, which has checked the corpus settings.
    """
    spec = CorpusSpec.from_dict(run["corpus"])
    return dataclasses.replace(spec, data_dir=data_dir) if data_dir else spec


def corpus_examples(spec, split, model_name):
    """The split's examples in the form the model ``model_name`` reads (targets only for a model without a
    context, such as a Sentence-VAE); None when the corpus has no file for the split."""
    examples = load_corpus(spec, split)
    if examples is None:
        return None
    if not model_class(model_name).is_conditional:
        return target_sentences(examples)
    if not spec.conditional:
        raise ValueError(f"--model {model_name} needs (source, target) pairs; the {spec.name!r} corpus has sentences only")
    return examples


def dataset(spec, split, model_name, vocab, max_length):
    """:func:`corpus_examples` as a TextDataset encoded with ``vocab`` (None when the split has no file)."""
    examples = corpus_examples(spec, split, model_name)
    return None if examples is None else TextDataset(examples, vocab, max_length=max_length)


def data_description(spec, max_length=None):
    """What a model card says the model was trained on: the corpus and the options that chose its examples."""
    out = {"corpus": spec.name}
    for key in ("train_file", "valid_file"):
        if getattr(spec, key):
            out[key.replace("_", " ")] = os.path.basename(getattr(spec, key))
    for key, label in (("max_examples", "at most examples per split"), ("bible_max_length", "longest verse (tokens)"),
                       ("context_window", "context (utterances before the response)")):
        if getattr(spec, key) is not None:
            out[label] = getattr(spec, key)
    if max_length is not None:
        out["sequences cut to (tokens)"] = max_length
    return out
