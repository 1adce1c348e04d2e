"""Running an LSTM over a padded, batch-first batch on either backend.

``backend="fused"`` uses :class:`fastvae.nn.LSTM` (lengths handled inside the
fused op); ``backend="reference"`` uses ``torch.nn.LSTM`` on a
``PackedSequence`` -- the plain-PyTorch twin with the same parameters.
"""

import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from fastvae.nn.lstm import LSTM

BACKENDS = ("fused", "reference")


def check_backend(backend):
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def make_lstm(backend, input_size, hidden_size, num_layers=1, bidirectional=False, dropout=0.0):
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


def run_lstm(lstm, x, lengths=None, hx=None):
    """``x [B, T, E]`` with ``lengths [B]`` (CPU int64, 1..T) -> ``(y [B, T, D*H], (h_n, c_n))``.

    ``y`` is zero past each length and ``h_n, c_n`` hold each sequence's last
    real step, for both backends.
    """
    if isinstance(lstm, LSTM) or lengths is None:
        return lstm(x, hx, lengths=lengths) if isinstance(lstm, LSTM) else lstm(x, hx)
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    out, state = lstm(packed, hx)
    y, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return y, state
