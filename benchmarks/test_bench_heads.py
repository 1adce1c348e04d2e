"""The greedy decoding head: ``fastvae.ops.linear_argmax`` against ``F.linear(...).max(-1)``.

Shapes (float32, CPU, one thread): one step of generation at the DailyDialog
decoding batch, 64 contexts x 10 samples = 640 rows, onto V = 10,000 words,
H = 32 (the SLCVAE at the paper's size) and H = 256 (a Sentence-VAE-size
decoder). The baseline forms the [640, V] scores and reads them back; the
fused head keeps each score in a register tile.

Target (reported, not asserted): >= 2x. Both sizes also go to the FMA limit
table (``_limits.py``): 2 R H V flops against this core's FMA peak, and the
one product [R, H] @ [H, V] as a bare ``torch.mm``.
"""

import pytest
import torch
import torch.nn.functional as F

from _limits import record_fma_limit
from fastvae.ops import linear_argmax

SHAPES = [dict(R=640, H=32, V=10000), dict(R=640, H=256, V=10000)]
TARGET = 2.0


def make_inputs(R, H, V, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(R, H, generator=g), torch.randn(V, H, generator=g) / H**0.5, torch.randn(V, generator=g) * 0.1


@pytest.mark.parametrize("spec", SHAPES, ids=[f"R{s['R']}-H{s['H']}-V{s['V']}" for s in SHAPES])
def test_greedy_head(ratio_bench, timing_enabled, extra_table, spec):
    hidden, weight, bias = make_inputs(**spec)

    def fast():
        return linear_argmax(hidden, weight, bias)

    def base():
        value, index = F.linear(hidden, weight, bias).max(dim=-1)
        return index, value

    def check(fast_out, base_out, what):
        (fast_index, fast_value), (base_index, base_value) = fast_out, base_out
        assert torch.equal(fast_index, base_index), f"{what}: different words picked"
        assert torch.allclose(fast_value, base_value, rtol=1e-4, atol=1e-5), f"{what}: different scores"

    case, baseline = "greedy head: argmax of hidden @ weight^T + bias", "F.linear(...).max(-1)"
    shape = f"R{spec['R']} H{spec['H']} V{spec['V']}"
    ratio_bench(case, shape, baseline, fast, base, TARGET, check=check)
    if timing_enabled:
        flops = 2 * spec["R"] * spec["H"] * spec["V"]
        products = [(spec["R"], spec["H"], spec["V"], 1)]  # hidden @ weight^T
        record_fma_limit(extra_table, case, shape, baseline, flops, fast, base, TARGET, products)
