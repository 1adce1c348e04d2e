"""The vocabulary projection + cross-entropy of a decoder, on either backend (:mod:`fastvae.nn.backend`)."""

import math

import torch
import torch.nn.functional as F

from fastvae import ops
from fastvae.nn.backend import backend_op, check_backend


class VocabProjection(torch.nn.Module):
    """``weight [V, H]``, ``bias [V]``: decoder states to vocabulary scores.

    ``loss(hidden [N, H], target [N], reduction)`` is
    ``fastvae.ops.linear_cross_entropy`` (fused: the ``[N, V]`` logits are
    never materialised in training) or its ``_ref`` twin; targets equal to
    ``ignore_index`` (-100) are skipped.
    """

    def __init__(self, hidden_size: int, vocab_size: int, backend: str = "fused") -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(hidden_size)
        self.weight = torch.nn.Parameter(torch.empty(vocab_size, hidden_size).uniform_(-bound, bound))
        self.bias = torch.nn.Parameter(torch.empty(vocab_size).uniform_(-bound, bound))
        self.backend = check_backend(backend)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self.weight, self.bias)

    def greedy(self, hidden: torch.Tensor) -> torch.Tensor:
        """The best word per row of ``hidden [R, H]`` (fused: the scores are never materialised)."""
        if self.backend == "fused":
            return ops.linear_argmax(hidden, self.weight, self.bias)[0]
        return self.logits(hidden).argmax(dim=-1)

    def loss(self, hidden: torch.Tensor, target: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
        loss = backend_op(self.backend, "linear_cross_entropy")
        return loss(hidden, self.weight, self.bias, target, ignore_index=-100, reduction=reduction)
