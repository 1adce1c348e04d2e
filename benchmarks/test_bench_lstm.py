"""The fused LSTM against ``torch.nn.LSTM`` / ``nn.LSTMCell`` and the ``lstm_ref`` loop.

Shapes (float32, CPU, one thread):

* DailyDialog -- the CVAE/SLCVAE encoders: B=64, T=20, E=H=32, 2 layers.
* Sentence-VAE -- B=32, T=40, E=300, H=256, 1 layer.
* decoding step -- one ``lstm_cell`` of generation: B=640, E=H=256.

``nn.LSTM`` runs unpacked (oneDNN's path on CPU: the strongest plain
PyTorch LSTM); the fused side is ``fastvae.nn.LSTM``, one ``lstm_stack`` op
(one autograd node) for the whole stack.

Targets (speed-up over the baseline, reported in the table, not asserted):
fwd+bwd vs nn.LSTM >= 1.5x at the DailyDialog size (per-call overhead
dominates) and >= 1.2x at the Sentence-VAE size, forward alone >= 1x at both;
decoding step vs nn.LSTMCell >= 1.5x.

The GEMM-bound rows (Sentence-VAE size, decoding step) also go to the FMA
limit table (``_limits.py``): each side's GFLOP/s against this core's FMA
peak, the same products run as bare ``torch.mm`` calls (``lstm_products``),
and the speed-up the peak allows over a baseline that runs near it.
"""

import pytest
import torch

import fastvae
from _limits import record_fma_limit
from fastvae.ops import lstm_cell, lstm_ref

SHAPES = {
    "DailyDialog": dict(B=64, T=20, E=32, H=32, layers=2),
    "Sentence-VAE": dict(B=32, T=40, E=300, H=256, layers=1),
}
CELL = dict(B=640, E=256, H=256)
FWD, FWD_BWD = "LSTM fwd (no grad)", "LSTM fwd+bwd"
TARGETS = {  # (case, shape, baseline) -> the speed-up we aim for
    (FWD_BWD, "DailyDialog", "nn.LSTM"): 1.5,
    (FWD_BWD, "Sentence-VAE", "nn.LSTM"): 1.2,
    (FWD, "DailyDialog", "nn.LSTM"): 1.0,
    (FWD, "Sentence-VAE", "nn.LSTM"): 1.0,
}
CELL_TARGET = 1.5
GEMM_BOUND = ("Sentence-VAE",)  # shapes whose time is the products' (DailyDialog's is per-call overhead)


def lstm_flops(T, B, E, H, layers, backward):
    """The products of a unidirectional stack: 2 * 4H * (E_l + H) per row and step, x3 with the backward
    (input, recurrent and weight gradients). Nominal, as the baseline runs them: with a zero h0 fastvae
    leaves out step 0's recurrent terms (1/T of them), so its rate here is the nominal count over its time."""
    per_row = sum(2 * 4 * H * ((E if layer == 0 else H) + H) for layer in range(layers))
    return T * B * per_row * (3 if backward else 1)


def lstm_products(T, B, E, H, layers, backward):
    """The products that ``lstm_flops`` counts, as ``(M, K, N, count)`` for ``_limits.mm_products``: per layer
    the input projection [T*B, E_l] @ [E_l, 4H] and T recurrent steps [B, H] @ [H, 4H]; with the backward
    the input and recurrent gradients (their transposes) and the two weight gradients [4H, T*B] @ [T*B, .]."""
    products = []
    for layer in range(layers):
        E_l = E if layer == 0 else H
        products += [(T * B, E_l, 4 * H, 1), (B, H, 4 * H, T)]
        if backward:
            products += [(T * B, 4 * H, E_l, 1), (B, 4 * H, H, T), (4 * H, T * B, E_l, 1), (4 * H, T * B, H, 1)]
    return products


class RefLSTM(torch.nn.Module):
    """The stacked unidirectional LSTM of ``lstm`` run on ``fastvae.ops.lstm_ref``."""

    def __init__(self, lstm):
        super().__init__()
        self.lstm = lstm

    def forward(self, x):
        m = self.lstm
        zeros = x.new_zeros(x.shape[1], m.hidden_size)
        h_n, c_n = [], []
        for layer in range(m.num_layers):
            weights = [getattr(m, f"{kind}_l{layer}") for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            x, h, c = lstm_ref(x, zeros, zeros, *weights)
            h_n.append(h)
            c_n.append(c)
        return x, (torch.stack(h_n), torch.stack(c_n))


def make_models(spec, baseline):
    """The fused ``fastvae.nn.LSTM`` and the baseline model, with the same weights."""
    torch.manual_seed(0)
    reference = torch.nn.LSTM(spec["E"], spec["H"], spec["layers"])
    fast = fastvae.nn.LSTM(spec["E"], spec["H"], spec["layers"])
    fast.load_state_dict(reference.state_dict())
    if baseline == "lstm_ref":
        return fast, RefLSTM(reference)
    return fast, reference


def forward_fn(model, x):
    model.eval()

    def fn():
        with torch.no_grad():
            y, (h_n, c_n) = model(x)
        return y, h_n, c_n

    return fn


def forward_backward_fn(model, x, grad_y):
    """One training step's LSTM work; returns the output and every gradient."""
    model.train()
    x = x.clone().requires_grad_()
    params = list(model.parameters())

    def fn():
        x.grad = None
        for p in params:
            p.grad = None
        y, _ = model(x)
        y.backward(grad_y)
        return (y.detach(), x.grad, *(p.grad for p in params))

    return fn


def shape_label(name, spec):
    return f"{name} B{spec['B']} T{spec['T']} E{spec['E']} H{spec['H']} L{spec['layers']}"


@pytest.mark.parametrize("baseline", ["nn.LSTM", "lstm_ref"])
@pytest.mark.parametrize("case", [FWD, FWD_BWD], ids=["fwd", "fwd+bwd"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_lstm(ratio_bench, timing_enabled, extra_table, shape, case, baseline):
    spec = SHAPES[shape]
    fast_model, base_model = make_models(spec, baseline)
    x = torch.randn(spec["T"], spec["B"], spec["E"])
    if case == FWD:
        fast, base = forward_fn(fast_model, x), forward_fn(base_model, x)
    else:
        grad_y = torch.randn(spec["T"], spec["B"], spec["H"])
        fast, base = forward_backward_fn(fast_model, x, grad_y), forward_backward_fn(base_model, x, grad_y)
    target = TARGETS.get((case, shape, baseline))
    ratio_bench(case, shape_label(shape, spec), baseline, fast, base, target)
    if timing_enabled and shape in GEMM_BOUND and baseline == "nn.LSTM":
        dims = (spec["T"], spec["B"], spec["E"], spec["H"], spec["layers"], case == FWD_BWD)
        record_fma_limit(extra_table, case, shape_label(shape, spec), baseline, lstm_flops(*dims), fast, base,
                         target, lstm_products(*dims))


PADDED = "LSTM fwd+bwd, padded batch"


def padded_batch(spec, seed=0):
    """x, lengths uniform in T/2..T (one sequence full: the models' batches), and an output gradient
    that is zero past each length (a loss that masks the padding, as the models' decoders use)."""
    g = torch.Generator().manual_seed(seed)
    T, B = spec["T"], spec["B"]
    lengths = torch.randint(T // 2, T + 1, (B,), generator=g)
    lengths[0] = T
    x = torch.randn(T, B, spec["E"], generator=g)
    mask = (torch.arange(T).unsqueeze(1) < lengths.unsqueeze(0)).unsqueeze(-1)
    return x, lengths, torch.randn(T, B, spec["H"], generator=g) * mask, mask


@pytest.mark.parametrize("shape", list(SHAPES))
def test_lstm_padded_batch(ratio_bench, shape):
    """A padded batch under a masked loss: ``nn.LSTM`` runs unpacked over every position (exact for
    such a loss: what the reference backend does), fastvae runs the lengths (its steps visit the
    running rows only). The outputs past each length differ by design (``nn.LSTM`` computes them,
    fastvae gives zeros), so the check compares the outputs within the lengths and every gradient."""
    spec = SHAPES[shape]
    fast_model, base_model = make_models(spec, "nn.LSTM")
    x, lengths, grad_y, mask = padded_batch(spec)
    fast_model.train()
    base_model.train()
    xs = [x.clone().requires_grad_() for _ in range(2)]

    def step(model, xg, **kw):
        params = list(model.parameters())

        def fn():
            xg.grad = None
            for p in params:
                p.grad = None
            y, _ = model(xg, **kw)
            y.backward(grad_y)
            return ((y * mask).detach(), xg.grad, *(p.grad for p in params))

        return fn

    ratio_bench(PADDED, shape_label(shape, spec) + " lengths T/2..T", "nn.LSTM (unpacked, masked loss)",
                step(fast_model, xs[0], lengths=lengths), step(base_model, xs[1]))


def test_decoding_step(ratio_bench, timing_enabled, extra_table):
    torch.manual_seed(0)
    B, E, H = CELL["B"], CELL["E"], CELL["H"]
    cell = torch.nn.LSTMCell(E, H)
    x, h, c = torch.randn(B, E), torch.randn(B, H), torch.randn(B, H)
    weights = (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)

    def fast():
        with torch.no_grad():
            return lstm_cell(x, h, c, *weights)

    def base():
        with torch.no_grad():
            return cell(x, (h, c))

    case, shape = "decoding step (no grad)", f"B{B} E{E} H{H}"
    ratio_bench(case, shape, "nn.LSTMCell", fast, base, CELL_TARGET)
    if timing_enabled:
        record_fma_limit(extra_table, case, shape, "nn.LSTMCell", lstm_flops(1, B, E, H, 1, False), fast, base,
                         CELL_TARGET, lstm_products(1, B, E, H, 1, False))
