"""Running an LSTM over a padded, batch-first batch on either backend (:mod:`fastvae.nn.backend`).

``backend="fused"`` uses :class:`fastvae.nn.LSTM` (lengths handled inside the
fused op); ``backend="reference"`` uses ``torch.nn.LSTM`` -- the plain-PyTorch
twin with the same parameters -- the way a careful user runs it on a CPU:
``nn.LSTM`` reaches oneDNN only with a plain (unpacked) tensor, a
``PackedSequence`` goes to ATen's per-step loop. So the reference backend
packs only where the padding would change a result it returns:

* :func:`lstm_outputs` (a decoder whose loss masks the padding) and
  :func:`last_hidden` of a unidirectional LSTM (a gather at each sequence's
  last real step) run the padded batch unpacked: a unidirectional LSTM's
  output at step t depends on the steps up to t only.
* a bidirectional LSTM packs (its backward direction must start at each
  sequence's own last step), and so does :func:`run_lstm` for batches of
  unequal lengths (it returns every layer's ``h_n, c_n`` at the last real step).
"""

from typing import Optional, Sequence, Tuple, Union

import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from fastvae.nn.backend import check_backend
from fastvae.nn.lstm import LSTM
from fastvae.ops import _checks

Tensor = torch.Tensor
AnyLSTM = Union[LSTM, torch.nn.LSTM]  # fastvae.nn.LSTM (fused backend) or torch.nn.LSTM (reference)
Lengths = Union[Tensor, Sequence[int]]
State = Tuple[Tensor, Tensor]


def make_lstm(
    backend: str,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    bidirectional: bool = False,
    dropout: float = 0.0,
) -> AnyLSTM:
    """A batch-first LSTM of the backend; both share parameter names and shapes."""
    cls = LSTM if check_backend(backend) == "fused" else torch.nn.LSTM
    return cls(
        input_size,
        hidden_size,
        num_layers=num_layers,
        bidirectional=bidirectional,
        dropout=dropout if num_layers > 1 else 0.0,
        batch_first=True,
    )


def run_lstm(
    lstm: AnyLSTM, x: Tensor, lengths: Optional[Lengths] = None, hx: Optional[State] = None
) -> Tuple[Tensor, State]:
    """``x [B, T, E]`` with ``lengths [B]`` (1..T) -> ``(y [B, T, D*H], (h_n, c_n))``.

    ``y`` is zero past each length and ``h_n, c_n`` (every layer) hold each
    sequence's last real step, for both backends. The reference backend packs
    the batch unless every sequence is ``T`` long.
    """
    if isinstance(lstm, LSTM):
        return lstm(x, hx, lengths=lengths)
    if lengths is None:
        return lstm(x, hx)
    lengths = _checks.lengths(lengths, x.shape[0], x.shape[1])
    if _all_full(lengths, x.shape[1]):
        return lstm(x, hx)
    return _run_packed(lstm, x, lengths, hx)


def lstm_outputs(lstm: AnyLSTM, x: Tensor, lengths: Optional[Lengths] = None, hx: Optional[State] = None) -> Tensor:
    """``x [B, T, E]`` with ``lengths [B]`` (1..T) -> the top layer's outputs ``y [B, T, D*H]``.

    Each sequence's outputs up to its length are those of :func:`run_lstm`.
    Past it they are for a masked loss to ignore: zero on the fused backend;
    on the reference backend (unidirectional) the LSTM's run over the padding,
    which costs less there than packing (see the module's docstring).
    """
    if isinstance(lstm, LSTM):
        return lstm(x, hx, lengths=lengths)[0]
    if lengths is None or not lstm.bidirectional:
        if lengths is not None:
            _checks.lengths(lengths, x.shape[0], x.shape[1])
        return lstm(x, hx)[0]
    return run_lstm(lstm, x, lengths, hx)[0]


def last_hidden(lstm: AnyLSTM, x: Tensor, lengths: Optional[Lengths] = None) -> Tensor:
    """``x [B, T, E]`` with ``lengths [B]`` (1..T) -> ``[B, D*H]``: the top layer's hidden
    state after each sequence's last real step (both directions side by side, forward first).

    The same numbers as the top layer of :func:`run_lstm`'s ``h_n``; a
    unidirectional reference LSTM runs unpacked and gathers its output at
    step ``length - 1``.
    """
    B = x.shape[0]
    if isinstance(lstm, LSTM) or lstm.bidirectional:
        _, (h_n, _) = run_lstm(lstm, x, lengths)
        directions = 2 if lstm.bidirectional else 1
        return h_n[-directions:].transpose(0, 1).reshape(B, directions * lstm.hidden_size)
    y, _ = lstm(x)
    if lengths is None:
        return y[:, -1]
    last = _checks.lengths(lengths, B, x.shape[1]) - 1
    return y[torch.arange(B, device=y.device), last.to(y.device)]


def _all_full(lengths, steps):
    """Every sequence fills the batch (not asked while torch.compile traces: a data-dependent branch)."""
    return not torch.compiler.is_compiling() and bool((lengths == steps).all())


def _run_packed(lstm, x, lengths, hx):
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, state = lstm(packed, hx)
    y, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return y, state
