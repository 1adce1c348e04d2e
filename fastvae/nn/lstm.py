"""``fastvae.nn.LSTM``: a drop-in for ``torch.nn.LSTM`` on the fused op.

Same constructor, parameter names, shapes and initialisation as
``torch.nn.LSTM`` (so ``load_state_dict`` works both ways); ``forward`` calls
:func:`fastvae.ops.lstm` once per layer and direction. It is a plain
``nn.Module`` rather than an ``nn.LSTM`` subclass because ``torch.compile``
refuses to trace ``nn.RNNBase`` modules (without a global Dynamo flag).
"""

import math
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from fastvae import ops
from fastvae.ops import _checks

Tensor = torch.Tensor
State = Tuple[Tensor, Tensor]  # (h, c), each [num_layers * D, B, H] (or [num_layers * D, H] unbatched)


class LSTM(torch.nn.Module):
    """Multi-layer, optionally bidirectional LSTM with fused kernels.

    Args (as ``torch.nn.LSTM``): ``input_size, hidden_size, num_layers=1,
    bias=True, batch_first=False, dropout=0.0, bidirectional=False``, and
    ``device``/``dtype`` for the parameters (``proj_size`` is not supported).
    Parameters: ``weight_ih_l{k}[_reverse]`` ``[4H, E_k]``,
    ``weight_hh_l{k}[_reverse]`` ``[4H, H]``, ``bias_ih_l{k}[_reverse]`` and
    ``bias_hh_l{k}[_reverse]`` ``[4H]``, gates in the order i, f, g, o.

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

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: Optional[Union[torch.device, str]] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        if proj_size:
            raise ValueError("fastvae.nn.LSTM does not support proj_size > 0")
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0 <= dropout <= 1:
            raise ValueError(f"dropout must be a number in [0, 1], got {dropout!r}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = 0
        factory = {"device": device, "dtype": dtype}
        directions = 2 if bidirectional else 1
        gates = 4 * hidden_size
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size * directions
            for direction in range(directions):
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                self.register_parameter(
                    "weight_ih" + suffix, torch.nn.Parameter(torch.empty(gates, layer_input, **factory))
                )
                self.register_parameter(
                    "weight_hh" + suffix, torch.nn.Parameter(torch.empty(gates, hidden_size, **factory))
                )
                if bias:
                    self.register_parameter("bias_ih" + suffix, torch.nn.Parameter(torch.empty(gates, **factory)))
                    self.register_parameter("bias_hh" + suffix, torch.nn.Parameter(torch.empty(gates, **factory)))
        # nn.LSTM's flat order of parameter names (what the stack op takes, in order)
        self._flat_names = [
            f"{kind}_l{layer}" + ("_reverse" if direction else "")
            for layer in range(num_layers)
            for direction in range(directions)
            for kind in (("weight_ih", "weight_hh", "bias_ih", "bias_hh") if bias else ("weight_ih", "weight_hh"))
        ]
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.LSTM's initialisation: every parameter uniform in +-1/sqrt(hidden_size)."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            torch.nn.init.uniform_(weight, -bound, bound)

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            text += f", num_layers={self.num_layers}"
        if not self.bias:
            text += ", bias=False"
        if self.batch_first:
            text += ", batch_first=True"
        if self.dropout:
            text += f", dropout={self.dropout}"
        if self.bidirectional:
            text += ", bidirectional=True"
        return text

    def forward(  # noqa: A002  (input: nn.LSTM's name)
        self,
        input: Union[Tensor, PackedSequence],
        hx: Optional[State] = None,
        lengths: Optional[Union[Tensor, Sequence[int]]] = None,
    ) -> Tuple[Union[Tensor, PackedSequence], State]:
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

    def _layer_parameters(self, layer, direction):
        """``(w_ih, w_hh, b_ih, b_hh)`` of one layer and direction (biases None without bias)."""
        suffix = f"_l{layer}" + ("_reverse" if direction else "")
        weights = [getattr(self, "weight_ih" + suffix), getattr(self, "weight_hh" + suffix)]
        if self.bias:
            return (*weights, getattr(self, "bias_ih" + suffix), getattr(self, "bias_hh" + suffix))
        return (*weights, None, None)

    @property
    def _directions(self):
        return 2 if self.bidirectional else 1

    def _run_with_dropout(self, x, h0, c0, lengths):
        """Layer by layer, with dropout on the output of every layer but the last (training)."""
        D = self._directions
        h_n, c_n = [], []
        layer_input = x
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(D):
                params = self._layer_parameters(layer, direction)
                k = layer * D + direction
                y, h, c = ops.lstm(layer_input, h0[k], c0[k], *params, lengths=lengths, reverse=bool(direction))
                outputs.append(y)
                h_n.append(h)
                c_n.append(c)
            layer_input = outputs[0] if D == 1 else torch.cat(outputs, dim=2)
            if layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, training=True)
        return layer_input, torch.stack(h_n), torch.stack(c_n)

    def _initial_state(self, hx, x, unbatched):
        expected = (self.num_layers * self._directions, x.shape[1], self.hidden_size)
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
        """x: ``[T, B, E]`` time-major. Returns ``y [T, B, D*H]`` and the final state.

        Plain attribute reads and compares on the way to the fused op: at the
        DailyDialog size (B64 T20 E=H=32, 2 layers) the module's Python took
        ~30 us of a ~1.4 ms training call, and its eight ``Module.__getattr__``
        lookups and keyword-dict helper calls 0.4-1.3% of the call (A/B runs);
        ``ops.lstm_stack`` checks the parameters' kind, the C++ op their shapes.
        """
        if x.shape[-1] != self.input_size:
            raise ValueError(f"input must have {self.input_size} features (input_size), got {x.shape[-1]}")
        if not x.is_floating_point():
            raise TypeError(f"input must be a floating-point tensor, got dtype {x.dtype}")
        parameters = self._parameters
        params = [parameters[name] for name in self._flat_names]
        if params[0].device != x.device:
            _checks.same_device("weights", params[0], input=x)
        h0, c0 = self._initial_state(hx, x, unbatched)
        if lengths is not None:
            lengths = _checks.lengths(lengths, x.shape[1], x.shape[0])
        if self.dropout > 0 and self.training and self.num_layers > 1:
            layer_input, h_n, c_n = self._run_with_dropout(x, h0, c0, lengths)
        else:  # the whole stack in one fused op
            layer_input, h_n, c_n = ops.lstm_stack(x, h0, c0, params, lengths, self.bidirectional)
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
