"""fastvae.data: tokenizer, vocabulary, corpus loaders and batching into :class:`fastvae.models.Batch`."""

from fastvae.data.corpora import EOU, Example, load_bible, load_dailydialog, load_lines, load_tsv
from fastvae.data.dataset import TextDataset, batches
from fastvae.data.tokenizer import tokenize
from fastvae.data.vocab import Vocab

__all__ = [
    "tokenize",
    "Vocab",
    "Example",
    "EOU",
    "load_lines",
    "load_dailydialog",
    "load_tsv",
    "load_bible",
    "TextDataset",
    "batches",
]
