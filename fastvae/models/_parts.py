"""Building blocks shared by the models: encoders, the conditioned decoder, Gaussian heads.

They hold parameters and call fastvae.nn / fastvae.ops; the backend
("fused" or "reference") picks the LSTM and loss implementation, with the
same parameter names on both.
"""

import torch

from fastvae import ops
from fastvae.nn import VocabProjection
from fastvae.nn.rnn import last_hidden, lstm_outputs, make_lstm


class UtteranceEncoder(torch.nn.Module):
    """Embedded tokens ``[B, T, E]`` + lengths -> the last layer's final state ``[B, D*H]``."""

    def __init__(self, embed_dim, hidden_size, num_layers, bidirectional, backend, dropout=0.0):
        super().__init__()
        self.lstm = make_lstm(backend, embed_dim, hidden_size, num_layers, bidirectional, dropout)
        self.directions = 2 if bidirectional else 1
        self.output_size = hidden_size * self.directions

    def forward(self, embedded, lengths):
        return last_hidden(self.lstm, embedded, lengths)


class GaussianNet(torch.nn.Module):
    """``[B, in_size]`` -> ``(mu, logvar)``, each ``[B, latent_size]``.

    ``hidden_size=None``: one linear map (the recognition net q(z|x,c));
    otherwise an MLP with a tanh hidden layer (the prior net p(z|c)).
    """

    def __init__(self, in_size, latent_size, hidden_size=None):
        super().__init__()
        if hidden_size is None:
            self.hidden = None
            self.out = torch.nn.Linear(in_size, 2 * latent_size)
        else:
            self.hidden = torch.nn.Linear(in_size, hidden_size)
            self.out = torch.nn.Linear(hidden_size, 2 * latent_size)

    def forward(self, x):
        if self.hidden is not None:
            x = torch.tanh(self.hidden(x))
        mu, logvar = self.out(x).chunk(2, dim=-1)
        return mu, logvar


class ConditionalDecoder(torch.nn.Module):
    """LSTM decoder whose initial state is a linear map of its conditioning vector.

    ``cond [B, cond_size]`` -> ``(h0, c0)`` each ``[num_layers, B, H]``; then
    teacher-forced hidden states over embedded inputs, and the NLL of the
    targets through the vocabulary projection.
    """

    def __init__(self, embed_dim, hidden_size, num_layers, cond_size, vocab_size, backend, dropout=0.0):
        super().__init__()
        self.backend = backend
        self.num_layers = num_layers
        self.hidden_size = hidden_size
        self.lstm = make_lstm(backend, embed_dim, hidden_size, num_layers, False, dropout)
        self.init_state = torch.nn.Linear(cond_size, 2 * num_layers * hidden_size)
        self.out = VocabProjection(hidden_size, vocab_size, backend)

    def initial_state(self, cond):
        B = cond.shape[0]
        state = self.init_state(cond).view(B, 2, self.num_layers, self.hidden_size).permute(1, 2, 0, 3)
        return state[0].contiguous(), state[1].contiguous()

    def nll(self, embedded_inputs, targets, lengths, cond, reduction="sum"):
        """Teacher-forced NLL of ``targets [B, T]`` (positions past ``lengths`` ignored).

        reduction: "sum" (a scalar over all tokens) or "none" (per sentence, ``[B]``).
        """
        # past each length y is whatever the backend leaves there (fused: 0; reference: the LSTM
        # run over the padding, unpacked): the loss ignores those positions
        y = lstm_outputs(self.lstm, embedded_inputs, lengths, self.initial_state(cond))
        B, T = targets.shape
        valid = torch.arange(T, device=targets.device).unsqueeze(0) < lengths.to(targets.device).unsqueeze(1)
        flat_targets = targets.masked_fill(~valid, -100).reshape(-1)
        nll = self.out.loss(y.reshape(B * T, -1), flat_targets, reduction="sum" if reduction == "sum" else "none")
        return nll if reduction == "sum" else nll.view(B, T).sum(1)

    def layer_parameters(self, layer):
        lstm = self.lstm
        return (
            getattr(lstm, f"weight_ih_l{layer}"),
            getattr(lstm, f"weight_hh_l{layer}"),
            getattr(lstm, f"bias_ih_l{layer}"),
            getattr(lstm, f"bias_hh_l{layer}"),
        )

    def step(self, embedded, state):
        """One decoding step: ``embedded [R, E]``, state ``(h, c)`` each ``[L, R, H]``.

        Returns the top layer's output ``[R, H]`` and the new state. Fused:
        the single-step op per layer; reference: ``nn.LSTM`` on a length-1 sequence.
        """
        h, c = state
        if self.backend == "reference":
            y, (h, c) = self.lstm(embedded.unsqueeze(1), (h, c))
            return y[:, 0], (h, c)
        inp, hs, cs = embedded, [], []
        for layer in range(self.num_layers):
            h_l, c_l = ops.lstm_cell(inp, h[layer], c[layer], *self.layer_parameters(layer))
            hs.append(h_l)
            cs.append(c_l)
            inp = h_l
        return inp, (torch.stack(hs), torch.stack(cs))
