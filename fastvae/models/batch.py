"""The batch every model takes: padded, batch-first token ids of the target and (conditional models) the context."""

from dataclasses import dataclass
from typing import Optional, Union

import torch

Device = Union[str, torch.device]


@dataclass
class Batch:
    """A padded, batch-first batch of token ids (int64).

    target: ``[B, T]`` the sentence to generate, ending with ``<eos>``, padded
        with ``<pad>`` (no ``<sos>``: the decoder adds it).
    target_lengths: ``[B]`` lengths including ``<eos>``, each in ``1..T``.
    context, context_lengths: the same for the conditioning sequence
        (conditional models only; a dialogue context is its utterances joined
        into one sequence).
    """

    target: torch.Tensor
    target_lengths: torch.Tensor
    context: Optional[torch.Tensor] = None
    context_lengths: Optional[torch.Tensor] = None

    def to(self, device: Device) -> "Batch":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Batch(move(self.target), move(self.target_lengths), move(self.context), move(self.context_lengths))
