"""A small, deterministic word tokenizer for English corpora.

``tokenize(text)``:

1. normalises typographic apostrophes (``’``, ``‘``, and the backtick some
   old bibles use) to ``'``;
2. lower-cases;
3. re-attaches contractions that a corpus wrote with spaces around the
   apostrophe (DailyDialog's ``I ’ ll``, ``don ’ t``, ``o ’ clock``) ->
   ``i'll``, ``don't``, ``o'clock``: a letter, an optional space, ``'``, an
   optional space, then ``s``/``t``/``m``/``ll``/``re``/``d``/``ve``/``clock``
   as a whole word;
4. keeps special tokens written in angle brackets whole (``<unk>``, ``<eou>``);
5. splits into words (letters/digits/underscore, keeping one inner
   apostrophe part: ``don't``, ``god's``) and single punctuation marks, so
   ``"Right.But you?"`` -> ``["right", ".", "but", "you", "?"]``;
6. drops all whitespace (runs of spaces, tabs and newlines count as one).

It never returns empty tokens, and ``tokenize(" ".join(tokenize(s))) ==
tokenize(s)``: tokenizing already tokenized text changes nothing.

A saved model folder names its tokenizer (``tokenizer_config.json``): one of
:data:`TOKENIZERS`, ``"fastvae"`` (this function) or ``"whitespace"``
(``str.split``: corpora that come tokenized, such as PTB).
"""

import re
from typing import Callable, List

TOKEN_PATTERN = re.compile(r"<\w+>|\w+(?:'\w+)?|[^\w\s]")
_SPACED_CONTRACTION = re.compile(r"(?<=[^\W\d_]) ?' ?(s|t|m|ll|re|d|ve|clock)\b")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'"})


def tokenize(text: str) -> List[str]:
    """``text`` (str) -> list of lower-cased word and punctuation tokens."""
    if not isinstance(text, str):
        raise TypeError(f"tokenize expects a str, got {type(text).__name__}")
    text = _SPACED_CONTRACTION.sub(r"'\1", text.translate(_APOSTROPHES).lower())
    return TOKEN_PATTERN.findall(text)


def _whitespace(text):
    if not isinstance(text, str):
        raise TypeError(f"tokenize expects a str, got {type(text).__name__}")
    return text.split()


TOKENIZERS = {"fastvae": tokenize, "whitespace": _whitespace}


def get_tokenizer(name: str) -> Callable[[str], List[str]]:
    """The tokenizer function called ``name`` (a key of :data:`TOKENIZERS`)."""
    if name not in TOKENIZERS:
        raise ValueError(f"tokenizer must be one of {sorted(TOKENIZERS)}, got {name!r}")
    return TOKENIZERS[name]
