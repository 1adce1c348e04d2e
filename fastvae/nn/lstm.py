"""``fastvae.nn.LSTM``: a drop-in for ``torch.nn.LSTM`` on the fused op.

It *is* an ``nn.LSTM`` (same constructor, parameter names, shapes and
initialisation, so ``load_state_dict`` works both ways); only ``forward`` is
replaced by calls to :func:`fastvae.ops.lstm`, one per layer and direction.
"""

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from fastvae import ops
from fastvae.ops import _checks


class LSTM(torch.nn.LSTM):
    """Multi-layer, optionally bidirectional LSTM with fused kernels.

    Args (as ``torch.nn.LSTM``): ``input_size, hidden_size, num_layers=1,
    bias=True, batch_first=False, dropout=0.0, bidirectional=False``
    (``proj_size`` is not supported).

    ``forward(input, hx=None, lengths=None)``:
        input: ``[T, B, E]`` (``[B, T, E]`` if batch_first), ``[T, E]``
            unbatched, or a ``PackedSequence`` (then the output is one too).
        hx: optional ``(h_0, c_0)``, each ``[num_layers * D, B, H]``.
        lengths: optional ``[B]`` integer lengths in ``1..T`` for a padded
            batch: each sequence stops at its length, outputs past it are
            zero and ``h_n, c_n`` hold each sequence's last real step --
            the same numbers ``nn.LSTM`` gives on the packed batch.
    Returns ``output, (h_n, c_n)`` like ``nn.LSTM``.
    """

    def __init__(self, *args, **kwargs):
        if kwargs.get("proj_size", 0) or (len(args) > 7 and args[7]):
            raise ValueError("fastvae.nn.LSTM does not support proj_size > 0")
        super().__init__(*args, **kwargs)

    def forward(self, input, hx=None, lengths=None):  # noqa: A002  (nn.LSTM's name)
        if isinstance(input, PackedSequence):
            if lengths is not None:
                raise ValueError("lengths must be None when input is a PackedSequence (it carries its own)")
            padded, lengths = pad_packed_sequence(input)
            output, state = self._run(padded, hx, lengths, unbatched=False)
            return _pack_like(output, input), state
        _checks.tensor("input", input, ndim=(2, 3))
        unbatched = input.dim() == 2
        if unbatched:
            x = input.unsqueeze(1)
        else:
            x = input.transpose(0, 1) if self.batch_first else input
        output, state = self._run(x, hx, lengths, unbatched)
        if unbatched:
            return output.squeeze(1), state
        return (output.transpose(0, 1) if self.batch_first else output), state

    def _initial_state(self, hx, x, unbatched):
        D = 2 if self.bidirectional else 1
        expected = (self.num_layers * D, x.shape[1], self.hidden_size)
        if hx is None:
            zeros = x.new_zeros(expected)
            return zeros, zeros
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise TypeError("hx must be a tuple (h_0, c_0)")
        h0, c0 = hx
        for name, t in (("hx[0] (h_0)", h0), ("hx[1] (c_0)", c0)):
            _checks.tensor(name, t, ndim=2 if unbatched else 3)
            _checks.shape(name, t.unsqueeze(1) if unbatched else t, expected)
            _checks.same_device("input", x, **{name: t})
        if unbatched:
            return h0.unsqueeze(1), c0.unsqueeze(1)
        return h0, c0

    def _run(self, x, hx, lengths, unbatched):
        """x: ``[T, B, E]`` time-major. Returns ``y [T, B, D*H]`` and the final state."""
        if x.shape[-1] != self.input_size:
            raise ValueError(f"input must have {self.input_size} features (input_size), got {x.shape[-1]}")
        if not x.is_floating_point():
            raise TypeError(f"input must be a floating-point tensor, got dtype {x.dtype}")
        weight = self.weight_ih_l0
        _checks.same_device("weights", weight, input=x)
        h0, c0 = self._initial_state(hx, x, unbatched)
        if lengths is not None:
            lengths = _checks.lengths(lengths, x.shape[1], x.shape[0])
        D = 2 if self.bidirectional else 1
        h_n, c_n = [], []
        layer_input = x
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(D):
                suffix = "_reverse" if direction else ""
                params = [getattr(self, f"{kind}_l{layer}{suffix}") for kind in ("weight_ih", "weight_hh")]
                if self.bias:
                    params += [getattr(self, f"{kind}_l{layer}{suffix}") for kind in ("bias_ih", "bias_hh")]
                else:
                    params += [None, None]
                k = layer * D + direction
                y, h, c = ops.lstm(layer_input, h0[k], c0[k], *params, lengths=lengths, reverse=bool(direction))
                outputs.append(y)
                h_n.append(h)
                c_n.append(c)
            layer_input = outputs[0] if D == 1 else torch.cat(outputs, dim=2)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, training=True)
        h_n, c_n = torch.stack(h_n), torch.stack(c_n)
        if unbatched:
            h_n, c_n = h_n.squeeze(1), c_n.squeeze(1)
        return layer_input, (h_n, c_n)


def _pack_like(output, packed):
    """Pack ``output [T, B, H]`` (original batch order) with ``packed``'s layout."""
    batch_sizes = packed.batch_sizes
    B = output.shape[1]
    order = packed.sorted_indices if packed.sorted_indices is not None else torch.arange(B)
    steps = torch.repeat_interleave(torch.arange(len(batch_sizes)), batch_sizes)
    starts = torch.cumsum(batch_sizes, 0) - batch_sizes
    ranks = torch.arange(int(batch_sizes.sum())) - torch.repeat_interleave(starts, batch_sizes)
    rows = order.cpu()[ranks]
    data = output[steps.to(output.device), rows.to(output.device)]
    return PackedSequence(data, batch_sizes, packed.sorted_indices, packed.unsorted_indices)
