"""Corpus loaders that return plain Python data (lists of token lists or of :class:`Example`).

Every loader reads the whole file before returning and raises an error that
names the file (and the line, 1-based, where one is at fault) for a missing
path, an empty file or a malformed line: nothing is ever half-loaded.

* :func:`load_lines` - one sentence per line (Penn Treebank style).
* :func:`load_dailydialog` - DailyDialog, context (up to ``max_context``, default 5, utterances) -> response.
* :func:`load_tsv` - ``source<TAB>target`` pairs, one-to-many groups.
* :func:`load_bible` - KJV verse -> the same verse in four other translations.

All text goes through :func:`fastvae.data.tokenizer.tokenize` (lower-cased).
"""

import os
import re
import zlib
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Union

PathLike = Union[str, "os.PathLike[str]"]

from fastvae._files import check_regular_file
from fastvae.data.tokenizer import tokenize

EOU = "<eou>"
"""Separator placed between the utterances of a dialogue context (an ordinary vocabulary token)."""

DAILYDIALOG_SPLITS = ("train", "validation", "test")
DAILYDIALOG_MAX_CONTEXT = 5
BIBLE_SPLITS = ("train", "valid", "test")
BIBLE_VERSIONS = {
    "kjv": "KING_JAMES",
    "web": "WORLD_ENGLISH",
    "asv": "AMERICAN_STANDARD",
    "ylt": "YOUNGS",
    "dar": "DARBY",
}


@dataclass
class Example:
    """One training pair.

    source: the condition's tokens (a dialogue context with ``<eou>`` between
        utterances, a source sentence), or ``None`` for sentence-only data.
    target: the tokens to generate (no ``<eos>``; the dataset adds it).
    group: examples with the same ``source`` share a group id (``0, 1, ...`` in
        order of first appearance); at evaluation the targets of a group are the
        references of its source.
    origin: where the example comes from, for people (e.g. ``"dialogue 3, turn 2"``).
    act, emotion: DailyDialog labels of the target utterance (``with_labels=True``).
    """

    source: Optional[List[str]]
    target: List[str]
    group: int
    origin: str = ""
    act: Optional[int] = None
    emotion: Optional[int] = None


def read_lines(path: PathLike) -> List[str]:
    """The lines of a UTF-8 text file (without line ends, split at ``\n`` only); errors name the file."""
    path = os.fspath(path)
    check_regular_file(path, f"no such file: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not valid UTF-8 text: {exc}") from None
    # "\n" (or "\r\n") ends a line, nothing else: str.splitlines() would also split at form feeds,
    # \x85 or U+2028 inside a line, and every later error would name the wrong line number
    lines = text.removeprefix("\ufeff").split("\n")  # a UTF-8 byte-order mark is not a token
    if lines[-1] == "":
        lines.pop()
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    if not any(line.strip() for line in lines):
        raise ValueError(f"{path} is empty")
    return lines


def _tokens(path, lineno, text, what="line", tokenizer=tokenize):
    tokens = tokenizer(text)
    if not tokens:
        raise ValueError(f"{path}:{lineno}: malformed {what}: it holds no tokens")
    return tokens


def load_lines(path: PathLike, tokenizer: Optional[Callable[[str], List[str]]] = None) -> List[List[str]]:
    """One sentence per line -> list of token lists.

    tokenizer: a function ``str -> list[str]``; default :func:`tokenize`.
        Pass ``str.split`` for an already tokenized corpus such as PTB, whose
        ``<unk>``, ``N`` and ``'s`` tokens then stay as they are
        (ptb.train.txt: 42,068 sentences, 887,521 tokens).

    A blank line counts as malformed (PTB has none): ``ValueError`` naming
    ``file:line``.
    """
    tokenizer = tokenize if tokenizer is None else tokenizer
    return [_tokens(path, i, line, tokenizer=tokenizer) for i, line in enumerate(read_lines(path), 1)]


# ------------------------------------------------------------------ DailyDialog


def _split_dialogue(path, lineno, line):
    """``"u1 __eou__ u2 __eou__"`` -> ``[tokens(u1), tokens(u2)]``."""
    if not line.strip():
        raise ValueError(f"{path}:{lineno}: malformed dialogue: the line is blank")
    pieces = line.split("__eou__")
    if not pieces[-1].strip():
        pieces = pieces[:-1]
    return [_tokens(path, lineno, piece, what="dialogue (an empty utterance)") for piece in pieces]


def _read_labels(path, counts):
    """Integer labels per line; the count on each line must equal the utterances of that dialogue."""
    lines = read_lines(path)
    if len(lines) != len(counts):
        raise ValueError(f"{path} has {len(lines)} lines but the dialogue file has {len(counts)} dialogues")
    labels = []
    for lineno, (line, count) in enumerate(zip(lines, counts), 1):
        try:
            row = [int(x) for x in line.split()]
        except ValueError:
            raise ValueError(f"{path}:{lineno}: malformed labels (not integers): {line.strip()[:80]!r}") from None
        if len(row) != count:
            raise ValueError(f"{path}:{lineno}: {len(row)} labels for a dialogue of {count} utterances")
        labels.append(row)
    return labels


def load_dailydialog(
    directory: PathLike, split: str = "train", with_labels: bool = False, max_context: int = DAILYDIALOG_MAX_CONTEXT
) -> List[Example]:
    """DailyDialog's official ``dialogues_{split}.txt`` -> list of :class:`Example`.

    Every utterance ``i >= 1`` of a dialogue is a response (target); its
    context (source) is the up to ``max_context`` (default 5) utterances
    before it - a sliding window of at most ``max_context + 1`` utterances
    in all - joined into one token sequence with the separator ``<eou>``
    between utterances (not after the last): ``u_{i-2} <eou> u_{i-1}``;
    ``max_context=1`` gives the previous utterance alone, one source
    sentence per response as in the SLCVAE authors' code. Each response has
    its own group.

    ``split``: ``"train"``, ``"validation"`` (or ``"valid"``) or ``"test"``.
    ``with_labels``: also read ``dialogues_act_{split}.txt`` and
    ``dialogues_emotion_{split}.txt`` and set each example's ``act`` and
    ``emotion`` to the response's labels; a label count that differs from a
    dialogue's utterance count is an error naming the file and line.
    """
    split = {"valid": "validation", "dev": "validation"}.get(split, split)
    if split not in DAILYDIALOG_SPLITS:
        raise ValueError(f"split must be one of {DAILYDIALOG_SPLITS}, got {split!r}")
    if isinstance(max_context, bool) or not isinstance(max_context, int) or max_context < 1:
        raise ValueError(f"max_context must be an integer >= 1, got {max_context!r}")
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"no DailyDialog directory at {directory}")
    path = os.path.join(directory, f"dialogues_{split}.txt")
    dialogues = [_split_dialogue(path, i, line) for i, line in enumerate(read_lines(path), 1)]
    counts = [len(d) for d in dialogues]
    acts = emotions = None
    if with_labels:
        acts = _read_labels(os.path.join(directory, f"dialogues_act_{split}.txt"), counts)
        emotions = _read_labels(os.path.join(directory, f"dialogues_emotion_{split}.txt"), counts)
    examples = []
    for d, utterances in enumerate(dialogues):
        for i in range(1, len(utterances)):
            source = []
            for utterance in utterances[max(0, i - max_context) : i]:
                if source:
                    source.append(EOU)
                source.extend(utterance)
            examples.append(
                Example(
                    source=source,
                    target=list(utterances[i]),
                    group=len(examples),
                    origin=f"{split} dialogue {d + 1}, turn {i + 1}",
                    act=acts[d][i] if acts else None,
                    emotion=emotions[d][i] if emotions else None,
                )
            )
    if not examples:
        raise ValueError(
            f"{path}: no dialogue has two utterances, so there is no response to learn "
            "(utterances end with __eou__; is this a DailyDialog file?)"
        )
    return examples


# ------------------------------------------------------------------------- TSV


def load_tsv(path: PathLike) -> List[Example]:
    """``source<TAB>target`` per line -> list of :class:`Example`.

    Lines with the same (tokenized) source share one ``group`` id: the
    one-to-many references of that source. A line without exactly one tab or
    with an empty side is an error naming ``file:line``.
    """
    groups = {}
    examples = []
    for lineno, line in enumerate(read_lines(path), 1):
        fields = line.split("\t")
        if len(fields) != 2:
            raise ValueError(f"{path}:{lineno}: malformed line: expected 'source<TAB>target', found {len(fields) - 1} tabs")
        source = _tokens(path, lineno, fields[0], what="line (empty source)")
        target = _tokens(path, lineno, fields[1], what="line (empty target)")
        group = groups.setdefault(tuple(source), len(groups))
        examples.append(Example(source=source, target=target, group=group, origin=f"{os.path.basename(path)}:{lineno}"))
    return examples


# ----------------------------------------------------------------------- Bible

_BRACKETS = re.compile(r"[\[\]]")


def _bible(name):
    try:
        from pythonbible import Version
        from pythonbible.bible import get_bible
    except ImportError:
        raise ImportError("load_bible needs pythonbible: pip install pythonbible") from None
    if name not in BIBLE_VERSIONS:
        raise ValueError(f"unknown bible version {name!r}; choose from {sorted(BIBLE_VERSIONS)}")
    try:
        return get_bible(getattr(Version, BIBLE_VERSIONS[name]), "plain_text_readers")
    except Exception as exc:  # pythonbible's MissingBiblePackageError
        raise ImportError(f"bible version {name!r} is not installed: pip install pythonbible-{name} ({exc})") from None


def bible_split_of(verse_id: int) -> str:
    """The split of a verse: 90% train, 5% valid, 5% test by a CRC32 of its id (stable everywhere)."""
    bucket = zlib.crc32(str(int(verse_id)).encode()) % 100
    return "train" if bucket < 90 else "valid" if bucket < 95 else "test"


def load_bible(
    split: str = "train",
    source: str = "kjv",
    targets: Sequence[str] = ("web", "asv", "ylt", "dar"),
    max_verses: Optional[int] = None,
    max_length: Optional[int] = None,
) -> List[Example]:
    """A one-to-many paraphrase corpus from the ``pythonbible-*`` packages.

    Each verse gives ``len(targets)`` examples: the ``source`` translation of
    the verse -> the same verse in each target translation, all with one
    group id. Verses missing (or empty) in any of the chosen translations are
    left out, as are verses with more than ``max_length`` tokens in any of
    them (when given). The split is :func:`bible_split_of` the verse id;
    ``max_verses`` keeps the first verses of the split in canonical order.
    KJV's ``[italics]`` brackets are removed before tokenizing.
    """
    if split not in BIBLE_SPLITS:
        raise ValueError(f"split must be one of {BIBLE_SPLITS}, got {split!r}")
    targets = tuple(targets)
    if not targets:
        raise ValueError("targets must name at least one translation")
    bibles = {name: _bible(name) for name in (source,) + targets}
    verse_ids = set(bibles[source].get_verse_ids())
    for bible in bibles.values():
        verse_ids &= set(bible.get_verse_ids())
    examples = []
    verses = 0
    for verse_id in sorted(verse_ids):
        if max_verses is not None and verses >= max_verses:
            break
        if bible_split_of(verse_id) != split:
            continue
        texts = {}
        for name, bible in bibles.items():
            texts[name] = tokenize(_BRACKETS.sub("", bible.get_scripture(verse_id, verse_id)))
        if any(not t for t in texts.values()):
            continue
        if max_length is not None and any(len(t) > max_length for t in texts.values()):
            continue
        for name in targets:
            examples.append(
                Example(source=texts[source], target=texts[name], group=verses, origin=f"{source}->{name} {verse_id}")
            )
        verses += 1
    return examples
