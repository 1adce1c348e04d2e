"""Tests of ``fastvae.nn.LSTM`` against ``torch.nn.LSTM`` with the same weights, and of the
padded-batch helpers of ``fastvae.nn.rnn`` on both backends."""

import subprocess
import sys

import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

import fastvae
from fastvae.nn import LSTM
from fastvae.nn import rnn
from fastvae.ops.lstm import KERNELS

ATOL = RTOL = 1e-5
GRAD_ATOL = GRAD_RTOL = 1e-4

T, B, E, H = 7, 5, 6, 8
MIXED = [7, 1, 4, 7, 2]  # unsorted, includes 1 and T


def twins(num_layers=1, bidirectional=False, batch_first=False, bias=True, dropout=0.0, dtype=torch.float32):
    """(fastvae.nn.LSTM, torch.nn.LSTM) with identical parameters."""
    kwargs = dict(
        num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first, bias=bias, dropout=dropout
    )
    ours = LSTM(E, H, **kwargs).to(dtype)
    ref = torch.nn.LSTM(E, H, **kwargs).to(dtype)
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def run_padded(module, x, hx, lengths):
    """Module on a padded batch. torch.nn.LSTM gets a PackedSequence when lengths are given."""
    if lengths is None or type(module) is not torch.nn.LSTM:
        out, state = module(x, hx) if lengths is None else module(x, hx, lengths=lengths)
        return out, state
    bf = module.batch_first
    packed = pack_padded_sequence(x, torch.tensor(lengths), batch_first=bf, enforce_sorted=False)
    out, state = module(packed, hx)
    out, _ = pad_packed_sequence(out, batch_first=bf, total_length=x.shape[1 if bf else 0])
    return out, state


def outputs_and_grads(module, x, hx, lengths, upstream):
    """Forward, backward of a fixed random projection; returns outputs and the grads of input, hx and parameters."""
    module.zero_grad()
    x = x.detach().clone().requires_grad_()
    hx = None if hx is None else tuple(t.detach().clone().requires_grad_() for t in hx)
    out, (h_n, c_n) = run_padded(module, x, hx, lengths)
    gy, gh, gc = upstream
    torch.autograd.backward([out, h_n, c_n], [gy, gh, gc])
    grads = {"input": x.grad}
    if hx is not None:
        grads.update(h_0=hx[0].grad, c_0=hx[1].grad)
    grads.update({name: p.grad for name, p in module.named_parameters()})
    return (out.detach(), h_n.detach(), c_n.detach()), grads


def assert_same(ours, ref, x, hx=None, lengths=None):
    D = 2 if ref.bidirectional else 1
    T_, B_ = (x.shape[1], x.shape[0]) if ref.batch_first else (x.shape[0], x.shape[1])
    out_shape = (B_, T_, D * H) if ref.batch_first else (T_, B_, D * H)
    upstream = (
        torch.randn(out_shape, dtype=x.dtype),
        torch.randn(ref.num_layers * D, B_, H, dtype=x.dtype),
        torch.randn(ref.num_layers * D, B_, H, dtype=x.dtype),
    )
    out, grads = outputs_and_grads(ours, x, hx, lengths, upstream)
    out_ref, grads_ref = outputs_and_grads(ref, x, hx, lengths, upstream)
    for name, a, e in zip(("output", "h_n", "c_n"), out, out_ref):
        assert a.shape == e.shape, name
        torch.testing.assert_close(a, e, rtol=RTOL, atol=ATOL, msg=lambda m, n=name: f"{n}: {m}")
    assert grads.keys() == grads_ref.keys()
    for name in grads_ref:
        assert grads[name] is not None, f"no gradient for {name}"
        torch.testing.assert_close(
            grads[name], grads_ref[name], rtol=GRAD_RTOL, atol=GRAD_ATOL, msg=lambda m, n=name: f"d{n}: {m}"
        )


CONFIGS = [
    dict(num_layers=1),
    dict(num_layers=2),
    dict(num_layers=1, bidirectional=True),
    dict(num_layers=2, bidirectional=True),
    dict(num_layers=2, bidirectional=True, batch_first=True),
    dict(num_layers=1, batch_first=True, bias=False),
    dict(num_layers=2, bidirectional=True, bias=False),
]


def config_id(cfg):
    return "-".join(f"{k}={v}" for k, v in cfg.items())


@pytest.mark.parametrize("with_hx", [False, True], ids=["no-hx", "hx"])
@pytest.mark.parametrize("lengths", [None, MIXED], ids=["full", "mixed"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=config_id)
def test_matches_nn_lstm(cfg, lengths, with_hx):
    ours, ref = twins(**cfg)
    D = 2 if ref.bidirectional else 1
    x = torch.randn(B, T, E) if ref.batch_first else torch.randn(T, B, E)
    hx = (torch.randn(ref.num_layers * D, B, H), torch.randn(ref.num_layers * D, B, H)) if with_hx else None
    assert_same(ours, ref, x, hx, lengths)


def test_matches_nn_lstm_float64():
    ours, ref = twins(num_layers=2, bidirectional=True, dtype=torch.float64)
    x = torch.randn(T, B, E, dtype=torch.float64)
    out, (h, c) = ours(x, lengths=MIXED)
    out_ref, (h_ref, c_ref) = run_padded(ref, x, None, MIXED)
    for a, e in ((out, out_ref), (h, h_ref), (c, c_ref)):
        assert a.dtype == torch.float64
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10)


def test_weights_loaded_from_nn_lstm():
    """load_state_dict the other way round: torch.nn.LSTM -> fastvae.nn.LSTM."""
    ref = torch.nn.LSTM(E, H, num_layers=2, bidirectional=True)
    ours = LSTM(E, H, num_layers=2, bidirectional=True)
    ours.load_state_dict(ref.state_dict())
    assert_same(ours, ref, torch.randn(T, B, E), lengths=MIXED)


def test_state_dict_round_trip():
    ours = LSTM(E, H, num_layers=2, bidirectional=True, bias=False)
    ref = torch.nn.LSTM(E, H, num_layers=2, bidirectional=True, bias=False)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    for key, value in ref.state_dict().items():
        assert ours.state_dict()[key].shape == value.shape, key
    ref.load_state_dict(ours.state_dict())
    back = LSTM(E, H, num_layers=2, bidirectional=True, bias=False)
    back.load_state_dict(ref.state_dict())
    for key, value in ours.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key


def test_same_initialisation_as_nn_lstm():
    """Same seed, same parameters, in the same order: a true drop-in."""
    torch.manual_seed(3)
    ours = fastvae.nn.LSTM(E, H, num_layers=2, bidirectional=True)
    torch.manual_seed(3)
    ref = torch.nn.LSTM(E, H, num_layers=2, bidirectional=True)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]
    for (name, a), (_, b) in zip(ours.named_parameters(), ref.named_parameters()):
        assert torch.equal(a, b), name
    assert fastvae.LSTM is LSTM


def _count_fused_calls(module, *args, **kwargs):
    """How many times ``module(*args)`` dispatches each fastvae LSTM op."""
    from collections import Counter

    from torch.utils._python_dispatch import TorchDispatchMode

    calls = Counter()

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.namespace == "fastvae":
                calls[func.name()] += 1
            return func(*args, **(kwargs or {}))

    with Count():
        module(*args, **kwargs)
    return calls


def test_runs_the_fused_op():
    """Guards the comparisons above: the module must call the fused op, one call for the whole stack."""
    module = LSTM(E, H, num_layers=2, bidirectional=True)
    calls = _count_fused_calls(module, torch.randn(T, B, E), lengths=MIXED)
    assert calls == {"fastvae::lstm_stack_fwd": 1}  # parameters need gradients: the forward that saves
    with torch.no_grad():
        calls = _count_fused_calls(module, torch.randn(T, B, E), lengths=MIXED)
    assert calls == {"fastvae::lstm_stack": 1}


def test_dropout_between_layers_runs_layer_by_layer():
    """Dropout between layers (training) is not part of the stack op: one fused layer op per layer and direction."""
    module = LSTM(E, H, num_layers=2, bidirectional=True, dropout=0.5).train()
    calls = _count_fused_calls(module, torch.randn(T, B, E), lengths=MIXED)
    assert calls == {"fastvae::lstm_fwd": 4}
    module.eval()
    assert _count_fused_calls(module, torch.randn(T, B, E), lengths=MIXED) == {"fastvae::lstm_stack_fwd": 1}


def test_packed_sequence_in_packed_sequence_out():
    ours, ref = twins(num_layers=2, bidirectional=True)
    x = torch.randn(T, B, E)
    packed = pack_padded_sequence(x, torch.tensor(MIXED), enforce_sorted=False)
    hx = (torch.randn(4, B, H), torch.randn(4, B, H))
    out, (h, c) = ours(packed, hx)
    out_ref, (h_ref, c_ref) = ref(packed, hx)
    assert isinstance(out, PackedSequence)
    assert torch.equal(out.batch_sizes, out_ref.batch_sizes)
    assert torch.equal(out.sorted_indices, out_ref.sorted_indices)
    assert torch.equal(out.unsorted_indices, out_ref.unsorted_indices)
    for a, e in ((out.data, out_ref.data), (h, h_ref), (c, c_ref)):
        torch.testing.assert_close(a, e, rtol=RTOL, atol=ATOL)
    # gradients flow through the packed output
    g = torch.randn_like(out_ref.data)
    grads = torch.autograd.grad((out.data * g).sum(), list(ours.parameters()))
    grads_ref = torch.autograd.grad((out_ref.data * g).sum(), list(ref.parameters()))
    for a, e in zip(grads, grads_ref):
        torch.testing.assert_close(a, e, rtol=GRAD_RTOL, atol=GRAD_ATOL)


def test_sorted_packed_sequence():
    ours, ref = twins(bidirectional=True)
    x = torch.randn(T, 3, E)
    packed = pack_padded_sequence(x, torch.tensor([7, 4, 1]), enforce_sorted=True)
    out, (h, c) = ours(packed)
    out_ref, (h_ref, c_ref) = ref(packed)
    assert out.sorted_indices is None and out_ref.sorted_indices is None
    assert torch.equal(out.batch_sizes, out_ref.batch_sizes)
    for a, e in ((out.data, out_ref.data), (h, h_ref), (c, c_ref)):
        torch.testing.assert_close(a, e, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("with_hx", [False, True], ids=["no-hx", "hx"])
def test_unbatched_input(with_hx):
    ours, ref = twins(num_layers=2, bidirectional=True)
    x = torch.randn(T, E)
    hx = (torch.randn(4, H), torch.randn(4, H)) if with_hx else None
    out, (h, c) = ours(x, hx)
    out_ref, (h_ref, c_ref) = ref(x, hx)
    assert out.shape == (T, 2 * H) and h.shape == (4, H) and c.shape == (4, H)
    for a, e in ((out, out_ref), (h, h_ref), (c, c_ref)):
        torch.testing.assert_close(a, e, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("batch_first", [False, True])
def test_non_contiguous_input(batch_first):
    ours, ref = twins(num_layers=2, bidirectional=True, batch_first=batch_first)
    x = torch.randn(B, T, 2 * E)[..., ::2] if batch_first else torch.randn(T, B, 2 * E)[..., ::2]
    assert not x.is_contiguous()
    assert_same(ours, ref, x, lengths=MIXED)
    # a time-major tensor viewed batch-first (a transpose) as well
    x_t = torch.randn(T, B, E).transpose(0, 1) if batch_first else torch.randn(B, T, E).transpose(0, 1)
    assert_same(ours, ref, x_t)


def test_dropout_eval_matches_nn_lstm():
    ours, ref = twins(num_layers=3, dropout=0.5)
    ours.eval()
    ref.eval()
    x = torch.randn(T, B, E)
    out, (h, c) = ours(x, lengths=MIXED)
    out_ref, (h_ref, c_ref) = run_padded(ref, x, None, MIXED)
    for a, e in ((out, out_ref), (h, h_ref), (c, c_ref)):
        torch.testing.assert_close(a, e, rtol=RTOL, atol=ATOL)


def test_dropout_train_is_applied():
    ours, _ = twins(num_layers=2, dropout=0.5)
    x = torch.randn(T, B, E)
    ours.eval()
    out_eval, (h_eval, _) = ours(x)
    ours.train()
    out_train, (h_train, c_train) = ours(x)
    assert out_train.shape == out_eval.shape and h_train.shape == h_eval.shape
    assert not torch.allclose(out_train, out_eval, atol=1e-3)
    # the first layer sees no dropout: its final state is unchanged
    torch.testing.assert_close(h_train[0], h_eval[0], rtol=RTOL, atol=ATOL)
    out_train.sum().backward()
    assert all(p.grad is not None for p in ours.parameters())


def test_single_layer_dropout_has_no_effect_in_train_mode():
    with pytest.warns(UserWarning, match="dropout"):
        ours, ref = twins(num_layers=1, dropout=0.5)
    ours.train()
    ref.train()
    assert_same(ours, ref, torch.randn(T, B, E))


# ---------------------------------------------------------------- bad input


@pytest.fixture
def module():
    return LSTM(E, H, num_layers=2, bidirectional=True)


def test_bad_rank(module):
    with pytest.raises(ValueError, match="input must be 2-D or 3-D"):
        module(torch.randn(T, B, E, 1))
    with pytest.raises(ValueError, match="input must be 2-D or 3-D"):
        module(torch.randn(E))


def test_bad_feature_size(module):
    with pytest.raises(ValueError, match="input_size"):
        module(torch.randn(T, B, E + 1))
    with pytest.raises(ValueError, match="input_size"):
        module(torch.randn(T, E - 1))


def test_integer_input(module):
    with pytest.raises(TypeError, match="input must be a floating-point"):
        module(torch.ones(T, B, E, dtype=torch.int64))


def test_bad_hx(module):
    x = torch.randn(T, B, E)
    with pytest.raises(ValueError, match="hx\\[0\\]"):
        module(x, (torch.randn(2, B, H), torch.randn(4, B, H)))
    with pytest.raises(ValueError, match="hx\\[1\\]"):
        module(x, (torch.randn(4, B, H), torch.randn(4, B + 1, H)))
    with pytest.raises(ValueError, match="hx\\[0\\]"):
        module(x, (torch.randn(4, H), torch.randn(4, H)))  # unbatched state for a batched input
    with pytest.raises(TypeError, match="hx"):
        module(x, torch.randn(4, B, H))
    with pytest.raises(ValueError, match="hx\\[0\\]"):
        module(x, (torch.randn(4, B, H, device="meta"), torch.randn(4, B, H)))


def test_bad_lengths(module):
    x = torch.randn(T, B, E)
    with pytest.raises(ValueError, match="lengths must have one entry per sequence"):
        module(x, lengths=[7, 1, 4])
    with pytest.raises(ValueError, match="lengths must lie in 1..7"):
        module(x, lengths=[7, 1, 4, 8, 2])
    with pytest.raises(ValueError, match="lengths must lie in 1..7"):
        module(x, lengths=[7, 0, 4, 7, 2])
    with pytest.raises(TypeError, match="lengths must be an integer tensor"):
        module(x, lengths=torch.tensor([7.0, 1, 4, 7, 2]))
    packed = pack_padded_sequence(x, torch.tensor(MIXED), enforce_sorted=False)
    with pytest.raises(ValueError, match="lengths must be None when input is a PackedSequence"):
        module(packed, lengths=MIXED)


def test_batch_first_lengths_count_the_batch():
    ours, ref = twins(batch_first=True)
    x = torch.randn(B, T, E)
    with pytest.raises(ValueError, match="lengths must have one entry per sequence"):
        ours(x, lengths=[T] * T)
    assert_same(ours, ref, x, lengths=MIXED)


def test_proj_size_rejected():
    with pytest.raises(ValueError, match="proj_size"):
        LSTM(E, H, proj_size=4)
    with pytest.raises(ValueError, match="proj_size"):
        LSTM(E, H, 1, True, False, 0.0, False, 4)


def test_input_on_another_device(module):
    with pytest.raises(ValueError, match="input is on meta"):
        module(torch.randn(T, B, E, device="meta"))


# ------------------------------------------- fastvae.nn.rnn: both backends


HELPER_CONFIGS = [
    dict(num_layers=1),
    dict(num_layers=2),
    dict(num_layers=1, bidirectional=True),
    dict(num_layers=2, bidirectional=True),
]


def backend_twins(num_layers=1, bidirectional=False):
    """(fused, reference) batch-first LSTMs of ``make_lstm`` with identical parameters."""
    fused = rnn.make_lstm("fused", E, H, num_layers, bidirectional)
    ref = rnn.make_lstm("reference", E, H, num_layers, bidirectional)
    assert type(ref) is torch.nn.LSTM
    ref.load_state_dict(fused.state_dict())
    return fused, ref


def valid_mask(lengths, steps=T):
    """``[B, T, 1]``: 1 at each sequence's real steps, 0 past its length."""
    lengths = torch.tensor(lengths) if lengths is not None else torch.full((B,), steps)
    return (torch.arange(steps).unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(2).float()


def helper_output_and_grads(helper, module, x, lengths, hx, upstream, mask=None):
    """``helper(module, x, lengths[, hx])`` forward and backward of ``upstream`` (masked past the lengths)."""
    module.zero_grad()
    x = x.detach().clone().requires_grad_()
    out = helper(module, x, lengths) if hx is None else helper(module, x, lengths, hx)
    if mask is not None:
        out = out * mask
    out.backward(upstream)
    grads = {"input": x.grad, **{name: p.grad for name, p in module.named_parameters()}}
    return out.detach(), grads


def assert_backends_agree(helper, cfg, lengths, hx=None, masked=False):
    fused, ref = backend_twins(**cfg)
    D = 2 if ref.bidirectional else 1
    x = torch.randn(B, T, E)
    probe = helper(fused, x, lengths) if hx is None else helper(fused, x, lengths, hx)
    upstream = torch.randn(probe.shape)
    mask = valid_mask(lengths) if masked else None
    out_f, grads_f = helper_output_and_grads(helper, fused, x, lengths, hx, upstream, mask)
    out_r, grads_r = helper_output_and_grads(helper, ref, x, lengths, hx, upstream, mask)
    assert out_f.shape == out_r.shape and out_f.shape[-1] == D * H
    torch.testing.assert_close(out_f, out_r, rtol=RTOL, atol=ATOL)
    assert grads_f.keys() == grads_r.keys()
    for name in grads_r:
        torch.testing.assert_close(grads_f[name], grads_r[name], rtol=GRAD_RTOL, atol=GRAD_ATOL, msg=name)


@pytest.mark.parametrize("lengths", [None, [T] * B, MIXED], ids=["none", "full", "mixed"])
@pytest.mark.parametrize("cfg", HELPER_CONFIGS, ids=config_id)
def test_last_hidden_is_the_same_on_both_backends(cfg, lengths):
    assert_backends_agree(rnn.last_hidden, cfg, lengths)


@pytest.mark.parametrize("cfg", HELPER_CONFIGS, ids=config_id)
def test_last_hidden_is_the_top_layer_of_the_packed_h_n(cfg):
    _, ref = backend_twins(**cfg)
    x = torch.randn(B, T, E)
    packed = pack_padded_sequence(x, torch.tensor(MIXED), batch_first=True, enforce_sorted=False)
    _, (h_n, _) = ref(packed)
    D = 2 if ref.bidirectional else 1
    want = torch.cat(list(h_n[-D:]), dim=1)  # [B, D*H], forward direction first
    torch.testing.assert_close(rnn.last_hidden(ref, x, MIXED), want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("with_hx", [False, True], ids=["no-hx", "hx"])
@pytest.mark.parametrize("lengths", [None, MIXED], ids=["none", "mixed"])
@pytest.mark.parametrize("cfg", HELPER_CONFIGS, ids=config_id)
def test_lstm_outputs_agree_up_to_each_length(cfg, lengths, with_hx):
    D = (2 if cfg.get("bidirectional") else 1) * cfg["num_layers"]
    hx = (torch.randn(D, B, H), torch.randn(D, B, H)) if with_hx else None
    assert_backends_agree(rnn.lstm_outputs, cfg, lengths, hx, masked=True)


@pytest.mark.parametrize("lengths", [None, [T] * B, MIXED], ids=["none", "full", "mixed"])
@pytest.mark.parametrize("cfg", HELPER_CONFIGS, ids=config_id)
def test_run_lstm_keeps_its_whole_contract_on_the_reference_backend(cfg, lengths):
    fused, ref = backend_twins(**cfg)
    x = torch.randn(B, T, E)
    y_f, (h_f, c_f) = rnn.run_lstm(fused, x, lengths)
    y_r, (h_r, c_r) = rnn.run_lstm(ref, x, lengths)
    for a, e in ((y_f, y_r), (h_f, h_r), (c_f, c_r)):  # every layer's h_n, c_n at the last real step
        torch.testing.assert_close(a, e, rtol=RTOL, atol=ATOL)
    assert not (y_r * (1 - valid_mask(lengths))).any()  # zero past each length


def lstm_call_inputs(module):
    seen = []
    module.register_forward_pre_hook(lambda _m, args: seen.append(type(args[0])))
    return seen


def test_unidirectional_reference_helpers_never_pack(monkeypatch):
    # nn.LSTM takes oneDNN's path only with a plain tensor; a PackedSequence goes to ATen's per-step loop
    def no_packing(*args, **kwargs):
        raise AssertionError("packed")

    monkeypatch.setattr(rnn, "pack_padded_sequence", no_packing)
    _, ref = backend_twins(num_layers=2)
    seen = lstm_call_inputs(ref)
    x = torch.randn(B, T, E)
    rnn.last_hidden(ref, x, MIXED)
    rnn.lstm_outputs(ref, x, MIXED, (torch.zeros(2, B, H), torch.zeros(2, B, H)))
    rnn.run_lstm(ref, x, [T] * B)  # every sequence full: nothing to pack
    assert seen == [torch.Tensor] * 3
    with pytest.raises(AssertionError, match="packed"):  # run_lstm's h_n, c_n of every layer need it
        rnn.run_lstm(ref, x, MIXED)


def test_bidirectional_reference_helpers_pack_unequal_lengths():
    _, ref = backend_twins(bidirectional=True)
    seen = lstm_call_inputs(ref)
    x = torch.randn(B, T, E)
    rnn.last_hidden(ref, x, MIXED)
    rnn.lstm_outputs(ref, x, MIXED)
    rnn.last_hidden(ref, x, [T] * B)
    assert seen == [PackedSequence, PackedSequence, torch.Tensor]


@pytest.mark.parametrize("backend", ["fused", "reference"])
@pytest.mark.parametrize("helper", [rnn.last_hidden, rnn.lstm_outputs, rnn.run_lstm], ids=lambda f: f.__name__)
def test_helpers_check_lengths(backend, helper):
    module = rnn.make_lstm(backend, E, H)
    x = torch.randn(B, T, E)
    for bad in ([7, 0, 4, 7, 2], [7, 1, 4, 8, 2]):
        with pytest.raises(ValueError, match="lengths must lie in 1..7"):
            helper(module, x, bad)
    with pytest.raises(ValueError, match="lengths must have one entry per sequence"):
        helper(module, x, [7, 1, 4])


# ------------------------------------------------------------- torch.compile


class TinyModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Linear(3, E)
        self.rnn = LSTM(E, 4, num_layers=2, bidirectional=True)
        self.head = torch.nn.Linear(8, 2)

    def forward(self, x, lengths):
        y, (h, c) = self.rnn(self.embed(x), lengths=lengths)
        return self.head(y).square().sum() + h.sum() + c.sum()


@pytest.mark.slow
def test_torch_compile_fullgraph():
    model = TinyModel()
    x, lengths = torch.randn(5, 3, 3), torch.tensor([5, 1, 3])
    eager = model(x, lengths)
    eager_grads = torch.autograd.grad(eager, list(model.parameters()))
    compiled = torch.compile(model, fullgraph=True)
    out = compiled(x, lengths)
    grads = torch.autograd.grad(out, list(model.parameters()))
    torch.testing.assert_close(out, eager, rtol=RTOL, atol=ATOL)
    for a, e in zip(grads, eager_grads):
        torch.testing.assert_close(a, e, rtol=GRAD_RTOL, atol=GRAD_ATOL)


# ------------------------------------------------------------ page faults

# Training at the Sentence-VAE size (B32 T40 E300 H256) in a process that runs
# nothing else: glibc trims its heap top after each call when the call's
# multi-MB blocks are freed, and the next call page-faults them in again.
# fastvae keeps its packed operands in a per-thread pool and its saved
# activations in one block per layer; before that, such a process took
# ~4,000 page faults per fwd+bwd (20% of its time), oneDNN's nn.LSTM none.
# At the DailyDialog size (B64 T20 E=H=32, 2 layers) the saved blocks are ~1 MB
# each, freed and trimmed the same way: ~670 faults per call (nn.LSTM ~870)
# until they came from the pool too.
_FAULTS_SCRIPT = r"""
import resource, sys, torch, fastvae
torch.set_num_threads(1)
T, B, E, H, L = (int(v) for v in sys.argv[1:])
lstm = fastvae.nn.LSTM(E, H, L)
x, grad_y = torch.randn(T, B, E, requires_grad=True), torch.randn(T, B, H)
def step():
    x.grad = None
    for p in lstm.parameters():
        p.grad = None
    y, _ = lstm(x)
    y.backward(grad_y)
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="page-fault counts of glibc's malloc (Linux)")
@pytest.mark.skipif(KERNELS.cpu is None, reason="fastvae._C is not built")
@pytest.mark.parametrize(
    "size, limit",
    [((40, 32, 300, 256, 1), 400), ((20, 64, 32, 32, 2), 60)],  # a call's blocks: ~16 MB / ~2.7 MB
    ids=["Sentence-VAE", "DailyDialog"],
)
def test_training_calls_do_not_page_fault_in_a_fresh_process(size, limit):
    out = subprocess.run([sys.executable, "-c", _FAULTS_SCRIPT, *map(str, size)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    faults = float(out.stdout.split()[-1])
    assert faults < limit, f"{faults:.0f} page faults per fwd+bwd"
