"""Token embedding with word dropout (Bowman et al. 2016) and embedding dropout."""

from typing import Iterable

import torch
import torch.nn.functional as F


class WordEmbedding(torch.nn.Module):
    """``tokens [B, T]`` int64 -> ``[B, T, dim]``.

    Args:
        vocab_size, dim: table size.
        pad_id: padding id (its row is zero and gets no gradient).
        unk_id: the id that word dropout substitutes.
        keep_ids: ids word dropout never replaces (``<sos>``, ``<pad>``, ...).
        word_dropout: probability of replacing a decoder input token by
            ``<unk>`` in training (``forward(..., word_dropout=True)``).
        dropout: dropout on the embedded vectors in training.
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        pad_id: int,
        unk_id: int,
        keep_ids: Iterable[int] = (),
        word_dropout: float = 0.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        for name, p in (("word_dropout", word_dropout), ("dropout", dropout)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {p}")
        self.weight = torch.nn.Parameter(torch.randn(vocab_size, dim))
        with torch.no_grad():
            self.weight[pad_id].zero_()
        self.vocab_size = vocab_size
        self.pad_id = pad_id
        self.unk_id = unk_id
        self.keep_ids = tuple(sorted({pad_id, *keep_ids}))
        self.word_dropout = word_dropout
        self.dropout = dropout

    def drop_words(self, tokens: torch.Tensor) -> torch.Tensor:
        """Replace tokens by ``<unk>`` with probability ``word_dropout`` (never ``keep_ids``)."""
        if not self.training or self.word_dropout == 0.0:
            return tokens
        drop = torch.rand(tokens.shape, device=tokens.device) < self.word_dropout
        for keep in self.keep_ids:
            drop &= tokens != keep
        return tokens.masked_fill(drop, self.unk_id)

    def forward(self, tokens: torch.Tensor, word_dropout: bool = False) -> torch.Tensor:
        if word_dropout:
            tokens = self.drop_words(tokens)
        out = F.embedding(tokens, self.weight, padding_idx=self.pad_id)
        return F.dropout(out, self.dropout, self.training) if self.dropout else out
