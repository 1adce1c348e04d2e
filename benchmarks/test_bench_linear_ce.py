"""The fused linear + cross-entropy against ``F.cross_entropy(F.linear(...))``.

Shape (float32, CPU, one thread): the decoder output layer of the
Sentence-VAE, N = 1280 tokens (B=32 x T=40), H = 256, V = 10,000.

Targets (reported in the tables, not asserted): forward+backward with
"mean" at >= 1x the reference's speed and <= 1/4 of its peak-memory growth.

Peak memory: each candidate runs once (forward+backward, after a warm-up call
at a tiny shape) in a fresh process, and the growth of its peak RSS is
reported (``_memory.py``); skipped with ``--benchmark-disable``, where each
case only runs once and is checked against the reference.
"""

import torch
import torch.nn.functional as F

from _memory import peak_rss_growth_kb
from fastvae.ops import linear_cross_entropy

SHAPE = dict(N=1280, H=256, V=10000)
IGNORED = 0.1  # fraction of padding targets (ignore_index)
BASELINE = "F.cross_entropy(F.linear)"
FWD_BWD, FWD, NONE_FWD_BWD = "linear CE fwd+bwd (mean)", "linear CE fwd (no grad)", "linear CE fwd+bwd (none)"
SPEED_TARGET = 1.0
MEMORY_TARGET = 0.25  # fused peak growth / reference peak growth
MEMORY_TABLE = "peak memory growth of one call (fresh process per candidate, MB)"


def shape_label(spec):
    return f"N{spec['N']} H{spec['H']} V{spec['V']}"


def make_inputs(N, H, V, seed=0):
    """hidden [N, H], weight [V, H], bias [V] (leaves needing grad), target [N] with padding."""
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N, H, generator=gen).requires_grad_()
    weight = (torch.randn(V, H, generator=gen) / H**0.5).requires_grad_()
    bias = torch.zeros(V).requires_grad_()
    target = torch.randint(0, V, (N,), generator=gen)
    target[torch.rand(N, generator=gen) < IGNORED] = -100
    return hidden, weight, bias, target


def reference(hidden, weight, bias, target, reduction="mean"):
    return F.cross_entropy(F.linear(hidden, weight, bias), target, ignore_index=-100, reduction=reduction)


def fused(hidden, weight, bias, target, reduction="mean"):
    return linear_cross_entropy(hidden, weight, bias, target, ignore_index=-100, reduction=reduction)


def forward_backward_fn(loss_fn, inputs, reduction="mean", grad_out=None):
    """One training step's loss work; returns the loss and the three gradients."""
    hidden, weight, bias, target = inputs
    params = (hidden, weight, bias)

    def fn():
        for p in params:
            p.grad = None
        loss = loss_fn(hidden, weight, bias, target, reduction)
        loss.backward(grad_out)
        return (loss.detach(), *(p.grad for p in params))

    return fn


def forward_fn(loss_fn, inputs):
    def fn():
        with torch.no_grad():
            return (loss_fn(*inputs),)

    return fn


def test_fwd_bwd_mean(ratio_bench, timing_enabled, extra_table):
    inputs = make_inputs(**SHAPE)
    fast, base = forward_backward_fn(fused, inputs), forward_backward_fn(reference, inputs)
    ratio_bench(FWD_BWD, shape_label(SHAPE), BASELINE, fast, base, SPEED_TARGET)
    if timing_enabled:
        record_peak_memory(extra_table, FWD_BWD, SHAPE)


def test_fwd_no_grad(ratio_bench):
    inputs = make_inputs(**SHAPE)
    ratio_bench(FWD, shape_label(SHAPE), BASELINE, forward_fn(fused, inputs), forward_fn(reference, inputs))


def test_fwd_bwd_none(ratio_bench):
    """Per-token NLL with a per-row upstream gradient: the backward recomputes the logits."""
    inputs = make_inputs(**SHAPE)
    grad_out = torch.rand(SHAPE["N"], generator=torch.Generator().manual_seed(1))
    fast = forward_backward_fn(fused, inputs, "none", grad_out)
    base = forward_backward_fn(reference, inputs, "none", grad_out)
    ratio_bench(NONE_FWD_BWD, shape_label(SHAPE), BASELINE, fast, base)


# ------------------------------------------------------------- peak memory

_CHILD_SETUP = """
import torch
import torch.nn.functional as F
from fastvae.ops import linear_cross_entropy
torch.set_num_threads(1)

def make(N, H, V):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(N, H, generator=g).requires_grad_()
    weight = (torch.randn(V, H, generator=g) / H**0.5).requires_grad_()
    bias = torch.zeros(V).requires_grad_()
    target = torch.randint(0, V, (N,), generator=g)
    target[torch.rand(N, generator=g) < {ignored}] = -100
    return hidden, weight, bias, target

def step(inputs):
    {call}.backward()

inputs = make({N}, {H}, {V})
"""
_CALLS = {
    "fastvae": "linear_cross_entropy(*inputs)",
    "baseline": "F.cross_entropy(F.linear(*inputs[:3]), inputs[3])",
}


def peak_mb(candidate, spec):
    setup = _CHILD_SETUP.format(call=_CALLS[candidate], ignored=IGNORED, **spec)
    return peak_rss_growth_kb(setup, warmup="step(make(8, 16, 32))", run="step(inputs)") / 1024


def record_peak_memory(extra_table, case, spec):
    fast_mb, base_mb = peak_mb("fastvae", spec), peak_mb("baseline", spec)
    ratio = fast_mb / base_mb if base_mb > 0 else float("nan")
    verdict = "met" if ratio <= MEMORY_TARGET else "NOT met"
    extra_table(
        MEMORY_TABLE,
        {
            "case": case,
            "shape": shape_label(spec),
            "baseline": BASELINE,
            "baseline MB": f"{base_mb:.1f}",
            "fastvae MB": f"{fast_mb:.1f}",
            "fastvae / baseline": f"{ratio:.3f}",
            "target": f"<= {MEMORY_TARGET:g} ({verdict})",
        },
    )
