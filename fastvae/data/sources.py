"""Named corpora for the command line: where the data lives and how each split is read.

``load_corpus(spec, split)`` returns the examples of one split of a
:class:`CorpusSpec`:

* ``bible``: the embedded Bible corpus (KJV -> WEB/ASV/YLT/DARBY), no files needed.
* ``dailydialog``: ``<root>/dailydialog/dialogues_{train,validation,test}.txt``; each
  response's context is the ``context_window`` (default 5) utterances before it.
* ``ptb``: ``<root>/ptb/ptb.{train,valid,test}.txt`` (already tokenized: split on spaces).
* ``lines`` / ``tsv``: your own files, one sentence per line / ``source<TAB>target``.

``root`` is the ``data_dir`` given, else ``$FASTVAE_DATA``, else ``../shared/data``.
"""

import os
from dataclasses import asdict, dataclass
from typing import Optional

from fastvae.data.corpora import DAILYDIALOG_MAX_CONTEXT, Example, load_bible, load_dailydialog, load_lines, load_tsv

DATA_ENV = "FASTVAE_DATA"
DEFAULT_ROOT = os.path.join("..", "shared", "data")
CORPORA = ("bible", "dailydialog", "ptb", "lines", "tsv")
SPLITS = ("train", "valid", "test")
CONDITIONAL = {"bible": True, "dailydialog": True, "ptb": False, "lines": False, "tsv": True}


def corpus_tokenizer(name):
    """How the text of corpus ``name`` is split into tokens (a :data:`fastvae.data.tokenizer.TOKENIZERS`
    name): ``"whitespace"`` for PTB, which comes tokenized, ``"fastvae"`` for the others."""
    return "whitespace" if name == "ptb" else "fastvae"


def data_root(data_dir=None):
    """The data directory: ``data_dir``, else ``$FASTVAE_DATA``, else ``../shared/data``."""
    return os.fspath(data_dir or os.environ.get(DATA_ENV) or DEFAULT_ROOT)


@dataclass
class CorpusSpec:
    """Which corpus to read (JSON-able, stored in a run directory so evaluation finds the same data).

    name: one of :data:`CORPORA`. data_dir: the root holding ``dailydialog/`` and
    ``ptb/`` (``None``: :func:`data_root`). train_file / valid_file / test_file:
    the files of ``lines``/``tsv`` corpora. max_examples: keep only the first
    examples of each split (quick runs). bible_max_length: leave out verses
    longer than this many tokens in any translation. context_window: dailydialog only,
    the utterances before a response that form its context (``None``: 5, the
    loader's default; 1: the previous utterance alone).
    """

    name: str
    data_dir: Optional[str] = None
    train_file: Optional[str] = None
    valid_file: Optional[str] = None
    test_file: Optional[str] = None
    max_examples: Optional[int] = None
    bible_max_length: Optional[int] = None
    context_window: Optional[int] = None

    def check(self):
        if self.name not in CORPORA:
            raise ValueError(f"unknown corpus {self.name!r}; choose one of {list(CORPORA)}")
        if self.name in ("lines", "tsv") and not self.train_file:
            raise ValueError(f"the {self.name!r} corpus needs train_file (and usually valid_file)")
        if self.max_examples is not None and self.max_examples < 1:
            raise ValueError(f"max_examples must be >= 1, got {self.max_examples}")
        if self.context_window is not None:
            if self.name != "dailydialog":
                raise ValueError(f"context_window applies to the dailydialog corpus only, not {self.name!r}")
            if isinstance(self.context_window, bool) or not isinstance(self.context_window, int) or self.context_window < 1:
                raise ValueError(f"context_window must be an integer >= 1 (utterances), got {self.context_window!r}")
        return self

    @property
    def conditional(self):
        return CONDITIONAL[self.name]

    @property
    def tokenizer(self):
        """:func:`corpus_tokenizer` of this corpus."""
        return corpus_tokenizer(self.name)

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        return cls(**d).check()


def _directory(root, name):
    path = os.path.join(root, name)
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"no {name} data at {path!r}; pass --data-dir (or set {DATA_ENV}) to the folder that holds {name}/"
        )
    return path


def load_corpus(spec, split):
    """The examples of ``split`` (``train``/``valid``/``test``) of ``spec``.

    Conditional corpora give :class:`Example` lists, sentence corpora token
    lists. Returns ``None`` when a ``lines``/``tsv`` corpus has no file for the
    split.
    """
    spec.check()
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    root = data_root(spec.data_dir)
    if spec.name == "bible":
        # a cap on examples keeps whole verses: 4 renderings per verse
        verses = None if spec.max_examples is None else max(1, spec.max_examples // 4)
        examples = load_bible(split, max_verses=verses, max_length=spec.bible_max_length)
    elif spec.name == "dailydialog":
        window = DAILYDIALOG_MAX_CONTEXT if spec.context_window is None else spec.context_window
        examples = load_dailydialog(_directory(root, "dailydialog"), split, max_context=window)
    elif spec.name == "ptb":
        examples = load_lines(os.path.join(_directory(root, "ptb"), f"ptb.{split}.txt"), tokenizer=str.split)
    else:
        path = getattr(spec, f"{split}_file")
        if not path:
            return None
        examples = load_lines(path) if spec.name == "lines" else load_tsv(path)
    if spec.max_examples is not None:
        examples = examples[: spec.max_examples]
    return examples


def target_sentences(examples):
    """The target token lists of ``examples`` (a Sentence-VAE trained on a paired corpus reads its targets)."""
    return [ex.target if isinstance(ex, Example) else ex for ex in examples]
