"""The word <-> id mapping shared by a dataset and a model.

Special tokens come first with the ids every model uses by default:
``<pad>=0, <unk>=1, <sos>=2, <eos>=3``.
"""

import json
import os
from collections import Counter
from typing import Iterable, List, Optional, Sequence, Union

PathLike = Union[str, "os.PathLike[str]"]

from fastvae._files import atomic_write_json, atomic_write_text, read_json_object, remove_stale_temps
from fastvae.data.tokenizer import TOKENIZERS, get_tokenizer

PAD, UNK, SOS, EOS = "<pad>", "<unk>", "<sos>", "<eos>"
SPECIALS = (PAD, UNK, SOS, EOS)
FORMAT_VERSION = 1
VOCAB_NAME = "vocab.json"
TOKENIZER_CONFIG_NAME = "tokenizer_config.json"


class Vocab:
    """A fixed list of tokens; ``itos[i]`` is the token of id ``i``.

    ``tokenizer`` names how text becomes tokens for it (``"fastvae"``:
    :func:`fastvae.data.tokenize`; ``"whitespace"``: ``str.split``); it is
    saved with the vocabulary in a model folder (:meth:`save_pretrained`).
    """

    pad_id, unk_id, sos_id, eos_id = 0, 1, 2, 3

    def __init__(self, tokens: Iterable[str], tokenizer: str = "fastvae") -> None:
        """``tokens``: the full list, starting with ``<pad>, <unk>, <sos>, <eos>``, no duplicates."""
        get_tokenizer(tokenizer)  # a ValueError naming the known ones
        self.tokenizer = tokenizer
        tokens = list(tokens)
        if tuple(tokens[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a vocabulary must start with {list(SPECIALS)}, got {tokens[:len(SPECIALS)]}")
        for token in tokens:
            if not isinstance(token, str) or not token:
                raise ValueError(f"vocabulary tokens must be non-empty strings, got {token!r}")
        self.itos = tokens
        self.stoi = {token: i for i, token in enumerate(tokens)}
        if len(self.stoi) != len(tokens):
            dup = next(t for t, n in Counter(tokens).items() if n > 1)
            raise ValueError(f"vocabulary token {dup!r} appears more than once")

    @classmethod
    def build(
        cls,
        token_lists: Iterable[Sequence[str]],
        min_freq: int = 1,
        max_size: Optional[int] = None,
        tokenizer: str = "fastvae",
    ) -> "Vocab":
        """Count the tokens of ``token_lists`` (iterable of lists of str).

        Keeps tokens seen at least ``min_freq`` times, most frequent first,
        ties in alphabetical order (so the result never depends on the order
        of the data), at most ``max_size`` tokens in all (specials included).
        Special tokens found in the data are not counted twice.
        """
        if isinstance(min_freq, bool) or not isinstance(min_freq, int) or min_freq < 1:
            raise ValueError(f"min_freq must be an integer >= 1, got {min_freq!r}")
        if max_size is not None and (isinstance(max_size, bool) or not isinstance(max_size, int)
                                     or max_size < len(SPECIALS)):
            raise ValueError(f"max_size must be an integer >= {len(SPECIALS)} (the special tokens) or None, got {max_size!r}")
        counts = Counter()
        for i, tokens in enumerate(token_lists):
            if isinstance(tokens, str):  # a sentence, not its tokens: it would count characters
                raise TypeError(f"token_lists must hold lists of tokens, got the string {tokens[:40]!r} at position {i}; "
                                "tokenize it first (fastvae.data.tokenize)")
            counts.update(tokens)
        for special in SPECIALS:
            counts.pop(special, None)
        words = sorted((w for w, n in counts.items() if n >= min_freq), key=lambda w: (-counts[w], w))
        if max_size is not None:
            words = words[: max_size - len(SPECIALS)]
        return cls(list(SPECIALS) + words, tokenizer=tokenizer)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: object) -> bool:
        return token in self.stoi

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.itos == other.itos

    def encode(self, tokens: Iterable[str]) -> List[int]:
        """List of tokens -> list of ids (unknown tokens -> ``unk_id``); adds no ``<eos>``."""
        if isinstance(tokens, (str, bytes)):  # a string would be encoded character by character
            raise TypeError("tokens must be a list of token strings, not a string; tokenize it first")
        unk = self.unk_id
        return [self.stoi.get(token, unk) for token in tokens]

    def tokenize(self, text: str) -> List[str]:
        """``text`` -> tokens, with this vocabulary's tokenizer (unknown words stay as they are)."""
        return get_tokenizer(self.tokenizer)(text)

    def encode_text(self, text: str) -> List[int]:
        """``text`` -> ids ending with ``<eos>``: what a model reads (unknown words -> ``unk_id``)."""
        return self.encode(self.tokenize(text)) + [self.eos_id]

    def decode(self, ids: Iterable[int]) -> List[str]:
        """List (or 1-D tensor) of ids -> tokens, stopping at ``<eos>``, skipping ``<pad>`` and ``<sos>``."""
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i in (self.pad_id, self.sos_id):
                continue
            if not 0 <= i < len(self.itos):
                raise ValueError(f"token id {i} is outside the vocabulary [0, {len(self.itos)})")
            out.append(self.itos[i])
        return out

    def save(self, path: PathLike) -> None:
        """Write the vocabulary as JSON (``{"format_version": 1, "tokens": [...]}``), atomically."""
        data = {"format_version": FORMAT_VERSION, "tokens": self.itos}
        atomic_write_text(path, json.dumps(data, ensure_ascii=False))

    @classmethod
    def load(cls, path: PathLike, tokenizer: str = "fastvae") -> "Vocab":
        """Read a vocabulary written by :meth:`save`; ``ValueError`` naming the file if it is corrupt.

        tokenizer: how text becomes tokens for it (a model folder's
        :meth:`from_pretrained` reads it from ``tokenizer_config.json``).
        """
        return cls._load(path, tokenizer)

    @classmethod
    def _load(cls, path, tokenizer="fastvae"):
        remove_stale_temps(os.path.dirname(os.path.abspath(path)))  # what a save killed mid-write left
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no vocabulary file at {path!r}")
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            tokens = data["tokens"]
            version = data["format_version"]
        except KeyError as exc:
            raise ValueError(f"{path} is corrupt or not a fastvae vocabulary: key {exc.args[0]!r} is missing") from None
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError, RecursionError) as exc:
            raise ValueError(f"{path} is corrupt or not a fastvae vocabulary: {exc!r}") from None
        if version != FORMAT_VERSION:
            raise ValueError(f"{path}: key 'format_version' is {version!r}; this fastvae reads {FORMAT_VERSION}")
        if not isinstance(tokens, list):
            raise ValueError(f"{path} is corrupt: key 'tokens' must be a list, got {type(tokens).__name__}")
        try:
            return cls(tokens, tokenizer=tokenizer)
        except ValueError as exc:
            raise ValueError(f"{path} is corrupt: {exc}") from None

    def save_pretrained(self, directory: PathLike) -> None:
        """Write ``vocab.json`` and ``tokenizer_config.json`` (the tokenizer and the special tokens) into a
        model folder, next to the model's ``config.json``; :meth:`from_pretrained` reads them back."""
        self.save(os.path.join(directory, VOCAB_NAME))
        settings = {
            "format_version": FORMAT_VERSION,
            "tokenizer": self.tokenizer,
            "lowercase": self.tokenizer == "fastvae",
            "vocab_file": VOCAB_NAME,
            "pad_token": PAD,
            "unk_token": UNK,
            "bos_token": SOS,
            "eos_token": EOS,
        }
        atomic_write_json(os.path.join(directory, TOKENIZER_CONFIG_NAME), settings)

    @classmethod
    def from_pretrained(cls, directory: PathLike) -> "Vocab":
        """The vocabulary and tokenizer of a model folder written by :meth:`save_pretrained`.

        A folder without ``tokenizer_config.json`` gets the ``"fastvae"``
        tokenizer. Errors name the file (and the key) at fault.
        """
        directory = os.fspath(directory)
        vocab_path = os.path.join(directory, VOCAB_NAME)
        if not os.path.isfile(vocab_path):
            raise FileNotFoundError(f"{directory!r} holds no vocabulary: {VOCAB_NAME} is missing")
        settings_path = os.path.join(directory, TOKENIZER_CONFIG_NAME)
        tokenizer = "fastvae"
        if os.path.isfile(settings_path):
            settings = read_json_object(settings_path)
            tokenizer = settings.get("tokenizer", "fastvae")
            if tokenizer not in TOKENIZERS:
                raise ValueError(f"{settings_path}: key 'tokenizer' is {tokenizer!r}, not one of {sorted(TOKENIZERS)}")
        return cls._load(vocab_path, tokenizer=tokenizer)
